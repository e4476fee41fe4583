//! Bindings for the thread pool.

use mclstexp_core::pool;
use pyo3::prelude::*;

use crate::gil::detached;

/// The number of threads a call with `n_threads=None` would use now.
#[pyfunction]
pub fn default_num_threads() -> usize {
    pool::current_default_size()
}

/// Diagnostic: runs `n_tasks` sleeps of `millis` ms on the pool, GIL released; returns the number
/// of distinct worker threads used.
#[pyfunction]
#[pyo3(signature = (n_tasks, millis, *, n_threads=None))]
pub fn _diagnostic_sleep(
    py: Python<'_>,
    n_tasks: usize,
    millis: u64,
    n_threads: Option<usize>,
) -> PyResult<usize> {
    detached(py, || pool::diagnostic_sleep(n_threads, n_tasks, millis))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(default_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_diagnostic_sleep, m)?)?;
    Ok(())
}
