//! Pure-Rust core of mclstexp: what is per-pixel or per-pair and must be fast.
//!
//! No Python here: `cargo test` needs no interpreter. The `mclstexp-py` crate is a thin binding.
//!
//! Modules:
//! - [`error`]: the single error type.
//! - [`pool`]: the process-local, fork-safe thread pool every parallel call runs in.
//! - [`retrieval`]: exact top-k cosine retrieval (SIMD kernel fused with top-k selection).

pub mod augment;
pub mod error;
pub mod normalize;
pub mod pool;
pub mod retrieval;
pub mod simd;
pub mod slide;
pub mod stain;
pub mod tiling;
pub mod tissue;
pub mod view;

pub use error::{Error, Result};
