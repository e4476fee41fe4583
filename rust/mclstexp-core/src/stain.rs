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
//!
//! # Reinhard (Reinhard et al., 2001; the torchstain/HistomicsTK formulation)
//! CIE LAB (sRGB, D65 white `(0.95047, 1, 1.08883)`), per-channel mean/std matching:
//! `lab' = (lab - mean) / std * target_std + target_mean`, back to sRGB, clipped to `[0, 1]`, times 255,
//! truncated to `u8`. The final sRGB gamma is applied by comparing against the 255 exact thresholds.
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

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool;

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
        if pinv_3x2(&self.stain_matrix).is_none() {
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

/// Histogram bins of [`order_stats`].
const SELECT_BINS: usize = 2048;

/// A monotone map of values onto `SELECT_BINS` bins over `[lo, hi]`; values outside the bounds go
/// to the end bins, so any bounds give exact ranks (tight bounds only make it faster).
#[derive(Clone, Copy)]
struct Binner {
    lo: f32,
    scale: f32,
}

impl Binner {
    fn new(lo: f32, hi: f32) -> Option<Self> {
        let scale = SELECT_BINS as f32 / (hi - lo);
        (hi > lo && scale.is_finite() && lo.is_finite()).then_some(Binner { lo, scale })
    }

    #[inline]
    fn bin(&self, v: f32) -> usize {
        // `max`/`min` return the non-NaN operand, so `x` is a number in [0, SELECT_BINS - 1].
        let x = ((v - self.lo) * self.scale)
            .max(0.0)
            .min((SELECT_BINS - 1) as f32);
        // SAFETY: `x` is finite and within [0, 2047] (see above), which `u32` represents exactly,
        // so the conversion is defined.
        (unsafe { x.to_int_unchecked::<u32>() }) as usize
    }
}

/// Adds the second half of a `2 * SELECT_BINS` histogram into the first and drops it.
fn merge_halves(hist: &mut Vec<u32>) {
    if hist.len() == 2 * SELECT_BINS {
        let (a, b) = hist.split_at_mut(SELECT_BINS);
        a.iter_mut().zip(b.iter()).for_each(|(x, y)| *x += *y);
    }
    hist.truncate(SELECT_BINS);
}

/// Counts `values` into `hist` (resized to `SELECT_BINS`).
#[cfg(test)]
fn fill_hist(values: &[f32], binner: &Binner, hist: &mut Vec<u32>) {
    hist.clear();
    hist.resize(SELECT_BINS, 0);
    for &v in values {
        hist[binner.bin(v)] += 1;
    }
}

/// The order statistics `sorted(values)[rank]` for each of `ranks` (each `< values.len()`).
///
/// A histogram over `[lo, hi]` (bounds of the values, ideally tight) finds the bin of each rank;
/// only that bin's elements are then selected. The bin map is monotone and clamps values outside
/// the bounds into the end bins, so ranks are exact whatever the bounds. `values` must be non-empty.
#[cfg(test)]
fn order_stats<const K: usize>(
    values: &[f32],
    ranks: [usize; K],
    (lo, hi): (f32, f32),
    hist: &mut Vec<u32>,
    gather: &mut Vec<f32>,
) -> [f32; K] {
    let binner = Binner::new(lo, hi);
    if let Some(b) = &binner {
        fill_hist(values, b, hist);
    }
    select_ranks(values, ranks, binner.as_ref(), hist, gather)
}

/// [`order_stats`] given the histogram of `values` under `binner` (`None`: sort instead).
fn select_ranks<const K: usize>(
    values: &[f32],
    ranks: [usize; K],
    binner: Option<&Binner>,
    hist: &[u32],
    gather: &mut Vec<f32>,
) -> [f32; K] {
    let mut out = [0f32; K];
    let binner = match binner {
        Some(b) if values.len() >= 128 && hist.len() == SELECT_BINS => b,
        _ => {
            gather.clear();
            gather.extend_from_slice(values);
            gather.sort_unstable_by(f32::total_cmp);
            for (slot, &r) in out.iter_mut().zip(ranks.iter()) {
                *slot = gather
                    .get(r.min(gather.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0.0);
            }
            return out;
        }
    };
    // (bin, rank within the bin) of every requested rank.
    let mut where_ = [(0usize, 0usize); K];
    for (slot, &r) in where_.iter_mut().zip(ranks.iter()) {
        let mut before = 0usize;
        for (b, &count) in hist.iter().enumerate() {
            let count = count as usize;
            if r < before + count || b == SELECT_BINS - 1 {
                *slot = (b, (r - before).min(count.saturating_sub(1)));
                break;
            }
            before += count;
        }
    }
    // Gather every target bin's elements in one pass. In the sorted gathered set, a bin's
    // elements follow those of the lower target bins.
    let mut bins = where_.map(|(b, _)| b);
    bins.sort_unstable();
    let mut distinct = [usize::MAX; K];
    let mut n_distinct = 0;
    for b in bins {
        if n_distinct == 0 || distinct[n_distinct - 1] != b {
            distinct[n_distinct] = b;
            n_distinct += 1;
        }
    }
    let targets = &distinct[..n_distinct];
    gather.clear();
    gather.extend(
        values
            .iter()
            .copied()
            .filter(|&v| targets.contains(&binner.bin(v))),
    );
    for (slot, &(b, within)) in out.iter_mut().zip(where_.iter()) {
        let offset: usize = targets
            .iter()
            .filter(|&&t| t < b)
            .map(|&t| hist[t] as usize)
            .sum();
        let idx = offset + within;
        if idx < gather.len() {
            let (_, v, _) = gather.select_nth_unstable_by(idx, f32::total_cmp);
            *slot = *v;
        }
    }
    out
}

/// numpy's linear-interpolation percentile position: `(lower rank, upper rank, fraction)`.
fn percentile_ranks(n: usize, q: f64) -> (usize, usize, f64) {
    let pos = q / 100.0 * (n.saturating_sub(1)) as f64;
    let lo = (pos.floor().max(0.0) as usize).min(n.saturating_sub(1));
    let t = (pos - lo as f64).max(0.0);
    (lo, (lo + 1).min(n.saturating_sub(1)), t)
}

/// numpy's default (`method="linear"`) percentile of non-empty `values`, `q` in `[0, 100]`, given
/// their histogram (see [`select_ranks`]).
fn percentile_linear(
    values: &[f32],
    q: f64,
    binner: Option<&Binner>,
    hist: &[u32],
    gather: &mut Vec<f32>,
) -> f64 {
    let (lo, hi, t) = percentile_ranks(values.len(), q);
    let [a, b] = select_ranks(values, [lo, hi], binner, hist, gather);
    if t <= 0.0 {
        a as f64
    } else {
        lerp(a as f64, b as f64, t)
    }
}

/// numpy's `_lerp`: `a + (b - a) * t`, computed from the nearer end for `t >= 0.5`.
#[inline]
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// Pseudo-angle of `(x, y)`: strictly increasing in `atan2(y, x)` over `(-pi, pi]`, range `[-2, 2]`.
#[inline]
fn pseudo_angle(x: f32, y: f32) -> f32 {
    let s = x.abs() + y.abs();
    if s == 0.0 {
        return 0.0; // atan2(0, 0) = 0
    }
    let r = x / s;
    if y >= 0.0 {
        1.0 - r
    } else {
        r - 1.0
    }
}

/// The angle a pseudo-angle stands for (inverse of [`pseudo_angle`]).
fn angle_of_pseudo(p: f64) -> f64 {
    let (r, y_sign) = if p >= 0.0 {
        (1.0 - p, 1.0)
    } else {
        (p + 1.0, -1.0)
    };
    let y = y_sign * (1.0 - r.abs()).max(0.0);
    y.atan2(r)
}

/// Eigen-decomposition of a symmetric 3 x 3 matrix by cyclic Jacobi rotations.
/// Returns eigenvalues in ascending order and the eigenvectors as the columns of `v`.
fn eigh3(a: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = a;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..64 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        let scale = a[0][0].abs() + a[1][1].abs() + a[2][2].abs();
        if off <= f64::EPSILON * 1e-3 * scale || off == 0.0 {
            break;
        }
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A <- J^T A J with the rotation in the (p, q) plane.
            for k in 0..3 {
                let akp = a[k][p];
                let akq = a[k][q];
                a[k][p] = c * akp - s * akq;
                a[k][q] = s * akp + c * akq;
            }
            for k in 0..3 {
                let apk = a[p][k];
                let aqk = a[q][k];
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in v.iter_mut() {
                let vp = row[p];
                let vq = row[q];
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| a[i][i].total_cmp(&a[j][j]));
    let values = [
        a[order[0]][order[0]],
        a[order[1]][order[1]],
        a[order[2]][order[2]],
    ];
    let mut vectors = [[0f64; 3]; 3];
    for (col, &src) in order.iter().enumerate() {
        for row in 0..3 {
            vectors[row][col] = v[row][src];
        }
    }
    (values, vectors)
}

/// Least-squares pseudo-inverse `(H^T H)^-1 H^T` of a `3 x 2` matrix; `None` when its columns are
/// (nearly) parallel or not unit-ish.
fn pinv_3x2(h: &[[f64; 2]; 3]) -> Option<[[f64; 3]; 2]> {
    let mut g = [[0f64; 2]; 2];
    for row in h {
        g[0][0] += row[0] * row[0];
        g[0][1] += row[0] * row[1];
        g[1][1] += row[1] * row[1];
    }
    let det = g[0][0] * g[1][1] - g[0][1] * g[0][1];
    let norm = g[0][0] * g[1][1];
    if !(det.is_finite() && norm > 0.0 && det > MIN_STAIN_GRAM_DET * norm) {
        return None;
    }
    let inv = [
        [g[1][1] / det, -g[0][1] / det],
        [-g[0][1] / det, g[0][0] / det],
    ];
    let mut p = [[0f64; 3]; 2];
    for i in 0..2 {
        for (j, row) in h.iter().enumerate() {
            p[i][j] = inv[i][0] * row[0] + inv[i][1] * row[1];
        }
    }
    if p.iter().flatten().all(|v| v.is_finite()) {
        Some(p)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Macenko
// ---------------------------------------------------------------------------------------------

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

/// Reusable per-thread buffers.
#[derive(Default)]
struct Scratch {
    tissue: Vec<[u8; 3]>,
    angles: Vec<f32>,
    c0: Vec<f32>,
    c1: Vec<f32>,
    hist: Vec<u32>,
    hist1: Vec<u32>,
    gather: Vec<f32>,
}

/// A patch's own stain estimate.
struct Estimate {
    stain_matrix: [[f64; 2]; 3],
    max_conc: [f64; 2],
    pinv: [[f64; 3]; 2],
}

/// `min(max(v, 0), 255)` truncated to a byte; NaN -> 0.
#[inline]
fn byte_trunc(v: f32) -> u8 {
    // `max`/`min` return the non-NaN operand, so `x` is a number in [0, 255].
    let x = v.max(0.0).min(255.0);
    // SAFETY: `x` is finite and within [0, 255], so truncating it to `u8` is defined.
    unsafe { x.to_int_unchecked::<u8>() }
}

/// Fills 3 tables `t[j][v] = w[j] * od[v]`.
fn weighted_tables(w: [f64; 3], od: &[f64; 256]) -> [[f32; 256]; 3] {
    let mut t = [[0f32; 256]; 3];
    for j in 0..3 {
        for v in 0..256 {
            t[j][v] = (w[j] * od[v]) as f32;
        }
    }
    t
}

/// Bounds of every [`table_dot`] of `t` (same f32 summation order, so they hold exactly).
fn table_bounds(t: &[[f32; 256]; 3]) -> (f32, f32) {
    let lo = |j: usize| t[j].iter().copied().fold(f32::INFINITY, f32::min);
    let hi = |j: usize| t[j].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (lo(0) + lo(1) + lo(2), hi(0) + hi(1) + hi(2))
}

#[inline]
fn table_dot(t: &[[f32; 256]; 3], px: &[u8]) -> f32 {
    t[0][px[0] as usize] + t[1][px[1] as usize] + t[2][px[2] as usize]
}

/// Steps 1-6 of the module docs on `pixels` (`[n, 3]` bytes).
fn macenko_estimate(
    pixels: &[u8],
    params: &MacenkoParams,
    table: &OdTable,
    scratch: &mut Scratch,
) -> std::result::Result<Estimate, Degenerate> {
    let n_pixels = pixels.len() / 3;
    // 1-2: tissue pixels and the sums of their ODs (f64 accumulators).
    scratch.tissue.clear();
    let od = &table.od;
    let mut s = [0f64; 3];
    let mut ss = [0f64; 6]; // rr rg rb gg gb bb
    for px in pixels.chunks_exact(3) {
        if table.is_tissue(px) {
            scratch.tissue.push([px[0], px[1], px[2]]);
            let (a, b, c) = (od[px[0] as usize], od[px[1] as usize], od[px[2] as usize]);
            s[0] += a;
            s[1] += b;
            s[2] += c;
            ss[0] += a * a;
            ss[1] += a * b;
            ss[2] += a * c;
            ss[3] += b * b;
            ss[4] += b * c;
            ss[5] += c * c;
        }
    }
    let m = scratch.tissue.len();
    let needed = needed_tissue(n_pixels, params.min_tissue).max(2);
    if m < needed {
        return Err(Degenerate::TooLittleTissue { found: m, needed });
    }
    // 3: covariance (ddof = 1) and its two main eigenvectors.
    let nf = m as f64;
    let cov_entry = |sxy: f64, sx: f64, sy: f64| (sxy - sx * sy / nf) / (nf - 1.0);
    let c00 = cov_entry(ss[0], s[0], s[0]);
    let c01 = cov_entry(ss[1], s[0], s[1]);
    let c02 = cov_entry(ss[2], s[0], s[2]);
    let c11 = cov_entry(ss[3], s[1], s[1]);
    let c12 = cov_entry(ss[4], s[1], s[2]);
    let c22 = cov_entry(ss[5], s[2], s[2]);
    let cov = [[c00, c01, c02], [c01, c11, c12], [c02, c12, c22]];
    if cov.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Degenerate::SingleColour);
    }
    let (values, vectors) = eigh3(cov);
    if !(values[1] > MIN_EIGENVALUE) {
        return Err(Degenerate::SingleColour);
    }
    let mut e_second = [vectors[0][1], vectors[1][1], vectors[2][1]];
    let mut e_main = [vectors[0][2], vectors[1][2], vectors[2][2]];
    for e in [&mut e_second, &mut e_main] {
        if e[0] + e[1] + e[2] < 0.0 {
            e.iter_mut().for_each(|x| *x = -*x);
        }
    }
    // 4: robust extreme angles of the tissue ODs in that plane.
    let tx = weighted_tables(e_second, od);
    let ty = weighted_tables(e_main, od);
    // Pseudo-angles lie in [-2, 2]; their histogram is filled on the way.
    let angle_bins = Binner::new(-2.0, 2.0);
    scratch.angles.clear();
    scratch.hist.clear();
    scratch.hist.resize(2 * SELECT_BINS, 0);
    if let Some(binner) = &angle_bins {
        let hist = &mut scratch.hist;
        // Even and odd elements count into separate halves: neighbouring pixels often share a
        // bin, and one counter would serialise on its own increments.
        scratch
            .angles
            .extend(scratch.tissue.iter().enumerate().map(|(i, px)| {
                let p = pseudo_angle(table_dot(&tx, px), table_dot(&ty, px));
                hist[binner.bin(p) + (i & 1) * SELECT_BINS] += 1;
                p
            }));
    }
    merge_halves(&mut scratch.hist);
    let (lo, hi) = angle_percentiles(
        &scratch.angles,
        params.alpha,
        100.0 - params.alpha,
        angle_bins.as_ref(),
        &scratch.hist,
        &mut scratch.gather,
    );
    let direction = |phi: f64| -> [f64; 3] {
        let (c, s) = (phi.cos(), phi.sin());
        [
            e_second[0] * c + e_main[0] * s,
            e_second[1] * c + e_main[1] * s,
            e_second[2] * c + e_main[2] * s,
        ]
    };
    let v_min = direction(lo);
    let v_max = direction(hi);
    // 5: hematoxylin first (larger red OD).
    let (h, e) = if v_min[0] > v_max[0] {
        (v_min, v_max)
    } else {
        (v_max, v_min)
    };
    let stain_matrix = [[h[0], e[0]], [h[1], e[1]], [h[2], e[2]]];
    let pinv = pinv_3x2(&stain_matrix).ok_or(Degenerate::ParallelStains)?;
    // 6: concentrations of all pixels and their 99th percentiles.
    let t0 = weighted_tables(pinv[0], od);
    let t1 = weighted_tables(pinv[1], od);
    let (b0, b1) = (table_bounds(&t0), table_bounds(&t1));
    let (bin0, bin1) = (Binner::new(b0.0, b0.1), Binner::new(b1.0, b1.1));
    scratch.c0.resize(n_pixels, 0.0);
    scratch.c1.resize(n_pixels, 0.0);
    for h in [&mut scratch.hist, &mut scratch.hist1] {
        h.clear();
        h.resize(2 * SELECT_BINS, 0);
    }
    match (&bin0, &bin1) {
        (Some(bin0), Some(bin1)) => {
            let (h0, h1) = (&mut scratch.hist, &mut scratch.hist1);
            for (i, ((px, a), b)) in pixels
                .chunks_exact(3)
                .zip(scratch.c0.iter_mut())
                .zip(scratch.c1.iter_mut())
                .enumerate()
            {
                *a = table_dot(&t0, px);
                *b = table_dot(&t1, px);
                let half = (i & 1) * SELECT_BINS;
                h0[bin0.bin(*a) + half] += 1;
                h1[bin1.bin(*b) + half] += 1;
            }
        }
        _ => {
            for ((px, a), b) in pixels
                .chunks_exact(3)
                .zip(scratch.c0.iter_mut())
                .zip(scratch.c1.iter_mut())
            {
                *a = table_dot(&t0, px);
                *b = table_dot(&t1, px);
            }
        }
    }
    merge_halves(&mut scratch.hist);
    merge_halves(&mut scratch.hist1);
    let (both, gather) = (bin0.is_some() && bin1.is_some(), &mut scratch.gather);
    let max_conc = [
        percentile_linear(
            &scratch.c0,
            99.0,
            bin0.as_ref().filter(|_| both),
            &scratch.hist,
            gather,
        ),
        percentile_linear(
            &scratch.c1,
            99.0,
            bin1.as_ref().filter(|_| both),
            &scratch.hist1,
            gather,
        ),
    ];
    // A patch needs a clearly positive maximum: dividing by ~0 would blow up the colours.
    if max_conc.iter().any(|v| !(v.is_finite() && *v > 1e-6)) {
        return Err(Degenerate::NoConcentration);
    }
    Ok(Estimate {
        stain_matrix,
        max_conc,
        pinv,
    })
}

/// The angles at percentiles `q_low` and `q_high` of the angles whose pseudo-angles are `pseudo`.
fn angle_percentiles(
    pseudo: &[f32],
    q_low: f64,
    q_high: f64,
    binner: Option<&Binner>,
    hist: &[u32],
    gather: &mut Vec<f32>,
) -> (f64, f64) {
    let (l0, l1, lt) = percentile_ranks(pseudo.len(), q_low);
    let (h0, h1, ht) = percentile_ranks(pseudo.len(), q_high);
    let [a0, a1, b0, b1] = select_ranks(pseudo, [l0, l1, h0, h1], binner, hist, gather);
    let at = |x: f32, y: f32, t: f64| {
        let first = angle_of_pseudo(x as f64);
        if t <= 0.0 {
            first
        } else {
            lerp(first, angle_of_pseudo(y as f64), t)
        }
    };
    (at(a0, a1, lt), at(b0, b1, ht))
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

/// Fits a Macenko target on `pixels` (`[n, 3]` RGB bytes: one image or many patches pooled).
///
/// Errors: bad parameters -> `InvalidArgument`; an image that cannot be fitted (background, a
/// single colour, a single stain) -> `Numerical` saying why.
pub fn macenko_fit(pixels: &[u8], params: &MacenkoParams) -> Result<MacenkoTarget> {
    params.validate()?;
    check_pixels("image", pixels)?;
    let table = OdTable::new(params.io, params.beta);
    let mut scratch = Scratch::default();
    let est = macenko_estimate(pixels, params, &table, &mut scratch).map_err(|why| {
        Error::Numerical(format!(
            "cannot fit a Macenko target on this image: {}",
            why.explain()
        ))
    })?;
    Ok(MacenkoTarget {
        stain_matrix: est.stain_matrix,
        max_conc: est.max_conc,
    })
}

fn check_batch(arg: &'static str, len: usize, n: usize, pixels: usize) -> Result<usize> {
    let want = n
        .checked_mul(pixels)
        .and_then(|v| v.checked_mul(3))
        .ok_or_else(|| Error::invalid(arg, "shape is too large"))?;
    if len != want {
        return Err(Error::invalid(
            arg,
            format!(
                "expected {n} patches x {pixels} pixels x 3 channels = {want} bytes, got {len}"
            ),
        ));
    }
    Ok(want)
}

/// Splits an optional output buffer into one optional chunk per patch.
fn optional_chunks<T>(buf: Option<&mut [T]>, chunk: usize, n: usize) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(b) if chunk > 0 => b.chunks_mut(chunk).map(Some).collect(),
        _ => (0..n).map(|_| None).collect(),
    }
}

/// Normalises a batch of `n` patches of `pixels` pixels each (`[n, pixels, 3]` bytes) to `target`.
///
/// `out` receives the normalised patches (same layout). `conc`, when given (`n * pixels * 2`
/// floats, `[n, pixels, 2]`), receives the scaled H and E concentrations the patch was re-composed
/// from; for a skipped patch, its concentrations under the target's stain matrix, unscaled.
/// Returns one flag per patch: `true` when the patch was copied unchanged (see module docs).
#[allow(clippy::too_many_arguments)]
pub fn macenko_transform(
    patches: &[u8],
    n: usize,
    pixels: usize,
    target: &MacenkoTarget,
    params: &MacenkoParams,
    out: &mut [u8],
    conc: Option<&mut [f32]>,
    n_threads: Option<usize>,
) -> Result<Vec<bool>> {
    params.validate()?;
    target.validate()?;
    let total = check_batch("patches", patches.len(), n, pixels)?;
    if out.len() != total {
        return Err(Error::invalid("out", "must have the same size as patches"));
    }
    if let Some(c) = &conc {
        if c.len() != n * pixels * 2 {
            return Err(Error::invalid("conc", "must hold n x pixels x 2 floats"));
        }
    }
    if n == 0 || pixels == 0 {
        return Ok(vec![false; n]);
    }
    let table = OdTable::new(params.io, params.beta);
    let target_pinv = pinv_3x2(&target.stain_matrix)
        .ok_or_else(|| Error::invalid("stain_matrix", "its two columns (H and E) are parallel"))?;
    let conc_chunks = optional_chunks(conc, 2 * pixels, n);
    let mut skipped = vec![false; n];
    pool::install(n_threads, || {
        out.par_chunks_mut(3 * pixels)
            .zip(patches.par_chunks(3 * pixels))
            .zip(conc_chunks.into_par_iter())
            .zip(skipped.par_iter_mut())
            .for_each_init(Scratch::default, |scratch, (((dst, src), c), flag)| {
                *flag = macenko_one(src, dst, c, target, &target_pinv, params, &table, scratch);
            });
    })?;
    Ok(skipped)
}

/// Normalises one patch; returns `true` when it was skipped (copied unchanged).
#[allow(clippy::too_many_arguments)]
fn macenko_one(
    src: &[u8],
    dst: &mut [u8],
    conc: Option<&mut [f32]>,
    target: &MacenkoTarget,
    target_pinv: &[[f64; 3]; 2],
    params: &MacenkoParams,
    table: &OdTable,
    scratch: &mut Scratch,
) -> bool {
    let od = &table.od;
    let est = match macenko_estimate(src, params, table, scratch) {
        Ok(est) => est,
        Err(_) => {
            dst.copy_from_slice(src);
            if let Some(c) = conc {
                let t0 = weighted_tables(target_pinv[0], od);
                let t1 = weighted_tables(target_pinv[1], od);
                for (px, cc) in src.chunks_exact(3).zip(c.chunks_exact_mut(2)) {
                    cc[0] = table_dot(&t0, px);
                    cc[1] = table_dot(&t1, px);
                }
            }
            return true;
        }
    };
    let scale = [
        target.max_conc[0] / est.max_conc[0],
        target.max_conc[1] / est.max_conc[1],
    ];
    // Output log-intensity of channel k = -sum_j mix[k][j] * od[v_j].
    let mut mix = [[0f64; 3]; 3];
    for (k, row) in mix.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            *slot = target.stain_matrix[k][0] * scale[0] * est.pinv[0][j]
                + target.stain_matrix[k][1] * scale[1] * est.pinv[1][j];
        }
    }
    let od_max = od[0].abs().max(od[255].abs());
    let widest = mix.iter().flatten().fold(0f64, |acc, v| acc.max(v.abs())) * od_max;
    if widest <= MAX_TABLE_LOG {
        // exp(-mix * od) per byte value, `io` folded into the first table.
        let mut lut = [[[0f32; 256]; 3]; 3];
        for k in 0..3 {
            for j in 0..3 {
                let pre = if j == 0 { params.io } else { 1.0 };
                for v in 0..256 {
                    lut[k][j][v] = (pre * (-mix[k][j] * od[v]).exp()) as f32;
                }
            }
        }
        for (s, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
            let (r, g, b) = (s[0] as usize, s[1] as usize, s[2] as usize);
            for k in 0..3 {
                let value = lut[k][0][r] * lut[k][1][g] * lut[k][2][b];
                // Values above 255 clip (as `Inorm[Inorm > 255] = 255`), then truncate.
                d[k] = byte_trunc(value);
            }
        }
    } else {
        let logs: [[[f32; 256]; 3]; 3] = [
            weighted_tables(mix[0], od),
            weighted_tables(mix[1], od),
            weighted_tables(mix[2], od),
        ];
        let io = params.io;
        for (s, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
            for k in 0..3 {
                let value = io * (-(table_dot(&logs[k], s) as f64)).exp();
                d[k] = value.min(255.0) as u8;
            }
        }
    }
    if let Some(c) = conc {
        let t0 = weighted_tables(
            [
                est.pinv[0][0] * scale[0],
                est.pinv[0][1] * scale[0],
                est.pinv[0][2] * scale[0],
            ],
            od,
        );
        let t1 = weighted_tables(
            [
                est.pinv[1][0] * scale[1],
                est.pinv[1][1] * scale[1],
                est.pinv[1][2] * scale[1],
            ],
            od,
        );
        for (px, cc) in src.chunks_exact(3).zip(c.chunks_exact_mut(2)) {
            cc[0] = table_dot(&t0, px);
            cc[1] = table_dot(&t1, px);
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Reinhard
// ---------------------------------------------------------------------------------------------

const RGB2XYZ: [[f64; 3]; 3] = [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
];
const WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];
const GAMMA_BINS: usize = 4096;

/// sRGB <-> CIE LAB with the constants above.
struct Lab {
    /// Linear RGB per byte value.
    lin: [f32; 256],
    /// RGB -> XYZ / white, row-major.
    fwd: [[f32; 3]; 3],
    /// XYZ * white -> linear RGB, row-major.
    inv: [[f32; 3]; 3],
    /// `thresholds[k]`: smallest linear value whose sRGB byte is `>= k` (k = 1..=255);
    /// `thresholds[256] = +inf`. Folded into `coarse`; kept for the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    thresholds: [f32; 257],
    /// For the bin starting at `i / GAMMA_BINS` (`i = 0..=GAMMA_BINS`; values above 1 use the
    /// last): the next threshold and the byte of the bin start, side by side (one load).
    coarse: [(f32, u8); GAMMA_BINS + 1],
}

fn srgb_to_linear(c: f64) -> f64 {
    if c > 0.04045 {
        ((c + 0.055) / 1.055).powf(2.4)
    } else {
        c / 12.92
    }
}

fn invert3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut inv = [[0f64; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            let (a0, a1) = ((j + 1) % 3, (j + 2) % 3);
            let (b0, b1) = ((i + 1) % 3, (i + 2) % 3);
            *slot = (m[a0][b0] * m[a1][b1] - m[a0][b1] * m[a1][b0]) / det;
        }
    }
    inv
}

impl Lab {
    fn new() -> Self {
        let mut lin = [0f32; 256];
        for (v, slot) in lin.iter_mut().enumerate() {
            *slot = srgb_to_linear(v as f64 / 255.0) as f32;
        }
        let mut fwd = [[0f32; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                fwd[i][j] = (RGB2XYZ[i][j] / WHITE[i]) as f32;
            }
        }
        let m_inv = invert3(&RGB2XYZ);
        let mut inv = [[0f32; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                inv[i][j] = (m_inv[i][j] * WHITE[j]) as f32;
            }
        }
        // sRGB gamma: g(l) = 12.92 l for l <= 0.0031308, else 1.055 l^(1/2.4) - 0.055.
        let mut thresholds = [f32::INFINITY; 257];
        thresholds[0] = f32::NEG_INFINITY;
        for (k, slot) in thresholds.iter_mut().enumerate().take(256).skip(1) {
            let s = k as f64 / 255.0;
            let l = if s / 12.92 <= 0.0031308 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            };
            // Smallest f32 whose gamma, computed in f64, reaches k.
            let mut t = l as f32;
            while t > 0.0 && gamma_byte(f32_prev(t) as f64) >= k {
                t = f32_prev(t);
            }
            while gamma_byte(t as f64) < k {
                t = f32_next(t);
            }
            *slot = t;
        }
        let mut coarse = [(f32::INFINITY, 0u8); GAMMA_BINS + 1];
        for (i, slot) in coarse.iter_mut().enumerate() {
            let start = i as f32 / GAMMA_BINS as f32;
            // At most 255 thresholds exist, so this fits a byte.
            let below = thresholds[1..256]
                .iter()
                .filter(|&&t| t <= start)
                .count()
                .min(255);
            *slot = (thresholds[below + 1], below as u8);
        }
        Lab {
            lin,
            fwd,
            inv,
            thresholds,
            coarse,
        }
    }

    #[inline]
    fn to_lab(&self, px: &[u8]) -> [f32; 3] {
        let r = self.lin[px[0] as usize];
        let g = self.lin[px[1] as usize];
        let b = self.lin[px[2] as usize];
        let f = |row: &[f32; 3]| lab_f(row[0] * r + row[1] * g + row[2] * b);
        let fx = f(&self.fwd[0]);
        let fy = f(&self.fwd[1]);
        let fz = f(&self.fwd[2]);
        [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
    }

    #[inline]
    fn to_rgb(&self, lab: [f32; 3], out: &mut [u8]) {
        let fy = (lab[0] + 16.0) * (1.0 / 116.0);
        let fx = lab[1] * (1.0 / 500.0) + fy;
        let fz = fy - lab[2] * (1.0 / 200.0);
        let (x, y, z) = (lab_f_inv(fx), lab_f_inv(fy), lab_f_inv(fz));
        for (k, slot) in out.iter_mut().enumerate().take(3) {
            let row = &self.inv[k];
            *slot = self.quantize(row[0] * x + row[1] * y + row[2] * z);
        }
    }

    /// `floor(255 * clip(gamma(l), 0, 1))` by threshold comparison; NaN -> 0.
    ///
    /// A bin of the coarse table is narrower than the gap between two thresholds (checked in
    /// `Lab::new`), so one comparison with the next threshold finishes the job, without branches.
    #[inline]
    fn quantize(&self, l: f32) -> u8 {
        // `max`/`min` return the non-NaN operand: NaN and negatives -> 0, large -> GAMMA_BINS.
        let x = (l * GAMMA_BINS as f32).max(0.0).min(GAMMA_BINS as f32);
        // SAFETY: `x` is finite and within [0, GAMMA_BINS], which `u32` represents exactly.
        let bin = (unsafe { x.to_int_unchecked::<u32>() }) as usize;
        let (next, v) = self.coarse[bin];
        v + (l >= next) as u8
    }
}

fn gamma_byte(l: f64) -> usize {
    let g = if l > 0.0031308 {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    } else {
        12.92 * l
    };
    (g.clamp(0.0, 1.0) * 255.0) as usize
}

fn f32_next(t: f32) -> f32 {
    if t == 0.0 {
        return f32::from_bits(1);
    }
    if t > 0.0 {
        f32::from_bits(t.to_bits() + 1)
    } else {
        f32::from_bits(t.to_bits() - 1)
    }
}

fn f32_prev(t: f32) -> f32 {
    if t > 0.0 {
        f32::from_bits(t.to_bits() - 1)
    } else {
        -f32_next(-t)
    }
}

/// Cube root of a positive, finite, normal `x` to f32 precision: a bit-level first guess and two
/// Halley steps (libm's `cbrtf` costs several times more and dominates the LAB conversion).
#[inline]
fn fast_cbrt(x: f32) -> f32 {
    let mut y = f32::from_bits(x.to_bits() / 3 + 709_921_077);
    for _ in 0..2 {
        let y3 = y * y * y;
        y *= (y3 + 2.0 * x) / (2.0 * y3 + x);
    }
    y
}

#[inline]
fn lab_f(t: f32) -> f32 {
    if t > 0.008856 {
        fast_cbrt(t)
    } else {
        7.787 * t + 16.0 / 116.0
    }
}

#[inline]
fn lab_f_inv(f: f32) -> f32 {
    let cube = f * f * f;
    let linear = (f - 16.0 / 116.0) * (1.0 / 7.787);
    if f > 0.206_896_6 {
        cube
    } else {
        linear
    }
}

/// LAB of every pixel into `buf`, and the mean and population std of each channel.
fn lab_stats(pixels: &[u8], lab: &Lab, buf: &mut Vec<[f32; 3]>) -> ([f64; 3], [f64; 3]) {
    buf.clear();
    buf.extend(pixels.chunks_exact(3).map(|px| lab.to_lab(px)));
    let n = buf.len().max(1) as f64;
    // Sums in f64 per block of f32 partial sums (LAB values are at most a few hundred, so a block
    // of 256 loses nothing that matters and the inner loop stays in registers).
    // Shifted by the first pixel: no cancellation, and exactly 0 for a single-colour patch.
    let shift = buf.first().copied().unwrap_or([0.0; 3]);
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    for block in buf.chunks(256) {
        let mut bs = [0f32; 3];
        let mut bq = [0f32; 3];
        for v in block {
            for c in 0..3 {
                let d = v[c] - shift[c];
                bs[c] += d;
                bq[c] += d * d;
            }
        }
        for c in 0..3 {
            sum[c] += bs[c] as f64;
            sq[c] += bq[c] as f64;
        }
    }
    let mut mean = [0f64; 3];
    let mut std = [0f64; 3];
    for c in 0..3 {
        let m = sum[c] / n;
        std[c] = (sq[c] / n - m * m).max(0.0).sqrt();
        mean[c] = m + shift[c] as f64;
    }
    (mean, std)
}

/// Fits a Reinhard target (LAB mean and std over all `pixels`, `[n, 3]` RGB bytes).
///
/// Errors: bad parameters -> `InvalidArgument`; too little tissue or a (nearly) single colour ->
/// `Numerical` saying why.
pub fn reinhard_fit(pixels: &[u8], params: &ReinhardParams) -> Result<ReinhardTarget> {
    params.validate()?;
    check_pixels("image", pixels)?;
    let table = OdTable::new(params.io, params.beta);
    let n_pixels = pixels.len() / 3;
    let found = table.count_tissue(pixels);
    let needed = needed_tissue(n_pixels, params.min_tissue);
    if found < needed {
        return Err(Error::Numerical(format!(
            "cannot fit a Reinhard target on this image: {}",
            Degenerate::TooLittleTissue { found, needed }.explain()
        )));
    }
    let lab = Lab::new();
    let mut buf = Vec::new();
    let (mean, std) = lab_stats(pixels, &lab, &mut buf);
    if std.iter().any(|s| !(*s >= MIN_LAB_STD)) {
        return Err(Error::Numerical(format!(
            "cannot fit a Reinhard target on this image: it is (nearly) a single colour \
             (LAB std {std:?}, each must be >= {MIN_LAB_STD})"
        )));
    }
    Ok(ReinhardTarget { mean, std })
}

/// Normalises a batch of `n` patches (`[n, pixels, 3]` bytes) to a Reinhard `target` into `out`.
/// Returns one flag per patch: `true` when the patch was copied unchanged.
pub fn reinhard_transform(
    patches: &[u8],
    n: usize,
    pixels: usize,
    target: &ReinhardTarget,
    params: &ReinhardParams,
    out: &mut [u8],
    n_threads: Option<usize>,
) -> Result<Vec<bool>> {
    params.validate()?;
    target.validate()?;
    let total = check_batch("patches", patches.len(), n, pixels)?;
    if out.len() != total {
        return Err(Error::invalid("out", "must have the same size as patches"));
    }
    if n == 0 || pixels == 0 {
        return Ok(vec![false; n]);
    }
    let table = OdTable::new(params.io, params.beta);
    let lab = Lab::new();
    let needed = needed_tissue(pixels, params.min_tissue);
    let mut skipped = vec![false; n];
    pool::install(n_threads, || {
        out.par_chunks_mut(3 * pixels)
            .zip(patches.par_chunks(3 * pixels))
            .zip(skipped.par_iter_mut())
            .for_each_init(Vec::new, |buf, ((dst, src), flag)| {
                *flag = reinhard_one(src, dst, target, &table, &lab, needed, buf);
            });
    })?;
    Ok(skipped)
}

fn reinhard_one(
    src: &[u8],
    dst: &mut [u8],
    target: &ReinhardTarget,
    table: &OdTable,
    lab: &Lab,
    needed: usize,
    buf: &mut Vec<[f32; 3]>,
) -> bool {
    if table.count_tissue(src) < needed {
        dst.copy_from_slice(src);
        return true;
    }
    let (mean, std) = lab_stats(src, lab, buf);
    if std.iter().any(|s| !(*s >= MIN_LAB_STD)) {
        dst.copy_from_slice(src);
        return true;
    }
    let mut gain = [0f32; 3];
    let mut offset = [0f32; 3];
    for c in 0..3 {
        let g = target.std[c] / std[c];
        gain[c] = g as f32;
        offset[c] = (target.mean[c] - mean[c] * g) as f32;
    }
    for (v, d) in buf.iter().zip(dst.chunks_exact_mut(3)) {
        let l = [
            v[0] * gain[0] + offset[0],
            v[1] * gain[1] + offset[1],
            v[2] * gain[2] + offset[2],
        ];
        lab.to_rgb(l, d);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic H&E-like image: two stains mixed with random concentrations, plus background.
    fn synthetic(n: usize, seed: u64) -> Vec<u8> {
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

    #[test]
    fn eigh3_diagonalises() {
        let a = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (w, v) = eigh3(a);
        assert!(w[0] <= w[1] && w[1] <= w[2]);
        for col in 0..3 {
            for row in 0..3 {
                let av: f64 = (0..3).map(|k| a[row][k] * v[k][col]).sum();
                assert!((av - w[col] * v[row][col]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn pseudo_angle_is_monotone_and_invertible() {
        let mut last = f32::NEG_INFINITY;
        for i in 1..1000 {
            let phi = -std::f64::consts::PI + i as f64 * 2.0 * std::f64::consts::PI / 1000.0;
            let p = pseudo_angle(phi.cos() as f32, phi.sin() as f32);
            assert!(p > last);
            last = p;
            assert!((angle_of_pseudo(p as f64) - phi).abs() < 1e-5);
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let (mut h, mut g) = (Vec::new(), Vec::new());
        let v: Vec<f32> = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        let binner = Binner::new(0.0, 6.0);
        if let Some(b) = &binner {
            fill_hist(&v, b, &mut h);
        }
        let b = binner.as_ref();
        assert_eq!(percentile_linear(&v, 50.0, b, &h, &mut g), 3.0);
        assert!((percentile_linear(&v, 99.0, b, &h, &mut g) - 4.96).abs() < 1e-9);
        assert!((percentile_linear(&v, 1.0, b, &h, &mut g) - 1.04).abs() < 1e-9);
    }

    #[test]
    fn order_stats_match_a_full_sort() {
        let (mut h, mut g) = (Vec::new(), Vec::new());
        let mut state = 12345u64;
        for case in 0..20 {
            let n = 1 + case * 997;
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    // Heavy ties and a long tail, like real concentrations.
                    let u = ((state >> 40) as f32) / (1u64 << 24) as f32;
                    if i % 3 == 0 {
                        0.25
                    } else {
                        u * u * u * 10.0 - 1.0
                    }
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            let ranks = [0, n / 100, n / 2, n - 1 - n / 100, n - 1];
            // Tight, loose and wrong bounds all give exact ranks.
            for bounds in [(-1.0, 9.0), (-5.0, 50.0), (0.0, 1.0)] {
                let got = order_stats(&v, ranks, bounds, &mut h, &mut g);
                for (r, x) in ranks.iter().zip(got) {
                    assert_eq!(sorted[*r], x, "n {n} rank {r} bounds {bounds:?}");
                }
            }
        }
    }

    #[test]
    fn macenko_recovers_synthetic_stains() -> Result<()> {
        let img = synthetic(20_000, 1);
        let t = macenko_fit(&img, &MacenkoParams::default())?;
        let h = [0.65, 0.70, 0.29];
        let hn = h.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos_h: f64 = (0..3).map(|k| t.stain_matrix[k][0] * h[k] / hn).sum();
        assert!(cos_h > 0.99, "H direction off: {:?}", t.stain_matrix);
        assert!(t.max_conc[0] > 0.0 && t.max_conc[1] > 0.0);
        Ok(())
    }

    #[test]
    fn macenko_self_normalisation_is_near_identity() -> Result<()> {
        let img = synthetic(4096, 2);
        let params = MacenkoParams::default();
        let t = macenko_fit(&img, &params)?;
        let mut out = vec![0u8; img.len()];
        let skipped = macenko_transform(&img, 1, 4096, &t, &params, &mut out, None, Some(1))?;
        assert_eq!(skipped, vec![false]);
        let diff: f64 = img
            .iter()
            .zip(&out)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / img.len() as f64;
        assert!(diff < 1.5, "mean abs diff {diff}");
        Ok(())
    }

    #[test]
    fn degenerate_patches_are_skipped_not_nan() -> Result<()> {
        let img = synthetic(20_000, 3);
        let params = MacenkoParams::default();
        let t = macenko_fit(&img, &params)?;
        let px = 64 * 64;
        let mut batch = Vec::new();
        batch.extend(std::iter::repeat_n(255u8, px * 3)); // white
        batch.extend(std::iter::repeat_n(0u8, px * 3)); // black
        batch.extend(std::iter::repeat_n([120u8, 60, 150], px).flatten()); // one colour
        batch.extend_from_slice(&img[..px * 3]); // tissue
        let mut out = vec![0u8; batch.len()];
        let mut conc = vec![0f32; 4 * px * 2];
        let skipped = macenko_transform(
            &batch,
            4,
            px,
            &t,
            &params,
            &mut out,
            Some(&mut conc),
            Some(2),
        )?;
        assert_eq!(skipped, vec![true, true, true, false]);
        assert_eq!(&out[..3 * px * 3], &batch[..3 * px * 3]);
        assert!(conc.iter().all(|v| v.is_finite()));
        Ok(())
    }

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

    #[test]
    fn lab_round_trip_is_exact_on_bytes() {
        let lab = Lab::new();
        let mut worst = 0i32;
        for r in (0..256).step_by(5) {
            for g in (0..256).step_by(7) {
                for b in (0..256).step_by(3) {
                    let px = [r as u8, g as u8, b as u8];
                    let l = lab.to_lab(&px);
                    let mut back = [0u8; 3];
                    lab.to_rgb(l, &mut back);
                    for c in 0..3 {
                        // Truncation after a round trip can lose one level.
                        worst = worst.max((back[c] as i32 - px[c] as i32).abs());
                    }
                }
            }
        }
        assert!(worst <= 1, "worst round-trip error {worst}");
    }

    #[test]
    fn fast_cbrt_is_accurate() {
        for i in 0..100_000 {
            let x = 0.008 + i as f32 * 2e-5;
            let (a, b) = (fast_cbrt(x), x.cbrt());
            assert!((a - b).abs() <= 2.0 * f32::EPSILON * b, "{x}: {a} vs {b}");
        }
    }

    #[test]
    fn coarse_bins_hold_at_most_one_threshold() {
        let lab = Lab::new();
        for i in 0..GAMMA_BINS {
            let (a, b) = (
                i as f32 / GAMMA_BINS as f32,
                (i + 1) as f32 / GAMMA_BINS as f32,
            );
            let inside = lab.thresholds[1..256]
                .iter()
                .filter(|&&t| t > a && t <= b)
                .count();
            assert!(inside <= 1, "bin {i} holds {inside} thresholds");
        }
    }

    #[test]
    fn quantize_matches_the_direct_formula() {
        let lab = Lab::new();
        for i in 0..100_000 {
            let l = i as f32 / 99_999.0;
            assert_eq!(lab.quantize(l) as usize, gamma_byte(l as f64), "at {l}");
        }
    }

    #[test]
    fn reinhard_self_normalisation_is_near_identity() -> Result<()> {
        let img = synthetic(4096, 4);
        let params = ReinhardParams::default();
        let t = reinhard_fit(&img, &params)?;
        let mut out = vec![0u8; img.len()];
        let skipped = reinhard_transform(&img, 1, 4096, &t, &params, &mut out, Some(1))?;
        assert_eq!(skipped, vec![false]);
        let worst = img
            .iter()
            .zip(&out)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap_or(0);
        assert!(worst <= 1, "worst {worst}");
        Ok(())
    }
}
