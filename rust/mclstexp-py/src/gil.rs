//! The one helper through which every heavy native call releases the GIL.

use mclstexp_core::Result;
use pyo3::prelude::*;

use crate::errors::to_pyerr;

/// Runs `work` with the GIL released, then maps a core error to its Python exception.
///
/// `work` must not touch Python objects (PyO3 enforces this through the `Ungil`/`Send` bound):
/// borrow numpy data as slices before calling, convert the result after.
pub fn detached<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    py.detach(work).map_err(|e| to_pyerr(py, e))
}
