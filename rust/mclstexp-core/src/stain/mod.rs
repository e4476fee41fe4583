//! Stain normalisation of H&E patches: Macenko and Reinhard.
//!
//! # Macenko (Macenko et al., ISBI 2009; the `HEnorm_python`/torchstain formulation)
//! For an RGB image with transmitted light `io`:
//! 1. optical density `OD = -ln((I + 1) / io)` per channel (a 256-entry table per byte value);
//! 2. tissue pixels are those with every channel's OD `>= beta` (a threshold on the byte value);
//! 3. the two eigenvectors of the tissue ODs' covariance with the largest eigenvalues span a plane;
//!    each is oriented so that its components sum to `>= 0` (eigenvector signs are otherwise
//!    arbitrary; this fixes them);
//! 4. every tissue OD is projected on that plane, `phi = atan2(<od, v_largest>, <od, v_second>)`, and the
//!    robust extreme angles are numpy's linear-interpolation percentiles `alpha` and `100 - alpha`
//!    of `phi` (the percentile is selected on a monotone pseudo-angle, only the two neighbouring
//!    order statistics go through `atan2`);
//! 5. the two extreme directions are the stain vectors; hematoxylin is the one with the larger red
//!    component and comes first (`stain_matrix` is `3 x 2`, columns H and E);
//! 6. concentrations `C = pinv(stain_matrix) . OD` for all pixels (least squares);
//!    `max_conc` is the 99th percentile of each concentration row.
//!
//! Normalising a patch to a fitted target re-estimates the patch's own stain matrix and `max_conc`,
//! scales concentrations by `target.max_conc / max_conc` and re-composes
//! `min(io * exp(-target.stain_matrix . C), 255)`, truncated to `u8` (as `astype(np.uint8)`).
//! The whole re-composition is linear in OD, so each output channel is a product of three per-byte
//! tables: no `exp` per pixel. Percentiles are exact order statistics found through a histogram
//! filled while the values are computed, then a selection inside the one or two bins concerned.
//! The per-pixel passes (tissue compaction, angles, concentrations, the selection's gather of a
//! bin's elements, the re-composition) run 16 pixels at a time with AVX-512 (F + BW) and 8 with
//! AVX2 + FMA, chosen at run time through [`crate::simd`] (`MCLSTEXP_NO_AVX512` caps the level at
//! AVX2), else one at a time. Every lane does the portable loop's exact operations (the same
//! table entries added in the same order, no fused multiply-add), so the outputs are
//! bit-identical to the portable path's on every level.
//!
//! # Reinhard (Reinhard et al., 2001; the torchstain/HistomicsTK formulation)
//! CIE LAB (sRGB, D65 white `(0.95047, 1, 1.08883)`), per-channel mean/std matching:
//! `lab' = (lab - mean) / std * target_std + target_mean`, back to sRGB, clipped to `[0, 1]`, times 255,
//! truncated to `u8`. The final sRGB gamma is applied by comparing against the 255 exact thresholds.
//! Two passes per patch: RGB -> LAB into a per-thread buffer with the moments (and the tissue
//! count) on the way, then the affine map and LAB -> RGB. Both run 16 pixels at a time with
//! AVX-512, 8 with AVX2 + FMA, else one at a time (chosen at run time; `MCLSTEXP_NO_AVX512` skips
//! AVX-512); all agree to a few f32 ulps in LAB and on the bytes but for rare one-level ties.
//!
//! # Patches that cannot be normalised
//! A patch whose tissue fraction (pixels with all ODs `>= beta`) is below `min_tissue`, or whose
//! tissue is a single colour (a rank-deficient OD covariance, parallel stain vectors, zero
//! concentrations, or a LAB channel with std below `1e-3`), is copied unchanged and flagged in the
//! returned mask. Nothing here produces NaN: every division is guarded by these checks.

