//! Bindings for the fused training augmentation (`mclstexp_core::augment`).

use mclstexp_core::augment::{self, Output, Params};
use numpy::{PyArray4, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::gil::detached;
use crate::normalize::{contiguous, to_array4};

/// `(N, H, W)` of a uint8 `[N, H, W, 3]` array, or `ValueError` naming `patches`.
fn patch_dims(patches: &PyReadonlyArray4<'_, u8>) -> PyResult<(usize, usize, usize)> {
    let shape = patches.shape();
    if shape[3] != 3 {
        return Err(PyValueError::new_err(format!(
            "patches: expected shape (N, H, W, 3), got last axis {}",
            shape[3]
        )));
    }
    Ok((shape[0], shape[1], shape[2]))
}

/// Fused colour jitter + flip + rotation of uint8 `[N, H, W, 3]` patches -> uint8
/// `[N, H, W, 3]`, written into `out` when given; GIL released.
#[pyfunction]
#[pyo3(signature = (
    patches, brightness, contrast, saturation, flip, angle, *, out=None, n_threads=None
))]
#[allow(clippy::too_many_arguments)]
pub fn augment_patches_uint8<'py>(
    py: Python<'py>,
    patches: PyReadonlyArray4<'py, u8>,
    brightness: PyReadonlyArray1<'py, f64>,
    contrast: PyReadonlyArray1<'py, f64>,
    saturation: PyReadonlyArray1<'py, f64>,
    flip: PyReadonlyArray1<'py, bool>,
    angle: PyReadonlyArray1<'py, f64>,
    out: Option<Bound<'py, PyArray4<u8>>>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let (n, h, w) = patch_dims(&patches)?;
    let src = contiguous("patches", &patches)?;
    let params = Params {
        brightness: contiguous("brightness", &brightness)?,
        contrast: contiguous("contrast", &contrast)?,
        saturation: contiguous("saturation", &saturation)?,
        flip: contiguous("flip", &flip)?,
        angle: contiguous("angle", &angle)?,
    };
    match out {
        None => {
            let mut buf = vec![0u8; src.len()];
            detached(py, || {
                augment::augment(src, n, h, w, &params, Output::Uint8(&mut buf), n_threads)
            })?;
            to_array4(py, [n, h, w, 3], buf)
        }
        Some(array) => {
            check_out_shape(&array, [n, h, w, 3])?;
            {
                let mut rw = writable(&array)?;
                let dst = rw
                    .as_slice_mut()
                    .map_err(|_| PyValueError::new_err("out: must be a C-contiguous array"))?;
                detached(py, || {
                    augment::augment(src, n, h, w, &params, Output::Uint8(dst), n_threads)
                })?;
            }
            Ok(array)
        }
    }
}

fn check_out_shape<T: numpy::Element>(
    array: &Bound<'_, PyArray4<T>>,
    want: [usize; 4],
) -> PyResult<()> {
    if array.shape() != want {
        return Err(PyValueError::new_err(format!(
            "out: expected shape {want:?}, got {:?}",
            array.shape()
        )));
    }
    Ok(())
}

fn writable<'py, T: numpy::Element>(
    array: &Bound<'py, PyArray4<T>>,
) -> PyResult<numpy::PyReadwriteArray4<'py, T>> {
    array
        .try_readwrite()
        .map_err(|_| PyValueError::new_err("out: must be a writeable array not borrowed elsewhere"))
}

/// Fused colour jitter + flip + rotation + normalisation of uint8 `[N, H, W, 3]` patches ->
/// float32 `[N, 3, H, W]` `(v / 255 - mean) / std`, written into `out` when given; GIL released.
#[pyfunction]
#[pyo3(signature = (
    patches, brightness, contrast, saturation, flip, angle, mean, std, *, out=None, n_threads=None
))]
#[allow(clippy::too_many_arguments)]
pub fn augment_patches_tensor<'py>(
    py: Python<'py>,
    patches: PyReadonlyArray4<'py, u8>,
    brightness: PyReadonlyArray1<'py, f64>,
    contrast: PyReadonlyArray1<'py, f64>,
    saturation: PyReadonlyArray1<'py, f64>,
    flip: PyReadonlyArray1<'py, bool>,
    angle: PyReadonlyArray1<'py, f64>,
    mean: [f64; 3],
    std: [f64; 3],
    out: Option<Bound<'py, PyArray4<f32>>>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let (n, h, w) = patch_dims(&patches)?;
    let src = contiguous("patches", &patches)?;
    let params = Params {
        brightness: contiguous("brightness", &brightness)?,
        contrast: contiguous("contrast", &contrast)?,
        saturation: contiguous("saturation", &saturation)?,
        flip: contiguous("flip", &flip)?,
        angle: contiguous("angle", &angle)?,
    };
    match out {
        None => {
            let mut buf = vec![0f32; src.len()];
            detached(py, || {
                let o = Output::Tensor {
                    out: &mut buf,
                    mean,
                    std,
                };
                augment::augment(src, n, h, w, &params, o, n_threads)
            })?;
            to_array4(py, [n, 3, h, w], buf)
        }
        Some(array) => {
            check_out_shape(&array, [n, 3, h, w])?;
            {
                let mut rw = writable(&array)?;
                let dst = rw
                    .as_slice_mut()
                    .map_err(|_| PyValueError::new_err("out: must be a C-contiguous array"))?;
                detached(py, || {
                    let o = Output::Tensor {
                        out: dst,
                        mean,
                        std,
                    };
                    augment::augment(src, n, h, w, &params, o, n_threads)
                })?;
            }
            Ok(array)
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(augment_patches_uint8, m)?)?;
    m.add_function(wrap_pyfunction!(augment_patches_tensor, m)?)?;
    Ok(())
}
