//! Bindings for the CPU-feature dispatch (`mclstexp_core::simd`).

use mclstexp_core::simd;
use pyo3::prelude::*;

/// The instruction-set level the native kernels run in this process: `"avx512"`, `"avx2+fma"` or
/// `"portable"` (`MCLSTEXP_NO_AVX512` caps it at `"avx2+fma"`).
#[pyfunction]
pub fn simd_level() -> &'static str {
    simd::isa().name()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    Ok(())
}