// `!(x > y)` is deliberate throughout: it is true for NaN, which must take the rejecting branch.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// `x.max(lo).min(hi)` is deliberate too: unlike `clamp`, it maps NaN to a bound.
#![allow(clippy::manual_clamp)]
// Small fixed-size matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

mod macenko;
mod reinhard;
#[cfg(target_arch = "x86_64")]
mod rgb256;
#[cfg(target_arch = "x86_64")]
mod rgb512;
mod select;

pub use macenko::{macenko_fit, macenko_transform};
pub use reinhard::{reinhard_fit, reinhard_transform};

use crate::error::{Error, Result};
use crate::view::RgbBatch;

/// Smallest eigenvalue (in OD^2) that still counts as spread in the tissue ODs.
const MIN_EIGENVALUE: f64 = 1e-10;
/// Smallest `det(H^T H)` (= sin^2 of the angle between the unit stain vectors).
const MIN_STAIN_GRAM_DET: f64 = 1e-8;
/// Smallest LAB standard deviation that still counts as colour variation (Reinhard).
const MIN_LAB_STD: f64 = 1e-3;
/// Smallest tissue pixel count, whatever `min_tissue` says.
const MIN_TISSUE_PIXELS: usize = 8;
/// Above this |log-factor| a patch is re-composed with `exp` per pixel instead of the table product.
const MAX_TABLE_LOG: f64 = 20.0;

// ---------------------------------------------------------------------------------------------
// Parameters and targets
// ---------------------------------------------------------------------------------------------

/// Macenko parameters (`io = 240`, `alpha = 1`, `beta = 0.15`, `min_tissue = 0.01` by default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MacenkoParams {
    /// Transmitted light intensity (the brightness of the background).
    pub io: f64,
    /// Percentile (in %) of the extreme angles: `alpha` and `100 - alpha`.
    pub alpha: f64,
    /// OD threshold below which a channel counts as background.
    pub beta: f64,
    /// Smallest tissue fraction of a patch that is normalised (else it is returned unchanged).
    pub min_tissue: f64,
}

impl Default for MacenkoParams {
    fn default() -> Self {
        MacenkoParams {
            io: 240.0,
            alpha: 1.0,
            beta: 0.15,
            min_tissue: 0.01,
        }
    }
}

/// Reinhard parameters: only for deciding which patches have enough tissue (`io`, `beta`,
/// `min_tissue` as in [`MacenkoParams`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReinhardParams {
    /// Transmitted light intensity.
    pub io: f64,
    /// OD threshold below which a channel counts as background.
    pub beta: f64,
    /// Smallest tissue fraction of a patch that is normalised.
    pub min_tissue: f64,
}

impl Default for ReinhardParams {
    fn default() -> Self {
        ReinhardParams {
            io: 240.0,
            beta: 0.15,
            min_tissue: 0.01,
        }
    }
}

fn check_io_beta_tissue(io: f64, beta: f64, min_tissue: f64) -> Result<()> {
    if !(io.is_finite() && io > 1.0) {
        return Err(Error::invalid(
            "Io",
            format!("must be a finite number > 1 (background brightness, e.g. 240), got {io}"),
        ));
    }
    if !(beta.is_finite() && beta >= 0.0) {
        return Err(Error::invalid(
            "beta",
            format!("must be a finite number >= 0 (e.g. 0.15), got {beta}"),
        ));
    }
    if !(min_tissue.is_finite() && (0.0..=1.0).contains(&min_tissue)) {
        return Err(Error::invalid(
            "min_tissue",
            format!("must be a fraction in [0, 1], got {min_tissue}"),
        ));
    }
    Ok(())
}

impl MacenkoParams {
    /// Checks every parameter; errors name the parameter.
    pub fn validate(&self) -> Result<()> {
        check_io_beta_tissue(self.io, self.beta, self.min_tissue)?;
        if !(self.alpha.is_finite() && (0.0..50.0).contains(&self.alpha)) {
            return Err(Error::invalid(
                "alpha",
                format!("must be a percentile in [0, 50), got {}", self.alpha),
            ));
        }
        Ok(())
    }
}

