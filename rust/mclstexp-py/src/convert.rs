//! The one place where numpy arrays become core views, and results become numpy arrays.
//!
//! Inputs are borrowed, never copied, when they are C-contiguous; the functions that have always
//! accepted any layout (`tissue_mask`, `grid_centers`, `resize_rgb`, `read_patches`'s centres)
//! copy any other array once, in C order ([`c_order`]). "C-contiguous" is numpy's C flag: a
//! Fortran-ordered array is contiguous too, but its values are not in row-major order (numpy's
//! `as_slice` accepts it; reading it as row-major silently scrambled it). Every error is a
//! `ValueError` that names the argument and says what was expected, e.g. `patches: expected
//! shape (N, H, W, 3), got (2, 8, 8, 4)`. Wrong dtypes are refused by PyO3's extraction
//! (`TypeError`).

use std::borrow::Cow;

use mclstexp_core::view::{Batch, BatchShape, Matrix, RgbBatch, Size};
use numpy::ndarray::{Array, Dimension, ShapeBuilder};
use numpy::{
    Element, IntoPyArray, PyArray, PyArrayMethods, PyReadonlyArray, PyReadonlyArray1,
    PyReadonlyArray2, PyReadonlyArray3, PyReadonlyArray4, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::gil::detached;

/// `ValueError("{arg}: {msg}")`.
pub fn invalid(arg: &str, msg: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{arg}: {msg}"))
}

/// `ValueError` for an array of the wrong shape: `"{arg}: expected shape {want}, got {shape}"`.
fn bad_shape(arg: &str, want: &str, shape: &[usize]) -> PyErr {
    invalid(arg, format!("expected shape {want}, got {}", tuple(shape)))
}

/// A shape written as Python writes it: `(2, 8, 8, 4)`, `(5,)`.
fn tuple(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let items: Vec<String> = shape.iter().map(ToString::to_string).collect();
            format!("({})", items.join(", "))
        }
    }
}

/// The data of a C-contiguous (row-major) array, borrowed, or `ValueError` naming the argument.
pub fn contiguous<'a, T: Element, D: Dimension>(
    arg: &str,
    array: &'a PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    let refuse = || {
        invalid(
            arg,
            "must be a C-contiguous array (use numpy.ascontiguousarray)",
        )
    };
    if !array.is_c_contiguous() {
        return Err(refuse());
    }
    array.as_slice().map_err(|_| refuse())
}

/// The data of an array in C (row-major) order: borrowed when it is C-contiguous, else copied
/// once.
pub fn c_order<'a, T: Element + Clone, D: Dimension>(
    array: &'a PyReadonlyArray<'_, T, D>,
) -> Cow<'a, [T]> {
    match array.as_slice() {
        Ok(data) if array.is_c_contiguous() => Cow::Borrowed(data),
        _ => Cow::Owned(array.as_array().iter().cloned().collect()),
    }
}

/// A C-contiguous uint8 `(N, H, W, 3)` array as an RGB batch.
pub fn rgb_batch<'a>(
    arg: &'static str,
    array: &'a PyReadonlyArray4<'_, u8>,
) -> PyResult<RgbBatch<'a>> {
    let s = array.shape();
    if s[3] != 3 {
        return Err(bad_shape(arg, "(N, H, W, 3)", s));
    }
    let shape = BatchShape {
        n: s[0],
        height: s[1],
        width: s[2],
    };
    batch(arg, contiguous(arg, array)?, shape)
}

/// A C-contiguous float32 `(N, 3, H, W)` array as a batch of tensors.
pub fn tensor_batch<'a>(
    arg: &'static str,
    array: &'a PyReadonlyArray4<'_, f32>,
) -> PyResult<Batch<'a, f32>> {
    let s = array.shape();
    if s[1] != 3 {
        return Err(bad_shape(arg, "(N, 3, H, W)", s));
    }
    let shape = BatchShape {
        n: s[0],
        height: s[2],
        width: s[3],
    };
    batch(arg, contiguous(arg, array)?, shape)
}

