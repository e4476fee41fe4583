//! Bindings for tensor layout conversion (`mclstexp_core::normalize`).

use mclstexp_core::normalize::{self, ChannelNorm};
use numpy::{PyArray4, PyReadonlyArray4};
use pyo3::prelude::*;

use crate::convert::{rgb_batch, tensor_batch, to_numpy};
use crate::gil::detached;

/// uint8 `[N, H, W, 3]` -> float32 `[N, 3, H, W]`, `(x / 255 - mean) / std`; GIL released.
#[pyfunction]
#[pyo3(signature = (patches, mean, std, *, n_threads=None))]
pub fn normalize_to_tensor_layout<'py>(
    patches: PyReadonlyArray4<'py, u8>,
    mean: [f64; 3],
    std: [f64; 3],
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let py = patches.py();
    let batch = rgb_batch("patches", &patches)?;
    let norm = ChannelNorm { mean, std };
    let out = detached(py, || normalize::to_tensor_layout(batch, &norm, n_threads))?;
    let s = batch.shape();
    to_numpy(py, [s.n, 3, s.height, s.width], out)
}

/// float32 `[N, 3, H, W]` -> uint8 `[N, H, W, 3]` (inverse, rounded and clipped); GIL released.
#[pyfunction]
#[pyo3(signature = (tensors, mean, std, *, n_threads=None))]
pub fn normalize_from_tensor_layout<'py>(
    tensors: PyReadonlyArray4<'py, f32>,
    mean: [f64; 3],
    std: [f64; 3],
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let py = tensors.py();
    let batch = tensor_batch("tensors", &tensors)?;
    let norm = ChannelNorm { mean, std };
    let out = detached(py, || {
        normalize::from_tensor_layout(batch, &norm, n_threads)
    })?;
    let s = batch.shape();
    to_numpy(py, [s.n, s.height, s.width, 3], out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(normalize_to_tensor_layout, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_from_tensor_layout, m)?)?;
    Ok(())
}
