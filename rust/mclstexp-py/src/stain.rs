//! Bindings for stain normalisation (`mclstexp_core::stain`).

use mclstexp_core::stain::{self, MacenkoParams, MacenkoTarget, ReinhardParams, ReinhardTarget};
use mclstexp_core::view::{BatchShape, RgbBatch};
use numpy::ndarray::Array1;
use numpy::{
    IntoPyArray, PyArray1, PyArray4, PyReadonlyArray2, PyReadonlyArray4, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::gil::detached;
use crate::normalize::{contiguous, to_array4};

type MacenkoOut<'py> = (
    Bound<'py, PyArray4<u8>>,
    Bound<'py, PyArray1<bool>>,
    Option<Bound<'py, PyArray4<f32>>>,
);

type ReinhardOut<'py> = (Bound<'py, PyArray4<u8>>, Bound<'py, PyArray1<bool>>);

fn pixels_arg<'a>(image: &'a PyReadonlyArray2<'_, u8>) -> PyResult<&'a [u8]> {
    if image.shape()[1] != 3 {
        return Err(PyValueError::new_err(format!(
            "image: expected RGB pixels of shape (n, 3), got {:?}",
            image.shape()
        )));
    }
    contiguous("image", image)
}

fn patches_shape(patches: &PyReadonlyArray4<'_, u8>) -> PyResult<(usize, usize, usize)> {
    let s = patches.shape();
    if s[3] != 3 {
        return Err(PyValueError::new_err(format!(
            "patches: expected shape (N, H, W, 3), got last axis {}",
            s[3]
        )));
    }
    Ok((s[0], s[1], s[2]))
}

/// Fits a Macenko target on RGB pixels `[n, 3]`; returns `(stain_matrix 3x2, max_conc 2)`.
#[pyfunction]
#[pyo3(signature = (image, *, io=240.0, alpha=1.0, beta=0.15, min_tissue=0.01))]
pub fn stain_macenko_fit(
    py: Python<'_>,
    image: PyReadonlyArray2<'_, u8>,
    io: f64,
    alpha: f64,
    beta: f64,
    min_tissue: f64,
) -> PyResult<([[f64; 2]; 3], [f64; 2])> {
    let pixels = pixels_arg(&image)?;
    let params = MacenkoParams {
        io,
        alpha,
        beta,
        min_tissue,
    };
    let t = detached(py, || stain::macenko_fit(pixels, &params))?;
    Ok((t.stain_matrix, t.max_conc))
}

/// Normalises uint8 patches `[N, H, W, 3]` to a Macenko target; GIL released.
/// Returns `(patches, skipped [N] bool, concentrations [N, H, W, 2] float32 or None)`.
#[pyfunction]
#[pyo3(signature = (patches, stain_matrix, max_conc, *, io=240.0, alpha=1.0, beta=0.15,
                    min_tissue=0.01, concentrations=false, n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn stain_macenko_transform<'py>(
    py: Python<'py>,
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
    let (n, h, w) = patches_shape(&patches)?;
    let src = contiguous("patches", &patches)?;
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
    let shape = BatchShape {
        n,
        height: h,
        width: w,
    };
    let done = detached(py, || {
        let batch = RgbBatch::new("patches", src, shape)?;
        stain::macenko_transform(batch, &target, &params, concentrations, n_threads)
    })?;
    let (out, skipped, conc) = (done.patches, done.skipped, done.concentrations);
    let conc = match conc {
        Some(c) => Some(to_array4(py, [n, h, w, 2], c)?),
        None => None,
    };
    Ok((
        to_array4(py, [n, h, w, 3], out)?,
        Array1::from_vec(skipped).into_pyarray(py),
        conc,
    ))
}

/// Fits a Reinhard target on RGB pixels `[n, 3]`; returns `(lab_mean 3, lab_std 3)`.
#[pyfunction]
#[pyo3(signature = (image, *, io=240.0, beta=0.15, min_tissue=0.01))]
pub fn stain_reinhard_fit(
    py: Python<'_>,
    image: PyReadonlyArray2<'_, u8>,
    io: f64,
    beta: f64,
    min_tissue: f64,
) -> PyResult<([f64; 3], [f64; 3])> {
    let pixels = pixels_arg(&image)?;
    let params = ReinhardParams {
        io,
        beta,
        min_tissue,
    };
    let t = detached(py, || stain::reinhard_fit(pixels, &params))?;
    Ok((t.mean, t.std))
}

/// Normalises uint8 patches `[N, H, W, 3]` to a Reinhard target; GIL released.
/// Returns `(patches, skipped [N] bool)`.
#[pyfunction]
#[pyo3(signature = (patches, mean, std, *, io=240.0, beta=0.15, min_tissue=0.01, n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn stain_reinhard_transform<'py>(
    py: Python<'py>,
    patches: PyReadonlyArray4<'py, u8>,
    mean: [f64; 3],
    std: [f64; 3],
    io: f64,
    beta: f64,
    min_tissue: f64,
    n_threads: Option<usize>,
) -> PyResult<ReinhardOut<'py>> {
    let (n, h, w) = patches_shape(&patches)?;
    let src = contiguous("patches", &patches)?;
    let params = ReinhardParams {
        io,
        beta,
        min_tissue,
    };
    let target = ReinhardTarget { mean, std };
    let shape = BatchShape {
        n,
        height: h,
        width: w,
    };
    let done = detached(py, || {
        let batch = RgbBatch::new("patches", src, shape)?;
        stain::reinhard_transform(batch, &target, &params, n_threads)
    })?;
    let (out, skipped) = (done.patches, done.skipped);
    Ok((
        to_array4(py, [n, h, w, 3], out)?,
        Array1::from_vec(skipped).into_pyarray(py),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stain_macenko_fit, m)?)?;
    m.add_function(wrap_pyfunction!(stain_macenko_transform, m)?)?;
    m.add_function(wrap_pyfunction!(stain_reinhard_fit, m)?)?;
    m.add_function(wrap_pyfunction!(stain_reinhard_transform, m)?)?;
    Ok(())
}