fn batch<'a, T>(arg: &'static str, data: &'a [T], shape: BatchShape) -> PyResult<Batch<'a, T>> {
    // The shape comes from the array itself, so only an overflow can fail here.
    Batch::new(arg, data, shape).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A C-contiguous uint8 `(n, 3)` array of RGB pixels.
pub fn rgb_pixels<'a>(arg: &str, array: &'a PyReadonlyArray2<'_, u8>) -> PyResult<&'a [u8]> {
    if array.shape()[1] != 3 {
        return Err(bad_shape(arg, "(n, 3)", array.shape()));
    }
    contiguous(arg, array)
}

/// A uint8 `(h, w, 3)` image (any layout) as its bytes in C order and its size.
pub fn rgb_image<'a>(
    arg: &str,
    array: &'a PyReadonlyArray3<'_, u8>,
) -> PyResult<(Cow<'a, [u8]>, Size)> {
    let s = array.shape();
    if s[2] != 3 {
        return Err(bad_shape(arg, "(h, w, 3)", s));
    }
    let size = Size {
        width: s[1],
        height: s[0],
    };
    Ok((c_order(array), size))
}

/// A bool `(h, w)` mask (any layout) as its values in C order and its size.
pub fn mask<'a>(array: &'a PyReadonlyArray2<'_, bool>) -> (Cow<'a, [bool]>, Size) {
    let s = array.shape();
    let size = Size {
        width: s[1],
        height: s[0],
    };
    (c_order(array), size)
}

/// A float64 `(n, 2)` array (any layout) of `(x, y)` points.
pub fn points<'a>(
    arg: &str,
    array: &'a PyReadonlyArray2<'_, f64>,
) -> PyResult<Cow<'a, [[f64; 2]]>> {
    if array.shape()[1] != 2 {
        return Err(bad_shape(arg, "(n, 2)", array.shape()));
    }
    Ok(match c_order(array) {
        Cow::Borrowed(flat) => Cow::Borrowed(flat.as_chunks::<2>().0),
        Cow::Owned(flat) => Cow::Owned(flat.as_chunks::<2>().0.to_vec()),
    })
}

/// A C-contiguous float32 `(rows, cols)` array as a matrix.
pub fn matrix<'a>(arg: &'static str, array: &'a PyReadonlyArray2<'_, f32>) -> PyResult<Matrix<'a>> {
    let (rows, cols) = (array.shape()[0], array.shape()[1]);
    let data = contiguous(arg, array)?;
    Matrix::new(arg, data, rows, cols).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Non-negative int64 indices (a C-contiguous 1-d array) as `usize`.
pub fn indices(
    arg: &str,
    values: Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<Option<Vec<usize>>> {
    let Some(values) = values else {
        return Ok(None);
    };
    contiguous(arg, &values)?
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| invalid(arg, format!("must be >= 0, got {v}"))))
        .collect::<PyResult<Vec<usize>>>()
        .map(Some)
}

/// Checks the shape of an output array given by the caller: `want[i]` is the required length
/// of axis `i` (`None`: any); `pattern` is how the error writes it, e.g. `(N, 224, 224, 3)`.
pub fn check_out_shape<T: Element, D: Dimension>(
    arg: &str,
    array: &Bound<'_, PyArray<T, D>>,
    want: &[Option<usize>],
    pattern: &str,
) -> PyResult<()> {
    let s = array.shape();
    let fits = s.len() == want.len() && s.iter().zip(want).all(|(&n, w)| w.is_none_or(|w| n == w));
    if fits {
        Ok(())
    } else {
        Err(bad_shape(arg, pattern, s))
    }
}

/// Runs `work` on the C-contiguous buffer of the writeable output `array` with the GIL released;
/// errors name `arg`.
pub fn fill<T: Element + Send, D: Dimension, R: Send>(
    arg: &str,
    array: &Bound<'_, PyArray<T, D>>,
    work: impl FnOnce(&mut [T]) -> mclstexp_core::Result<R> + Send,
) -> PyResult<R> {
    let not_c = || invalid(arg, "must be a C-contiguous array");
    if !array.is_c_contiguous() {
        return Err(not_c());
    }
    let mut rw = array
        .try_readwrite()
        .map_err(|_| invalid(arg, "must be a writeable array not borrowed elsewhere"))?;
    let dst = rw.as_slice_mut().map_err(|_| not_c())?;
    detached(array.py(), || work(dst))
}

/// An owned buffer as a numpy array of `shape` (which it fills exactly).
pub fn to_numpy<'py, T: Element, D: Dimension>(
    py: Python<'py>,
    shape: impl ShapeBuilder<Dim = D>,
    data: Vec<T>,
) -> PyResult<Bound<'py, PyArray<T, D>>> {
    Array::from_shape_vec(shape, data)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))
}
