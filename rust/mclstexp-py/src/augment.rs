//! Bindings for the fused training augmentation (`mclstexp_core::augment`).

use mclstexp_core::augment::{self, Jobs, Output, Params};
use mclstexp_core::normalize::ChannelNorm;
use mclstexp_core::view::{BatchShape, RgbBatch};
use numpy::{PyArray4, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::gil::detached;
use crate::normalize::contiguous;

/// `(H, W)` of a uint8 `[N, H, W, 3]` array, or `ValueError` naming `patches`.
fn patch_dims(patches: &PyReadonlyArray4<'_, u8>) -> PyResult<(usize, usize)> {
    let shape = patches.shape();
    if shape[3] != 3 {
        return Err(PyValueError::new_err(format!(
            "patches: expected shape (N, H, W, 3), got last axis {}",
            shape[3]
        )));
    }
    Ok((shape[1], shape[2]))
}

/// Non-negative int64 indices as `usize`, or `ValueError` naming `arg`.
fn to_usize(arg: &str, values: Option<PyReadonlyArray1<'_, i64>>) -> PyResult<Option<Vec<usize>>> {
    let Some(values) = values else {
        return Ok(None);
    };
    contiguous(arg, &values)?
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .map_err(|_| PyValueError::new_err(format!("{arg}: must be >= 0, got {v}")))
        })
        .collect::<PyResult<Vec<usize>>>()
        .map(Some)
}

/// The parameter arrays, the jobs' source indices (default: every image in order) and rows.
struct JobArrays<'a> {
    params: Params<'a>,
    indices: Vec<usize>,
    out_rows: Option<Vec<usize>>,
}

#[allow(clippy::too_many_arguments)]
fn jobs<'a>(
    n: usize,
    brightness: &'a PyReadonlyArray1<'_, f64>,
    contrast: &'a PyReadonlyArray1<'_, f64>,
    saturation: &'a PyReadonlyArray1<'_, f64>,
    flip: &'a PyReadonlyArray1<'_, bool>,
    angle: &'a PyReadonlyArray1<'_, f64>,
    indices: Option<PyReadonlyArray1<'_, i64>>,
    out_rows: Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<JobArrays<'a>> {
    let params = Params {
        brightness: contiguous("brightness", brightness)?,
        contrast: contiguous("contrast", contrast)?,
        saturation: contiguous("saturation", saturation)?,
        flip: contiguous("flip", flip)?,
        angle: contiguous("angle", angle)?,
    };
    let indices = to_usize("indices", indices)?.unwrap_or_else(|| (0..n).collect());
    let out_rows = to_usize("out_rows", out_rows)?;
    Ok(JobArrays {
        params,
        indices,
        out_rows,
    })
}

/// `out` after checking its image axes, or a new zeroed array of `rows` images.
fn output_array<'py, T: numpy::Element>(
    py: Python<'py>,
    out: Option<Bound<'py, PyArray4<T>>>,
    rows: usize,
    image: [usize; 3],
) -> PyResult<Bound<'py, PyArray4<T>>> {
    let Some(array) = out else {
        return Ok(PyArray4::zeros(
            py,
            [rows, image[0], image[1], image[2]],
            false,
        ));
    };
    let s = array.shape();
    if s[1..] != image[..] {
        return Err(PyValueError::new_err(format!(
            "out: expected shape (N, {}, {}, {}), got {s:?}",
            image[0], image[1], image[2]
        )));
    }
    Ok(array)
}

/// Run `work` on the C-contiguous buffer of `array` with the GIL released.
fn fill<'py, T: numpy::Element + Send>(
    py: Python<'py>,
    array: Bound<'py, PyArray4<T>>,
    work: impl FnOnce(&mut [T]) -> mclstexp_core::Result<()> + Send,
) -> PyResult<Bound<'py, PyArray4<T>>> {
    {
        let mut rw = array.try_readwrite().map_err(|_| {
            PyValueError::new_err("out: must be a writeable array not borrowed elsewhere")
        })?;
        let dst = rw
            .as_slice_mut()
            .map_err(|_| PyValueError::new_err("out: must be a C-contiguous array"))?;
        detached(py, || work(dst))?;
    }
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
#[allow(clippy::too_many_arguments)]
pub fn augment_patches_uint8<'py>(
    py: Python<'py>,
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
    let (h, w) = patch_dims(&patches)?;
    let src = contiguous("patches", &patches)?;
    let j = jobs(
        patches.shape()[0],
        &brightness,
        &contrast,
        &saturation,
        &flip,
        &angle,
        indices,
        out_rows,
    )?;
    let array = output_array(py, out, j.indices.len(), [h, w, 3])?;
    let shape = BatchShape {
        n: patches.shape()[0],
        height: h,
        width: w,
    };
    fill(py, array, |dst| {
        let jobs = Jobs {
            indices: &j.indices,
            out_rows: j.out_rows.as_deref(),
            params: j.params,
        };
        let batch = RgbBatch::new("patches", src, shape)?;
        augment::augment_rows(batch, &jobs, Output::Uint8(dst), n_threads)
    })
}

/// Fused colour jitter + flip + rotation + normalisation of uint8 `[N, H, W, 3]` patches ->
/// float32 `[J, 3, H, W]` `(v / 255 - mean) / std` (jobs as in `augment_patches_uint8`), written
/// into `out` when given; GIL released.
#[pyfunction]
#[pyo3(signature = (
    patches, brightness, contrast, saturation, flip, angle, mean, std, *, indices=None,
    out_rows=None, out=None, n_threads=None
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
    indices: Option<PyReadonlyArray1<'py, i64>>,
    out_rows: Option<PyReadonlyArray1<'py, i64>>,
    out: Option<Bound<'py, PyArray4<f32>>>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let (h, w) = patch_dims(&patches)?;
    let src = contiguous("patches", &patches)?;
    let j = jobs(
        patches.shape()[0],
        &brightness,
        &contrast,
        &saturation,
        &flip,
        &angle,
        indices,
        out_rows,
    )?;
    let array = output_array(py, out, j.indices.len(), [3, h, w])?;
    let shape = BatchShape {
        n: patches.shape()[0],
        height: h,
        width: w,
    };
    fill(py, array, |dst| {
        let jobs = Jobs {
            indices: &j.indices,
            out_rows: j.out_rows.as_deref(),
            params: j.params,
        };
        let norm = ChannelNorm { mean, std };
        let o = Output::Tensor { out: dst, norm };
        let batch = RgbBatch::new("patches", src, shape)?;
        augment::augment_rows(batch, &jobs, o, n_threads)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(augment_patches_uint8, m)?)?;
    m.add_function(wrap_pyfunction!(augment_patches_tensor, m)?)?;
    Ok(())
}