impl ReinhardParams {
    /// Checks every parameter; errors name the parameter.
    pub fn validate(&self) -> Result<()> {
        check_io_beta_tissue(self.io, self.beta, self.min_tissue)
    }
}

/// A fitted Macenko target: the stain matrix (`3 x 2`, columns H and E, rows R, G, B) and the
/// 99th-percentile concentrations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MacenkoTarget {
    /// Unit OD vectors of hematoxylin (column 0) and eosin (column 1).
    pub stain_matrix: [[f64; 2]; 3],
    /// 99th percentile of the H and E concentrations.
    pub max_conc: [f64; 2],
}

impl MacenkoTarget {
    /// Checks a target that came from outside (e.g. a JSON file): finite, independent stains,
    /// positive concentrations.
    pub fn validate(&self) -> Result<()> {
        if self.stain_matrix.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "stain_matrix",
                "must be finite (3 x 2, columns H and E)",
            ));
        }
        if macenko::pinv_3x2(&self.stain_matrix).is_none() {
            return Err(Error::invalid(
                "stain_matrix",
                "its two columns (H and E) are parallel or zero; refit the target",
            ));
        }
        if self.max_conc.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::invalid(
                "max_conc",
                format!("must be two finite numbers > 0, got {:?}", self.max_conc),
            ));
        }
        Ok(())
    }
}

/// A fitted Reinhard target: LAB mean and std per channel (L in `[0, 100]`, a and b centred at 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReinhardTarget {
    /// Mean of L, a, b.
    pub mean: [f64; 3],
    /// Population standard deviation of L, a, b.
    pub std: [f64; 3],
}

impl ReinhardTarget {
    /// Checks a target that came from outside: finite means, finite stds `>= 1e-3`.
    pub fn validate(&self) -> Result<()> {
        if self.mean.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "mean",
                format!("must be finite, got {:?}", self.mean),
            ));
        }
        if self
            .std
            .iter()
            .any(|v| !(v.is_finite() && *v >= MIN_LAB_STD))
        {
            return Err(Error::invalid(
                "std",
                format!("must be finite and >= {MIN_LAB_STD}, got {:?}", self.std),
            ));
        }
        Ok(())
    }
}

/// A normalised batch: the patches (the input's shape), one flag per patch (`true` when it was
/// copied unchanged, see the module docs) and, when asked for (Macenko), the H and E
/// concentrations `[n, h, w, 2]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalised {
    pub patches: Vec<u8>,
    pub skipped: Vec<bool>,
    pub concentrations: Option<Vec<f32>>,
}

