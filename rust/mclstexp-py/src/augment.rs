//! Bindings for the fused training augmentation (`mclstexp_core::augment`).
//!
//! The two entry points take the Python signatures' 10 and 12 parameters (the five per-image
//! arrays, then keyword arguments), one Rust parameter each as PyO3 requires, hence the one
//! `allow` for this module; every other function here takes at most five.
#![allow(clippy::too_many_arguments)]

use mclstexp_core::augment::{self, Jobs, Output, Params};
use mclstexp_core::normalize::ChannelNorm;
use mclstexp_core::view::RgbBatch;
use numpy::{PyArray4, PyReadonlyArray1, PyReadonlyArray4};
use pyo3::prelude::*;

use crate::convert::{check_out_shape, contiguous, fill, indices, rgb_batch};

/// The per-image parameter arrays of a call (one entry per job).
struct ParamArrays<'py> {
    brightness: PyReadonlyArray1<'py, f64>,
    contrast: PyReadonlyArray1<'py, f64>,
    saturation: PyReadonlyArray1<'py, f64>,
    flip: PyReadonlyArray1<'py, bool>,
    angle: PyReadonlyArray1<'py, f64>,
}

impl ParamArrays<'_> {
    fn params(&self) -> PyResult<Params<'_>> {
        Ok(Params {
            brightness: contiguous("brightness", &self.brightness)?,
            contrast: contiguous("contrast", &self.contrast)?,
            saturation: contiguous("saturation", &self.saturation)?,
            flip: contiguous("flip", &self.flip)?,
            angle: contiguous("angle", &self.angle)?,
        })
    }
}

/// The job arrays: source images (default: every image in order) and output rows.
struct JobArrays<'py> {
    indices: Option<PyReadonlyArray1<'py, i64>>,
    out_rows: Option<PyReadonlyArray1<'py, i64>>,
}

/// Converts the arrays of one call and runs the augmentation into `out` (a new zeroed array of
/// one image per job, of `image` shape, when `None`) with the GIL released.
fn run<'py, T: numpy::Element + Send>(
    src: RgbBatch<'_>,
    (params, jobs): (&ParamArrays<'py>, JobArrays<'py>),
    out: Option<Bound<'py, PyArray4<T>>>,
    image: [usize; 3],
    work: impl FnOnce(RgbBatch<'_>, &Jobs<'_>, &mut [T]) -> mclstexp_core::Result<()> + Send,
) -> PyResult<Bound<'py, PyArray4<T>>> {
    let py = params.brightness.py();
    let params = params.params()?;
    let idx = indices("indices", jobs.indices)?.unwrap_or_else(|| (0..src.len()).collect());
    let rows = indices("out_rows", jobs.out_rows)?;
    let array = match out {
        Some(array) => {
            let [a, b, c] = image;
            let pattern = format!("(N, {a}, {b}, {c})");
            check_out_shape("out", &array, &[None, Some(a), Some(b), Some(c)], &pattern)?;
            array
        }
        None => PyArray4::zeros(py, [idx.len(), image[0], image[1], image[2]], false),
    };
    let jobs = Jobs {
        indices: &idx,
        out_rows: rows.as_deref(),
        params,
    };
    fill("out", &array, |dst| work(src, &jobs, dst))?;
    Ok(array)
}

/// Fused colour jitter + flip + rotation of uint8 `[N, H, W, 3]` patches -> uint8 `[J, H, W, 3]`
/// (`J` jobs: `indices` selects the source images, default all; `out_rows` their output rows in
/// `out`); GIL released.
#[pyfunction]
#[pyo3(signature = (
    patches, brightness, contrast, saturation, flip, angle, *, indices=None, out_rows=None,
    out=None, n_threads=None
))]
pub fn augment_patches_uint8<'py>(
    patches: PyReadonlyArray4<'py, u8>,
    brightness: PyReadonlyArray1<'py, f64>,
    contrast: PyReadonlyArray1<'py, f64>,
    saturation: PyReadonlyArray1<'py, f64>,
    flip: PyReadonlyArray1<'py, bool>,
    angle: PyReadonlyArray1<'py, f64>,
    indices: Option<PyReadonlyArray1<'py, i64>>,
    out_rows: Option<PyReadonlyArray1<'py, i64>>,
    out: Option<Bound<'py, PyArray4<u8>>>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let src = rgb_batch("patches", &patches)?;
    let s = src.shape();
    let params = ParamArrays {
        brightness,
        contrast,
        saturation,
        flip,
        angle,
    };
    let jobs = JobArrays { indices, out_rows };
    run(
        src,
        (&params, jobs),
        out,
        [s.height, s.width, 3],
        |src, jobs, dst| augment::augment_rows(src, jobs, Output::Uint8(dst), n_threads),
    )
}

/// Fused colour jitter + flip + rotation + normalisation of uint8 `[N, H, W, 3]` patches ->
/// float32 `[J, 3, H, W]` `(v / 255 - mean) / std` (jobs as in `augment_patches_uint8`), written
/// into `out` when given; GIL released.
#[pyfunction]
#[pyo3(signature = (
    patches, brightness, contrast, saturation, flip, angle, mean, std, *, indices=None,
    out_rows=None, out=None, n_threads=None
))]
pub fn augment_patches_tensor<'py>(
    patches: PyReadonlyArray4<'py, u8>,
    brightness: PyReadonlyArray1<'py, f64>,
    contrast: PyReadonlyArray1<'py, f64>,
    saturation: PyReadonlyArray1<'py, f64>,
    flip: PyReadonlyArray1<'py, bool>,
    angle: PyReadonlyArray1<'py, f64>,
    mean: [f64; 3],
    std: [f64; 3],
    indices: Option<PyReadonlyArray1<'py, i64>>,
    out_rows: Option<PyReadonlyArray1<'py, i64>>,
    out: Option<Bound<'py, PyArray4<f32>>>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let src = rgb_batch("patches", &patches)?;
    let s = src.shape();
    let params = ParamArrays {
        brightness,
        contrast,
        saturation,
        flip,
        angle,
    };
    let jobs = JobArrays { indices, out_rows };
    let norm = ChannelNorm { mean, std };
    run(
        src,
        (&params, jobs),
        out,
        [3, s.height, s.width],
        |src, jobs, dst| {
            let out = Output::Tensor { out: dst, norm };
            augment::augment_rows(src, jobs, out, n_threads)
        },
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(augment_patches_uint8, m)?)?;
    m.add_function(wrap_pyfunction!(augment_patches_tensor, m)?)?;
    Ok(())
}
