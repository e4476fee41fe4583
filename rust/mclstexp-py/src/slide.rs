//! Bindings for the slide reader, patch tiling and tissue detection (`mclstexp_core::slide`,
//! `tiling`, `tissue`). Conversion, GIL release and error mapping only.

use std::path::PathBuf;

use mclstexp_core::slide::{Slide, DEFAULT_CACHE_BYTES};
use mclstexp_core::view::{Mask, RgbImage, Size, SourceBox};
use mclstexp_core::{tiling, tissue};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyArray4, PyReadonlyArray2, PyReadonlyArray3,
};
use pyo3::prelude::*;

use crate::convert::{check_out_shape, fill, mask, points, rgb_image, to_numpy};
use crate::gil::detached;

type Patches<'py> = (Bound<'py, PyArray4<u8>>, Bound<'py, PyArray1<bool>>);

/// A slide opened by the native reader (TIFF/BigTIFF, SVS, OME-TIFF, JPEG, PNG).
#[pyclass(name = "NativeSlide", module = "mclstexp._native", frozen)]
pub struct NativeSlide {
    inner: Slide,
}

#[pymethods]
impl NativeSlide {
    #[new]
    #[pyo3(signature = (path, *, cache_bytes=DEFAULT_CACHE_BYTES))]
    fn new(py: Python<'_>, path: PathBuf, cache_bytes: usize) -> PyResult<Self> {
        let inner = detached(py, || Slide::open_with_cache(&path, cache_bytes))?;
        Ok(Self { inner })
    }

    /// The slide's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// File size in bytes.
    #[getter]
    fn file_size(&self) -> u64 {
        self.inner.file_len()
    }

    /// `(width, height)` of every level, level 0 first.
    #[getter]
    fn level_dimensions(&self) -> Vec<(u64, u64)> {
        self.inner
            .levels()
            .iter()
            .map(|l| (l.width, l.height))
            .collect()
    }

    /// Downsample of every level relative to level 0.
    #[getter]
    fn level_downsamples(&self) -> Vec<f64> {
        self.inner.levels().iter().map(|l| l.downsample).collect()
    }

    /// Microns per pixel `(x, y)` of level 0 from the file's metadata, or `None`.
    #[getter]
    fn mpp(&self) -> Option<(f64, f64)> {
        self.inner.mpp()
    }

    /// Detected format: `aperio`, `ome-tiff`, `generic-tiff`, `jpeg` or `png`.
    #[getter]
    fn vendor(&self) -> &'static str {
        self.inner.vendor()
    }

    /// Level 0's ImageDescription, or `None`.
    #[getter]
    fn description(&self) -> Option<String> {
        self.inner.description().map(str::to_owned)
    }

    /// `(width, height)` of a level's tiles.
    fn tile_size(&self, py: Python<'_>, level: usize) -> PyResult<(u64, u64)> {
        detached(py, || self.inner.tile_size(level))
    }

    /// Bytes of decoded tiles held in the cache.
    fn cache_used(&self) -> usize {
        self.inner.cache().used()
    }

    /// Tiles (or whole plain images) decoded since the slide was opened.
    fn tile_decodes(&self) -> u64 {
        self.inner.tile_decodes()
    }

    /// Empties the tile cache.
    fn clear_cache(&self) {
        self.inner.cache().clear();
    }

    /// OpenSlide-style region: `(x, y)` in level-0 coordinates, `width x height` pixels of
    /// `level`; uint8 `(height, width, 3)`, white outside the slide.
    #[pyo3(signature = (x, y, level, width, height, *, n_threads=None))]
    fn read_region<'py>(
        slf: &Bound<'py, Self>,
        x: i64,
        y: i64,
        level: usize,
        width: usize,
        height: usize,
        n_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        let (py, inner) = (slf.py(), &slf.get().inner);
        let v = detached(py, || {
            inner.read_region_l0(x, y, level, width, height, n_threads)
        })?;
        to_numpy(py, [height, width, 3], v)
    }

    /// Patches at level-0 `centers` (float64 `(n, 2)`, x then y): returns uint8
    /// `(n, size, size, 3)` and a bool `(n,)` mask of patches fully inside the slide. With `out`
    /// (a C-contiguous uint8 `(n, size, size, 3)` array) the patches are written there and `out`
    /// is returned, so batches can reuse one buffer. `slide_mpp=None`: the slide's own.
    ///
    /// The parameters are the Python signature's (keyword arguments at every call site), hence
    /// the `allow`.
    #[pyo3(signature = (centers, *, size=224, level=0, mpp=None, slide_mpp=None, n_threads=None, out=None))]
    #[allow(clippy::too_many_arguments)]
    fn read_patches<'py>(
        &self,
        centers: PyReadonlyArray2<'py, f64>,
        size: usize,
        level: usize,
        mpp: Option<f64>,
        slide_mpp: Option<f64>,
        n_threads: Option<usize>,
        out: Option<Bound<'py, PyArray4<u8>>>,
    ) -> PyResult<Patches<'py>> {
        let py = centers.py();
        let pts = points("centers", &centers)?;
        let spec = tiling::PatchSpec {
            size,
            level,
            mpp,
            slide_mpp,
        };
        let (n, slide) = (pts.len(), &self.inner);
        let Some(array) = out else {
            let (v, inside) = detached(py, || tiling::read_patches(slide, &pts, &spec, n_threads))?;
            return Ok((
                to_numpy(py, [n, size, size, 3], v)?,
                inside.into_pyarray(py),
            ));
        };
        let want = [Some(n), Some(size), Some(size), Some(3)];
        check_out_shape("out", &array, &want, &format!("({n}, {size}, {size}, 3)"))?;
        let mut inside = vec![false; n];
        fill("out", &array, |buf| {
            tiling::read_patches_into(slide, &pts, &spec, n_threads, buf, &mut inside)
        })?;
        Ok((array, inside.into_pyarray(py)))
    }

    /// A thumbnail whose longer side is at most `max_size` pixels; uint8 `(h, w, 3)`.
    #[pyo3(signature = (max_size, *, n_threads=None))]
    fn thumbnail<'py>(
        &self,
        py: Python<'py>,
        max_size: usize,
        n_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        let (v, w, h) = detached(py, || tiling::thumbnail(&self.inner, max_size, n_threads))?;
        to_numpy(py, [h, w, 3], v)
    }
}

