//! Bindings for stain normalisation (`mclstexp_core::stain`).

use mclstexp_core::stain::{self, MacenkoParams, MacenkoTarget, ReinhardParams, ReinhardTarget};
use numpy::{IntoPyArray, PyArray1, PyArray4, PyReadonlyArray2, PyReadonlyArray4};
use pyo3::prelude::*;

use crate::convert::{rgb_batch, rgb_pixels, to_numpy};
use crate::gil::detached;

type MacenkoOut<'py> = (
    Bound<'py, PyArray4<u8>>,
    Bound<'py, PyArray1<bool>>,
    Option<Bound<'py, PyArray4<f32>>>,
);

type ReinhardOut<'py> = (Bound<'py, PyArray4<u8>>, Bound<'py, PyArray1<bool>>);

/// Fits a Macenko target on RGB pixels `[n, 3]`; returns `(stain_matrix 3x2, max_conc 2)`.
#[pyfunction]
#[pyo3(signature = (image, *, io=240.0, alpha=1.0, beta=0.15, min_tissue=0.01))]
pub fn stain_macenko_fit(
    image: PyReadonlyArray2<'_, u8>,
    io: f64,
    alpha: f64,
    beta: f64,
    min_tissue: f64,
) -> PyResult<([[f64; 2]; 3], [f64; 2])> {
    let pixels = rgb_pixels("image", &image)?;
    let params = MacenkoParams {
        io,
        alpha,
        beta,
        min_tissue,
    };
    let t = detached(image.py(), || stain::macenko_fit(pixels, &params))?;
    Ok((t.stain_matrix, t.max_conc))
}

/// Normalises uint8 patches `[N, H, W, 3]` to a Macenko target; GIL released.
/// Returns `(patches, skipped [N] bool, concentrations [N, H, W, 2] float32 or None)`.
///
/// The parameters are the Python signature's (keyword arguments at every call site), hence the
/// `allow`.
#[pyfunction]
#[pyo3(signature = (patches, stain_matrix, max_conc, *, io=240.0, alpha=1.0, beta=0.15,
                    min_tissue=0.01, concentrations=false, n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn stain_macenko_transform<'py>(
    patches: PyReadonlyArray4<'py, u8>,
    stain_matrix: [[f64; 2]; 3],
    max_conc: [f64; 2],
    io: f64,
    alpha: f64,
    beta: f64,
    min_tissue: f64,
    concentrations: bool,
    n_threads: Option<usize>,
) -> PyResult<MacenkoOut<'py>> {
    let py = patches.py();
    let batch = rgb_batch("patches", &patches)?;
    let params = MacenkoParams {
        io,
        alpha,
        beta,
        min_tissue,
    };
    let target = MacenkoTarget {
        stain_matrix,
        max_conc,
    };
    let done = detached(py, || {
        stain::macenko_transform(batch, &target, &params, concentrations, n_threads)
    })?;
    let s = batch.shape();
    let conc = match done.concentrations {
        Some(c) => Some(to_numpy(py, [s.n, s.height, s.width, 2], c)?),
        None => None,
    };
    Ok((
        to_numpy(py, [s.n, s.height, s.width, 3], done.patches)?,
        done.skipped.into_pyarray(py),
        conc,
    ))
}

/// Fits a Reinhard target on RGB pixels `[n, 3]`; returns `(lab_mean 3, lab_std 3)`.
#[pyfunction]
#[pyo3(signature = (image, *, io=240.0, beta=0.15, min_tissue=0.01))]
pub fn stain_reinhard_fit(
    image: PyReadonlyArray2<'_, u8>,
    io: f64,
    beta: f64,
    min_tissue: f64,
) -> PyResult<([f64; 3], [f64; 3])> {
    let pixels = rgb_pixels("image", &image)?;
    let params = ReinhardParams {
        io,
        beta,
        min_tissue,
    };
    let t = detached(image.py(), || stain::reinhard_fit(pixels, &params))?;
    Ok((t.mean, t.std))
}

/// Normalises uint8 patches `[N, H, W, 3]` to a Reinhard target; GIL released.
/// Returns `(patches, skipped [N] bool)`.
#[pyfunction]
#[pyo3(signature = (patches, mean, std, *, io=240.0, beta=0.15, min_tissue=0.01, n_threads=None))]
pub fn stain_reinhard_transform<'py>(
    patches: PyReadonlyArray4<'py, u8>,
    mean: [f64; 3],
    std: [f64; 3],
    io: f64,
    beta: f64,
    min_tissue: f64,
    n_threads: Option<usize>,
) -> PyResult<ReinhardOut<'py>> {
    let py = patches.py();
    let batch = rgb_batch("patches", &patches)?;
    let params = ReinhardParams {
        io,
        beta,
        min_tissue,
    };
    let target = ReinhardTarget { mean, std };
    let done = detached(py, || {
        stain::reinhard_transform(batch, &target, &params, n_threads)
    })?;
    let s = batch.shape();
    Ok((
        to_numpy(py, [s.n, s.height, s.width, 3], done.patches)?,
        done.skipped.into_pyarray(py),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stain_macenko_fit, m)?)?;
    m.add_function(wrap_pyfunction!(stain_macenko_transform, m)?)?;
    m.add_function(wrap_pyfunction!(stain_reinhard_fit, m)?)?;
    m.add_function(wrap_pyfunction!(stain_reinhard_transform, m)?)?;
    Ok(())
}
