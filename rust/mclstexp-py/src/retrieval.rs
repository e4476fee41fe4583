//! Bindings for exact top-k cosine retrieval: numpy <-> slices, GIL release, error mapping.

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

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
///
/// Every method releases the GIL, so threads can call them at once: the index sits behind a
/// read-write lock (taken with the GIL released) under which searches run together and `add`
/// waits for them, where PyO3's borrow flag made `add` during a `search` fail with
/// "Already borrowed".
#[pyclass(module = "mclstexp._native", name = "_ExactIndex", frozen)]
pub struct PyExactIndex {
    inner: RwLock<ExactIndex>,
}

impl PyExactIndex {
    fn wrap(inner: ExactIndex) -> Self {
        PyExactIndex {
            inner: RwLock::new(inner),
        }
    }

    /// The index for reading (a panic elsewhere cannot leave it half-written: `add` only
    /// appends after checking its input).
    fn read(&self) -> RwLockReadGuard<'_, ExactIndex> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyExactIndex {
    #[new]
    fn new(py: Python<'_>, dim: usize) -> PyResult<Self> {
        let inner = detached(py, || ExactIndex::new(dim))?;
        Ok(PyExactIndex::wrap(inner))
    }

    #[pyo3(signature = (rows, *, n_threads=None))]
    fn add(
        &self,
        py: Python<'_>,
        rows: PyReadonlyArray2<'_, f32>,
        n_threads: Option<usize>,
    ) -> PyResult<()> {
        let rows = matrix("reference", &rows)?;
        let lock = &self.inner;
        detached(py, || {
            let mut inner = lock.write().unwrap_or_else(PoisonError::into_inner);
            inner.add(rows, n_threads)
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
        let queries = matrix("queries", &queries)?;
        let found = detached(py, || self.read().search(queries, k, n_threads))?;
        to_arrays(py, found)
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || self.read().save(&path))
    }

    #[staticmethod]
    #[pyo3(signature = (path, *, n_threads=None))]
    fn load(py: Python<'_>, path: PathBuf, n_threads: Option<usize>) -> PyResult<Self> {
        let inner = detached(py, || ExactIndex::load(&path, n_threads))?;
        Ok(PyExactIndex::wrap(inner))
    }

    // The getters take the lock with the GIL held; they wait at most for an `add` in progress,
    // which never needs the GIL, so they cannot deadlock.
    fn __len__(&self) -> usize {
        self.read().len()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.read().dim()
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.read().nbytes()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.read().kernel_name()
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