/// Tissue mask of an RGB thumbnail (uint8 `(h, w, 3)`): Otsu on saturation plus morphology.
/// Returns the bool mask `(h, w)` and the saturation threshold used.
#[pyfunction]
#[pyo3(signature = (image, *, min_saturation=20, radius=2))]
fn tissue_mask<'py>(
    image: PyReadonlyArray3<'py, u8>,
    min_saturation: u8,
    radius: usize,
) -> PyResult<(Bound<'py, PyArray2<bool>>, u8)> {
    let py = image.py();
    let (data, size) = rgb_image("image", &image)?;
    let (mask, t) = detached(py, || {
        let image = RgbImage::new("image", &data, size)?;
        tissue::tissue_mask(image, min_saturation, radius)
    })?;
    Ok((to_numpy(py, [size.height, size.width], mask)?, t))
}

/// Level-0 centres `(n, 2)` of `fov`-pixel grid cells whose tissue fraction in `mask` is at
/// least `min_fraction`.
#[pyfunction]
#[pyo3(signature = (width, height, fov, mask, *, min_fraction=0.5))]
fn grid_centers<'py>(
    py: Python<'py>,
    width: u64,
    height: u64,
    fov: f64,
    mask: PyReadonlyArray2<'py, bool>,
    min_fraction: f64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (values, size) = self::mask(&mask);
    let pts = detached(py, || {
        let mask = Mask::new("mask", &values, size)?;
        tiling::grid_centers(mask, (width, height), fov, min_fraction)
    })?;
    let n = pts.len();
    to_numpy(py, [n, 2], pts.into_flattened())
}

/// Resizes an RGB image (uint8 `(h, w, 3)`), or the continuous `box` `(x0, y0, x1, y1)` of it,
/// with Pillow's antialiased bilinear filter.
#[pyfunction]
#[pyo3(signature = (image, width, height, *, r#box=None))]
fn resize_rgb<'py>(
    image: PyReadonlyArray3<'py, u8>,
    width: usize,
    height: usize,
    r#box: Option<(f64, f64, f64, f64)>,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let py = image.py();
    let (data, size) = rgb_image("image", &image)?;
    let (x0, y0, x1, y1) = r#box.unwrap_or((0.0, 0.0, size.width as f64, size.height as f64));
    let region = SourceBox {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    };
    let v = detached(py, || {
        let image = RgbImage::new("image", &data, size)?;
        tiling::resize_box(image, region, Size { width, height })
    })?;
    to_numpy(py, [height, width, 3], v)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeSlide>()?;
    m.add_function(wrap_pyfunction!(tissue_mask, m)?)?;
    m.add_function(wrap_pyfunction!(grid_centers, m)?)?;
    m.add_function(wrap_pyfunction!(resize_rgb, m)?)?;
    Ok(())
}
