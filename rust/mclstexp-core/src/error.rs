//! The one error type of the core. Every fallible public function returns [`Result`].
//!
//! The Python bindings map each variant to exactly one Python exception class
//! (see `rust/mclstexp-py/src/errors.rs`), so the variant is part of the public contract.

use std::path::PathBuf;

/// Errors raised by the core. None of them is a panic: input-dependent failures always arrive here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed a bad argument (shape, range, non-finite value...). Maps to `ValueError`.
    #[error("{arg}: {msg}")]
    InvalidArgument {
        /// The argument's name as the user wrote it (e.g. `"queries"`).
        arg: &'static str,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// An operating-system I/O failure on a file. Maps to `OSError` (`FileNotFoundError` when missing).
    #[error("{path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a readable slide, or is corrupt. Maps to `mclstexp.SlideFormatError`.
    #[error("{path}: {msg}")]
    SlideFormat {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// No tissue could be found where some was required. Maps to `mclstexp.NoTissueError`.
    #[error("{0}")]
    NoTissue(String),
    /// A numerical procedure could not proceed (e.g. a degenerate stain fit). Maps to `ValueError`.
    #[error("{0}")]
    Numerical(String),
    /// The thread pool could not be built. Maps to `RuntimeError`.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(arg: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg,
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::SlideFormat`].
    pub fn slide(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::SlideFormat {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_argument() {
        let e = Error::invalid("k", "must be >= 1, got 0");
        assert_eq!(e.to_string(), "k: must be >= 1, got 0");
    }

    #[test]
    fn io_error_names_the_path() {
        let e = Error::io(
            "/no/such/slide.svs",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(e.to_string().starts_with("/no/such/slide.svs"));
    }
}
