//! `mclstexp._native`: thin PyO3 bindings over `mclstexp-core`.
//!
//! Every line here is conversion (numpy <-> core views, in `convert`), GIL release
//! (`gil::detached`) or error mapping (`errors::to_pyerr`). Anything else belongs in the core. One
//! file per core area registers its functions.

mod augment;
mod convert;
mod errors;
mod gil;
mod normalize;
mod pool;
mod retrieval;
mod simd;
mod slide;
mod stain;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    pool::register(m)?;
    simd::register(m)?;
    augment::register(m)?;
    retrieval::register(m)?;
    normalize::register(m)?;
    stain::register(m)?;
    slide::register(m)?;
    Ok(())
}
