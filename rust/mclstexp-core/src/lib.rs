//! Pure-Rust core of mclstexp: what is per-pixel or per-pair and must be fast.
//!
//! No Python here: `cargo test` needs no interpreter. The `mclstexp-py` crate is a thin binding.
//!
//! Modules:
//! - [`error`]: the single error type; every fallible function returns [`Result`].
//! - [`view`]: borrowed views of flat buffers with their shape (RGB batches and images, masks,
//!   matrices, pixel boxes), checked once where they are made.
//! - [`pool`]: the process-local, fork-safe thread pool every parallel call runs in.
//! - `buffer`: large zeroed output buffers advised for huge pages (fewer page faults).
//! - [`simd`]: the one CPU-feature dispatch (AVX-512 / AVX2+FMA / portable, `MCLSTEXP_NO_AVX512`).
//! - [`slide`]: the whole-slide reader (tiled TIFF/BigTIFF, SVS, OME-TIFF, JPEG, PNG).
//! - [`tiling`]: patch boxes at spot centres or on a grid, level/mpp choice, resampling, thumbnails.
//! - [`tissue`]: the tissue mask of a thumbnail (Otsu on saturation, morphology).
//! - [`stain`]: Macenko and Reinhard stain normalisation (fit a target, normalise patches).
//! - [`normalize`]: uint8 HWC patches <-> float32 CHW tensors with a per-channel mean and std.
//! - [`augment`]: fused training augmentation (colour jitter, flip, rotation, layout).
//! - [`retrieval`]: exact top-k cosine retrieval (SIMD kernel fused with top-k selection).

pub mod augment;
mod buffer;
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
