//! The one CPU-feature dispatch of the core: which instruction set the SIMD kernels run.
//!
//! This is the only module that asks the CPU what it supports and the only one that reads
//! `MCLSTEXP_NO_AVX512`. Both are looked at once per process (cached in a [`OnceLock`]); every
//! kernel (retrieval, Macenko, Reinhard, the percentile selection, augmentation) then asks
//! [`isa`] which of its versions to run.
//!
//! Levels nest: a CPU that runs [`Isa::Avx512`] also runs [`Isa::Avx2Fma`], and every CPU runs
//! [`Isa::Portable`]. A kernel without a version for the level in use runs its best version
//! below it (one more `match` arm adds a version, see [`Isa`]). On x86-64 every SIMD kernel has
//! an AVX2 + FMA version, and all but augmentation (whose AVX2 rows serve both) an AVX-512 one;
//! on other architectures (aarch64: Apple silicon, Graviton) [`isa`] is always
//! [`Isa::Portable`] and the plain Rust loops run, auto-vectorised by the compiler.
//!
//! `MCLSTEXP_NO_AVX512` (set to any value before the first kernel runs) caps the level at
//! [`Isa::Avx2Fma`]: for comparisons, and for CPUs that slow down under AVX-512.
//!
//! Oracle tests compare every level the CPU runs in one process: [`supported`] lists them, and
//! the kernels' internal `*_with(isa, ...)` entry points take an explicit level (a level the CPU
//! lacks is lowered with [`Isa::supported_or_below`], so forcing one is never unsound).

use std::sync::OnceLock;

/// Environment variable that caps the level at [`Isa::Avx2Fma`] (any value).
pub const ENV_NO_AVX512: &str = "MCLSTEXP_NO_AVX512";

/// An instruction-set level, ordered from the least to the most capable.
///
/// Kernels dispatch with a `match` on the level, one arm per version they have, the last arm
/// (`_`) being the portable code; the unsafe call of a `#[target_feature]` version is sound
/// because the level in hand is supported by the CPU (it came from [`isa`] or went through
/// [`Isa::supported_or_below`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust (auto-vectorised where the compiler can); runs everywhere.
    #[default]
    Portable,
    /// x86-64 AVX2 + FMA (256-bit registers, fused multiply-add).
    Avx2Fma,
    /// x86-64 AVX-512 F + BW (512-bit registers; byte/word shuffles for the RGB unpacking),
    /// on top of AVX2 + FMA.
    Avx512,
}

impl Isa {
    /// Every level, least capable first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512];

    /// A short name: `"portable"`, `"avx2+fma"` or `"avx512"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU runs the level (whatever `MCLSTEXP_NO_AVX512` says).
    pub fn is_supported(self) -> bool {
        self <= cpu_best()
    }

    /// `self` when the CPU runs it, else the most capable level below it that it runs.
    pub fn supported_or_below(self) -> Isa {
        self.min(cpu_best())
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level the kernels run in this process: the most capable one the CPU supports, capped at
/// [`Isa::Avx2Fma`] when `MCLSTEXP_NO_AVX512` is set. Decided once, on first use.
pub fn isa() -> Isa {
    static LEVEL: OnceLock<Isa> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = cpu_best();
        if std::env::var_os(ENV_NO_AVX512).is_some() {
            best.min(Isa::Avx2Fma)
        } else {
            best
        }
    })
}

/// Every level this CPU runs, least capable first (for tests comparing them).
pub fn supported() -> impl Iterator<Item = Isa> {
    Isa::ALL.into_iter().filter(|l| l.is_supported())
}

/// The most capable level the CPU supports (detected once).
fn cpu_best() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    let avx2_fma = has!("avx2") && has!("fma");
    if avx2_fma && has!("avx512f") && has!("avx512bw") {
        Isa::Avx512
    } else if avx2_fma {
        Isa::Avx2Fma
    } else {
        Isa::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Portable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_nest_and_the_process_level_is_supported() {
        assert!(Isa::Portable.is_supported());
        assert!(isa().is_supported());
        let levels: Vec<Isa> = supported().collect();
        assert_eq!(levels[0], Isa::Portable);
        // Supported levels are a prefix of ALL: no gaps.
        assert_eq!(levels[..], Isa::ALL[..levels.len()]);
        for level in Isa::ALL {
            let lowered = level.supported_or_below();
            assert!(lowered <= level && lowered.is_supported());
        }
    }

    #[test]
    fn the_variable_caps_the_process_level() {
        let capped = std::env::var_os(ENV_NO_AVX512).is_some();
        assert_eq!(isa() <= Isa::Avx2Fma, capped || !Isa::Avx512.is_supported());
    }

    #[test]
    fn names_are_stable() {
        let names: Vec<String> = Isa::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["portable", "avx2+fma", "avx512"]);
    }
}
