//! Bindings for tensor layout conversion (`mclstexp_core::normalize`).

use mclstexp_core::normalize::{self, ChannelNorm};
use mclstexp_core::view::{Batch, BatchShape};
use numpy::ndarray::Array4;
use numpy::{IntoPyArray, PyArray4, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::gil::detached;

/// A C-contiguous view of a numpy array, or `ValueError` naming the argument.
pub fn contiguous<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    arg: &str,
    array: &'a numpy::PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{arg}: must be a C-contiguous array")))
}

/// Wraps an owned buffer as a 4-d numpy array of `shape`.
pub fn to_array4<'py, T: numpy::Element>(
    py: Python<'py>,
    shape: [usize; 4],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyArray4<T>>> {
    Array4::from_shape_vec(shape, data)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))
}

/// uint8 `[N, H, W, 3]` -> float32 `[N, 3, H, W]`, `(x / 255 - mean) / std`; GIL released.
#[pyfunction]
#[pyo3(signature = (patches, mean, std, *, n_threads=None))]
pub fn normalize_to_tensor_layout<'py>(
    py: Python<'py>,
    patches: PyReadonlyArray4<'py, u8>,
    mean: [f64; 3],
    std: [f64; 3],
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let shape = patches.shape();
    let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3]);
    if c != 3 {
        return Err(PyValueError::new_err(format!(
            "patches: expected shape (N, H, W, 3), got last axis {c}"
        )));
    }
    let src = contiguous("patches", &patches)?;
    let shape = BatchShape {
        n,
        height: h,
        width: w,
    };
    let norm = ChannelNorm { mean, std };
    let out = detached(py, || {
        normalize::to_tensor_layout(Batch::new("patches", src, shape)?, &norm, n_threads)
    })?;
    to_array4(py, [n, 3, h, w], out)
}

/// float32 `[N, 3, H, W]` -> uint8 `[N, H, W, 3]` (inverse, rounded and clipped); GIL released.
#[pyfunction]
#[pyo3(signature = (tensors, mean, std, *, n_threads=None))]
pub fn normalize_from_tensor_layout<'py>(
    py: Python<'py>,
    tensors: PyReadonlyArray4<'py, f32>,
    mean: [f64; 3],
    std: [f64; 3],
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let shape = tensors.shape();
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if c != 3 {
        return Err(PyValueError::new_err(format!(
            "tensors: expected shape (N, 3, H, W), got axis 1 of length {c}"
        )));
    }
    let src = contiguous("tensors", &tensors)?;
    let shape = BatchShape {
        n,
        height: h,
        width: w,
    };
    let norm = ChannelNorm { mean, std };
    let out = detached(py, || {
        normalize::from_tensor_layout(Batch::new("tensors", src, shape)?, &norm, n_threads)
    })?;
    to_array4(py, [n, h, w, 3], out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(normalize_to_tensor_layout, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_from_tensor_layout, m)?)?;
    Ok(())
}
