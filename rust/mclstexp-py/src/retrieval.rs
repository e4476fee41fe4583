//! Bindings for exact top-k cosine retrieval: numpy <-> slices, GIL release, error mapping.

use std::path::PathBuf;

use mclstexp_core::retrieval::{self, ExactIndex, Neighbours};
use mclstexp_core::view::Matrix;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::gil::detached;

/// Borrows a C-contiguous 2-D float32 array as `(values, rows, columns)`.
fn matrix<'a>(arg: &str, a: &'a PyReadonlyArray2<'_, f32>) -> PyResult<(&'a [f32], usize, usize)> {
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    let values = a.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "{arg}: must be C-contiguous (use numpy.ascontiguousarray)"
        ))
    })?;
    Ok((values, rows, cols))
}

type Pair<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

/// Converts a search result into `(scores, indices)` arrays of shape `(n_queries, k)`.
fn to_arrays<'py>(py: Python<'py>, found: Neighbours) -> PyResult<Pair<'py>> {
    let shape = (found.n_queries, found.k);
    let scores = Array2::from_shape_vec(shape, found.scores)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let indices = Array2::from_shape_vec(shape, found.indices)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((scores.into_pyarray(py), indices.into_pyarray(py)))
}

/// Native exact cosine index (wrapped by `mclstexp.retrieval.ExactIndex`).
#[pyclass(module = "mclstexp._native", name = "_ExactIndex")]
pub struct PyExactIndex {
    inner: ExactIndex,
}

#[pymethods]
impl PyExactIndex {
    #[new]
    fn new(py: Python<'_>, dim: usize) -> PyResult<Self> {
        let inner = detached(py, || ExactIndex::new(dim))?;
        Ok(PyExactIndex { inner })
    }

    #[pyo3(signature = (rows, *, n_threads=None))]
    fn add(
        &mut self,
        py: Python<'_>,
        rows: PyReadonlyArray2<'_, f32>,
        n_threads: Option<usize>,
    ) -> PyResult<()> {
        let (values, n, d) = matrix("reference", &rows)?;
        let inner = &mut self.inner;
        detached(py, || {
            inner.add(Matrix::new("reference", values, n, d)?, n_threads)
        })
    }

    #[pyo3(signature = (queries, k, *, n_threads=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: usize,
        n_threads: Option<usize>,
    ) -> PyResult<Pair<'py>> {
        let (values, n, d) = matrix("queries", &queries)?;
        let inner = &self.inner;
        let found = detached(py, || {
            inner.search(Matrix::new("queries", values, n, d)?, k, n_threads)
        })?;
        to_arrays(py, found)
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = &self.inner;
        detached(py, || inner.save(&path))
    }

    #[staticmethod]
    #[pyo3(signature = (path, *, n_threads=None))]
    fn load(py: Python<'_>, path: PathBuf, n_threads: Option<usize>) -> PyResult<Self> {
        let inner = detached(py, || ExactIndex::load(&path, n_threads))?;
        Ok(PyExactIndex { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.nbytes()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.kernel_name()
    }
}

/// One-off exact top-k cosine search; returns `(scores, indices)`, best first.
#[pyfunction]
#[pyo3(signature = (queries, reference, k, *, n_threads=None))]
pub fn topk_cosine<'py>(
    py: Python<'py>,
    queries: PyReadonlyArray2<'py, f32>,
    reference: PyReadonlyArray2<'py, f32>,
    k: usize,
    n_threads: Option<usize>,
) -> PyResult<Pair<'py>> {
    let (q, nq, dq) = matrix("queries", &queries)?;
    let (r, nr, dr) = matrix("reference", &reference)?;
    let found = detached(py, || {
        let queries = Matrix::new("queries", q, nq, dq)?;
        let reference = Matrix::new("reference", r, nr, dr)?;
        retrieval::topk_cosine(queries, reference, k, n_threads)
    })?;
    to_arrays(py, found)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyExactIndex>()?;
    m.add_function(wrap_pyfunction!(topk_cosine, m)?)?;
    Ok(())
}
