//! The single error funnel: every core error becomes exactly one Python exception class.
//!
//! | core variant        | Python exception                                   |
//! |---------------------|----------------------------------------------------|
//! | `InvalidArgument`   | `ValueError` ("<arg>: <what was expected>")        |
//! | `Numerical`         | `ValueError`                                       |
//! | `Io` (not found)    | `FileNotFoundError` (with `filename` set)          |
//! | `Io` (other)        | `OSError` (with `filename` set)                    |
//! | `SlideFormat`       | `mclstexp.SlideFormatError` (an `MclstexpError`)   |
//! | `NoTissue`          | `mclstexp.NoTissueError` (an `MclstexpError`)      |
//! | `ThreadPool`        | `RuntimeError`                                     |

use mclstexp_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// Looks up an exception class defined in `mclstexp.exceptions` and instantiates it.
fn package_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py
        .import("mclstexp.exceptions")
        .and_then(|module| module.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        // The package's Python half is missing (a broken install): still raise something precise.
        Err(_) => PyRuntimeError::new_err(format!("{class}: {message}")),
    }
}

/// Converts a core error into the documented Python exception.
pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    match err {
        Error::InvalidArgument { .. } | Error::Numerical(_) => {
            PyValueError::new_err(err.to_string())
        }
        Error::Io { path, source } => {
            let errno = source.raw_os_error().unwrap_or(0);
            let text = source.to_string();
            let filename = path.display().to_string();
            if source.kind() == std::io::ErrorKind::NotFound {
                PyFileNotFoundError::new_err((errno, text, filename))
            } else {
                PyOSError::new_err((errno, text, filename))
            }
        }
        Error::SlideFormat { .. } => package_error(py, "SlideFormatError", err.to_string()),
        Error::NoTissue(_) => package_error(py, "NoTissueError", err.to_string()),
        Error::ThreadPool(_) => PyRuntimeError::new_err(err.to_string()),
    }
}