impl Normalised {
    /// Zeroed buffers for `input`, with room for the concentrations when asked for.
    fn new(input: RgbBatch<'_>, concentrations: bool) -> Self {
        let (n, pixels) = (input.len(), input.pixels());
        Normalised {
            patches: crate::buffer::zeroed(input.data().len()),
            skipped: vec![false; n],
            // `n * pixels * 3` fits (the batch checked it), so `n * pixels * 2` does.
            concentrations: concentrations.then(|| crate::buffer::zeroed(n * pixels * 2)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// Optical density per byte value, `-ln((v + 1) / io)`, and the largest byte that counts as tissue.
struct OdTable {
    od: [f64; 256],
    /// A channel is tissue iff its byte is `<= tissue_max` (i.e. `od >= beta`); `None`: never.
    tissue_max: Option<u8>,
}

impl OdTable {
    fn new(io: f64, beta: f64) -> Self {
        let mut od = [0f64; 256];
        let mut tissue_max = None;
        for v in 0..256usize {
            let value = -(((v as f64) + 1.0) / io).ln();
            od[v] = value;
            // `!(value < beta)` is numpy's `~(OD < beta)`.
            if value >= beta {
                tissue_max = Some(v as u8);
            }
        }
        OdTable { od, tissue_max }
    }

    #[inline]
    fn is_tissue(&self, px: &[u8]) -> bool {
        match self.tissue_max {
            Some(t) => px[0].max(px[1]).max(px[2]) <= t,
            None => false,
        }
    }

    fn count_tissue(&self, pixels: &[u8]) -> usize {
        pixels
            .chunks_exact(3)
            .filter(|px| self.is_tissue(px))
            .count()
    }
}

/// The tissue count a patch of `n_pixels` needs.
fn needed_tissue(n_pixels: usize, min_tissue: f64) -> usize {
    let by_fraction = (min_tissue * n_pixels as f64).ceil() as usize;
    by_fraction.max(MIN_TISSUE_PIXELS.min(n_pixels.max(1)))
}

/// Why an image could not be fitted (a patch is then skipped; a target fit raises).
#[derive(Clone, Debug, PartialEq)]
enum Degenerate {
    TooLittleTissue { found: usize, needed: usize },
    SingleColour,
    ParallelStains,
    NoConcentration,
}

impl Degenerate {
    fn explain(&self) -> String {
        match self {
            Degenerate::TooLittleTissue { found, needed } => format!(
                "too little tissue: {found} pixels have every channel's optical density >= beta, \
                 {needed} needed (is it background, or is Io/beta wrong?)"
            ),
            Degenerate::SingleColour => {
                "the tissue pixels are (nearly) a single colour: their optical \
                 densities do not span a plane, so two stains cannot be told apart"
                    .to_string()
            }
            Degenerate::ParallelStains => {
                "the two extreme stain directions coincide: the image shows \
                 only one stain"
                    .to_string()
            }
            Degenerate::NoConcentration => {
                "the 99th-percentile stain concentration is not positive: \
                 the image has almost no stain"
                    .to_string()
            }
        }
    }
}

fn check_pixels(arg: &'static str, pixels: &[u8]) -> Result<()> {
    if pixels.is_empty() || !pixels.len().is_multiple_of(3) {
        return Err(Error::invalid(
            arg,
            format!(
                "expected RGB pixels (a multiple of 3 bytes, at least one pixel), got {} bytes",
                pixels.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    /// A synthetic H&E-like image: two stains mixed with random concentrations, plus background.
    pub(crate) fn synthetic(n: usize, seed: u64) -> Vec<u8> {
        let h = [0.65, 0.70, 0.29];
        let e = [0.07, 0.99, 0.11];
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64) / ((1u64 << 31) as f64)
        };
        let mut out = Vec::with_capacity(n * 3);
        for i in 0..n {
            if i % 10 == 0 {
                out.extend_from_slice(&[236, 238, 235]);
                continue;
            }
            let ch = 1.5 * rnd();
            let ce = 1.0 * rnd();
            for c in 0..3 {
                let od = h[c] * ch + e[c] * ce;
                let v = (240.0 * (-od).exp() - 1.0).clamp(0.0, 255.0);
                out.push(v as u8);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_target_is_a_numerical_error() {
        let white = vec![250u8; 300];
        let e = macenko_fit(&white, &MacenkoParams::default());
        assert!(matches!(e, Err(Error::Numerical(ref m)) if m.contains("too little tissue")));
        let flat: Vec<u8> = std::iter::repeat_n([120u8, 60, 150], 100)
            .flatten()
            .collect();
        let e = macenko_fit(&flat, &MacenkoParams::default());
        assert!(matches!(e, Err(Error::Numerical(ref m)) if m.contains("single colour")));
        let e = reinhard_fit(&flat, &ReinhardParams::default());
        assert!(matches!(e, Err(Error::Numerical(ref m)) if m.contains("single colour")));
        let bad = MacenkoParams {
            alpha: 60.0,
            ..MacenkoParams::default()
        };
        assert!(matches!(
            macenko_fit(&flat, &bad),
            Err(Error::InvalidArgument { arg: "alpha", .. })
        ));
    }
}
