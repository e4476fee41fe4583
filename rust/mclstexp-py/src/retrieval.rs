//! Bindings for exact top-k cosine retrieval: numpy <-> slices, GIL release, error mapping.

use std::path::PathBuf;

use mclstexp_core::retrieval::{self, ExactIndex, Neighbours};
use numpy::{PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::convert::{matrix, to_numpy};
use crate::gil::detached;

type Pair<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

/// Converts a search result into `(scores, indices)` arrays of shape `(n_queries, k)`.
fn to_arrays<'py>(py: Python<'py>, found: Neighbours) -> PyResult<Pair<'py>> {
    let shape = [found.n_queries, found.k];
    Ok((
        to_numpy(py, shape, found.scores)?,
        to_numpy(py, shape, found.indices)?,
    ))
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
        let rows = matrix("reference", &rows)?;
        let inner = &mut self.inner;
        detached(py, || inner.add(rows, n_threads))
    }

    #[pyo3(signature = (queries, k, *, n_threads=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: usize,
        n_threads: Option<usize>,
    ) -> PyResult<Pair<'py>> {
        let queries = matrix("queries", &queries)?;
        let inner = &self.inner;
        let found = detached(py, || inner.search(queries, k, n_threads))?;
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
    let queries = matrix("queries", &queries)?;
    let reference = matrix("reference", &reference)?;
    let found = detached(py, || {
        retrieval::topk_cosine(queries, reference, k, n_threads)
    })?;
    to_arrays(py, found)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyExactIndex>()?;
    m.add_function(wrap_pyfunction!(topk_cosine, m)?)?;
    Ok(())
}
