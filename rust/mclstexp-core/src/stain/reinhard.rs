//! Reinhard normalisation (see the module docs of `stain`).

use rayon::prelude::*;

use super::*;
use crate::pool;
use crate::simd::{self, Isa};
use crate::view::RgbBatch;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

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
    /// last): see [`Bin`].
    coarse: [Bin; GAMMA_BINS + 1],
}

/// A bin of the coarse sRGB gamma table: the byte of the bin start and the next threshold above
/// it, side by side (`repr(C)`: one 64-bit load, `next` in the low half).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Bin {
    next: f32,
    /// In `0..=254` (`i32`: the AVX2 kernel uses it as is).
    below: i32,
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
        let mut coarse = [Bin {
            next: f32::INFINITY,
            below: 0,
        }; GAMMA_BINS + 1];
        for (i, bin) in coarse.iter_mut().enumerate() {
            let start = i as f32 / GAMMA_BINS as f32;
            // At most 255 thresholds exist, so this fits a byte.
            let below = thresholds[1..256]
                .iter()
                .filter(|&&t| t <= start)
                .count()
                .min(255);
            *bin = Bin {
                next: thresholds[below + 1],
                below: below as i32,
            };
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
        // `below <= 254`: sRGB(1.0) computes to 254.99..., so the 255 threshold lies above 1.0,
        // beyond every bin start (checked by the tests).
        let Bin { next, below } = self.coarse[bin];
        below as u8 + (l >= next) as u8
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

/// LAB of every pixel into `buf` (the layout of `isa`'s loops, see [`lab_at`]), the mean and
/// population std of each channel, and the number of pixels whose three bytes are all
/// `<= tissue_max` (`-1`: none). A level the CPU lacks runs as the best one below it.
fn lab_stats(isa: Isa, pixels: &[u8], tissue_max: i32, lab: &Lab, buf: &mut Vec<f32>) -> Stats {
    match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX-512 F and BW.
        Isa::Avx512 => unsafe { avx512::lab_stats(pixels, tissue_max, lab, buf) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::lab_stats(pixels, tissue_max, lab, buf) },
        _ => lab_stats_portable(pixels, tissue_max, lab, buf),
    }
}

/// Maps the LAB values of `buf` (from [`lab_stats`] with the same `isa`, on `dst.len() / 3`
/// pixels) by `v * gain + offset` per channel and writes them back as sRGB bytes into `dst`.
/// A level the CPU lacks runs as the best one below it (as in [`lab_stats`]).
fn apply(isa: Isa, buf: &[f32], map: &ChannelMap, lab: &Lab, dst: &mut [u8]) {
    let ChannelMap { gain, offset } = *map;
    match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `lab_stats`.
        Isa::Avx512 => unsafe { avx512::apply(buf, gain, offset, lab, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `lab_stats`.
        Isa::Avx2Fma => unsafe { avx2::apply(buf, gain, offset, lab, dst) },
        _ => {
            for (v, d) in buf.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
                let l = [
                    v[0] * gain[0] + offset[0],
                    v[1] * gain[1] + offset[1],
                    v[2] * gain[2] + offset[2],
                ];
                lab.to_rgb(l, d);
            }
        }
    }
}

/// The per-channel affine map of LAB values: `v * gain + offset`.
#[derive(Clone, Copy, Debug)]
struct ChannelMap {
    gain: [f32; 3],
    offset: [f32; 3],
}

/// What [`lab_stats`] finds.
struct Stats {
    mean: [f64; 3],
    std: [f64; 3],
    tissue: usize,
}

/// A pixel counts as tissue (see [`OdTable`]) iff its largest byte is `<= tissue_max`.
fn tissue_max(table: &OdTable) -> i32 {
    table.tissue_max.map_or(-1, i32::from)
}

/// Running sums of the LAB values of a patch, shifted by its first pixel (no cancellation, and
/// exactly 0 for a single-colour patch): f32 partial sums per block of pixels, added up in f64.
struct Moments {
    shift: [f32; 3],
    sum: [f64; 3],
    sq: [f64; 3],
}

impl Moments {
    fn new(shift: [f32; 3]) -> Self {
        Moments {
            shift,
            sum: [0.0; 3],
            sq: [0.0; 3],
        }
    }

    /// Mean and population std over `n` pixels, `tissue` of which are tissue.
    fn finish(&self, n: usize, tissue: usize) -> Stats {
        let n = n.max(1) as f64;
        let mut mean = [0f64; 3];
        let mut std = [0f64; 3];
        for c in 0..3 {
            let m = self.sum[c] / n;
            std[c] = (self.sq[c] / n - m * m).max(0.0).sqrt();
            mean[c] = m + self.shift[c] as f64;
        }
        Stats { mean, std, tissue }
    }
}

/// Portable [`lab_stats`]: `buf` holds `[L, a, b]` per pixel.
fn lab_stats_portable(pixels: &[u8], tissue_max: i32, lab: &Lab, buf: &mut Vec<f32>) -> Stats {
    let tissue = pixels
        .chunks_exact(3)
        .filter(|p| i32::from(p[0].max(p[1]).max(p[2])) <= tissue_max)
        .count();
    buf.clear();
    buf.extend(pixels.chunks_exact(3).flat_map(|px| lab.to_lab(px)));
    // LAB values are at most a few hundred, so f32 partial sums over 256 pixels lose nothing that
    // matters and the inner loop stays in registers.
    let shift = [0, 1, 2].map(|c| buf.get(c).copied().unwrap_or(0.0));
    let mut m = Moments::new(shift);
    for block in buf.chunks(3 * 256) {
        let mut bs = [0f32; 3];
        let mut bq = [0f32; 3];
        for v in block.chunks_exact(3) {
            for c in 0..3 {
                let d = v[c] - shift[c];
                bs[c] += d;
                bq[c] += d * d;
            }
        }
        for c in 0..3 {
            m.sum[c] += bs[c] as f64;
            m.sq[c] += bq[c] as f64;
        }
    }
    m.finish(pixels.len() / 3, tissue)
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
    let Stats { mean, std, .. } =
        lab_stats(simd::isa(), pixels, tissue_max(&table), &lab, &mut buf);
    if std.iter().any(|s| !(*s >= MIN_LAB_STD)) {
        return Err(Error::Numerical(format!(
            "cannot fit a Reinhard target on this image: it is (nearly) a single colour \
             (LAB std {std:?}, each must be >= {MIN_LAB_STD})"
        )));
    }
    Ok(ReinhardTarget { mean, std })
}

/// Normalises a batch of patches (`[n, h, w, 3]` bytes) to a Reinhard `target`. Returns the
/// normalised patches and one flag per patch (`true` when it was copied unchanged); no
/// concentrations.
pub fn reinhard_transform(
    patches: RgbBatch<'_>,
    target: &ReinhardTarget,
    params: &ReinhardParams,
    n_threads: Option<usize>,
) -> Result<Normalised> {
    params.validate()?;
    target.validate()?;
    let (n, pixels) = (patches.len(), patches.pixels());
    let mut result = Normalised::new(patches, false);
    if n == 0 || pixels == 0 {
        return Ok(result);
    }
    let table = OdTable::new(params.io, params.beta);
    let job = Job {
        target,
        lab: Lab::new(),
        tissue_max: tissue_max(&table),
        needed: needed_tissue(pixels, params.min_tissue),
        isa: simd::isa(),
    };
    let Normalised {
        patches: out,
        skipped,
        ..
    } = &mut result;
    pool::install(n_threads, || {
        out.par_chunks_mut(3 * pixels)
            .zip(patches.data().par_chunks(3 * pixels))
            .zip(skipped.par_iter_mut())
            .for_each_init(Vec::new, |buf, ((dst, src), flag)| {
                *flag = reinhard_one(&job, src, dst, buf);
            });
    })?;
    Ok(result)
}

/// What every patch of one call is normalised with.
struct Job<'a> {
    target: &'a ReinhardTarget,
    lab: Lab,
    /// A pixel is tissue iff its largest byte is `<= tissue_max` (see [`tissue_max`]).
    tissue_max: i32,
    /// Tissue pixels a patch needs to be normalised.
    needed: usize,
    /// The level of the per-pixel loops.
    isa: Isa,
}

/// Normalises one patch; returns `true` when it was skipped (copied unchanged).
fn reinhard_one(job: &Job<'_>, src: &[u8], dst: &mut [u8], buf: &mut Vec<f32>) -> bool {
    // The tissue pixels are counted in the same pass as the LAB moments: a skipped patch costs a
    // wasted pass, a normalised one no extra pass.
    let Stats { mean, std, tissue } = lab_stats(job.isa, src, job.tissue_max, &job.lab, buf);
    if tissue < job.needed || std.iter().any(|s| !(*s >= MIN_LAB_STD)) {
        dst.copy_from_slice(src);
        return true;
    }
    let target = job.target;
    let mut gain = [0f32; 3];
    let mut offset = [0f32; 3];
    for c in 0..3 {
        let g = target.std[c] / std[c];
        gain[c] = g as f32;
        offset[c] = (target.mean[c] - mean[c] * g) as f32;
    }
    apply(job.isa, buf, &ChannelMap { gain, offset }, &job.lab, dst);
    false
}

#[cfg(test)]
mod tests {
    use super::super::test_support::synthetic;
    use super::*;

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
        assert!(lab.thresholds[255] > 1.0);
        assert!(lab.coarse.iter().all(|b| (0..=254).contains(&b.below)));
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
    fn quantize_saturates_and_maps_nan_to_zero() {
        // An extreme but valid target std can overflow the LAB inverse to +inf; bytes saturate.
        let lab = Lab::new();
        for (l, want) in [
            (f32::INFINITY, 255),
            (f32::MAX, 255),
            (2.0, 255),
            (f32::NAN, 0),
            (f32::NEG_INFINITY, 0),
            (-1.0, 0),
        ] {
            assert_eq!(lab.quantize(l), want, "at {l}");
        }
    }

    fn job<'a>(target: &'a ReinhardTarget, table: &OdTable, needed: usize, isa: Isa) -> Job<'a> {
        Job {
            target,
            lab: Lab::new(),
            tissue_max: tissue_max(table),
            needed,
            isa,
        }
    }

    /// LAB of pixel `i` in the buffer layout of `isa`'s loops.
    fn lab_at(isa: Isa, buf: &[f32], i: usize) -> [f32; 3] {
        match isa {
            Isa::Portable => [buf[3 * i], buf[3 * i + 1], buf[3 * i + 2]],
            Isa::Avx2Fma => {
                let (g, j) = (i / 8, i % 8);
                [0, 1, 2].map(|c| buf[24 * g + 8 * c + j])
            }
            Isa::Avx512 => {
                let (g, j) = (i / 16, i % 16);
                [0, 1, 2].map(|c| buf[48 * g + 16 * c + j])
            }
        }
    }

    #[test]
    fn kernels_agree_on_lab_and_moments() {
        let lab = Lab::new();
        // A colour grid, then odd pixel counts (partial last groups).
        let mut grid = Vec::new();
        for r in (0..256).step_by(5) {
            for g in (0..256).step_by(7) {
                for b in (0..256).step_by(3) {
                    grid.extend([r as u8, g as u8, b as u8]);
                }
            }
        }
        let mut images = vec![grid, synthetic(4096, 7)];
        for n in 1..=40 {
            images.push(synthetic(n, n as u64));
        }
        for img in &images {
            let n = img.len() / 3;
            let mut base = Vec::new();
            let t0 = lab_stats(Isa::Portable, img, 200, &lab, &mut base);
            let want = img
                .chunks_exact(3)
                .filter(|p| p.iter().all(|&v| v <= 200))
                .count();
            assert_eq!(t0.tissue, want);
            for kernel in simd::supported() {
                let mut buf = Vec::new();
                let t = lab_stats(kernel, img, 200, &lab, &mut buf);
                assert_eq!(t.tissue, want, "{kernel:?} n={n}");
                let (m, s, m0, s0) = (t.mean, t.std, t0.mean, t0.std);
                // a = 500 (fx - fy): a few f32 ulps of f (~1e-7) become ~1e-4 in a.
                for i in 0..n {
                    let (a, b) = (lab_at(kernel, &buf, i), lab_at(Isa::Portable, &base, i));
                    for c in 0..3 {
                        assert!(
                            (a[c] - b[c]).abs() <= 5e-4,
                            "{kernel:?} pixel {i}: {a:?} {b:?}"
                        );
                    }
                }
                for c in 0..3 {
                    assert!(
                        (m[c] - m0[c]).abs() <= 1e-4,
                        "{kernel:?} n={n} mean {m:?} {m0:?}"
                    );
                    assert!(
                        (s[c] - s0[c]).abs() <= 1e-4,
                        "{kernel:?} n={n} std {s:?} {s0:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn kernels_agree_on_normalised_patches() -> Result<()> {
        let params = ReinhardParams::default();
        let target = reinhard_fit(&synthetic(20_000, 11), &params)?;
        let table = OdTable::new(params.io, params.beta);
        for n in [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 4099] {
            // Another colour distribution than the target's, so the map is not the identity.
            let src: Vec<u8> = synthetic(n, 5 + n as u64)
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 3 == 1 { v / 2 + 40 } else { v })
                .collect();
            let mut outs = Vec::new();
            for isa in simd::supported() {
                let job = job(&target, &table, needed_tissue(n, 0.0), isa);
                let mut dst = vec![0u8; src.len()];
                let skipped = reinhard_one(&job, &src, &mut dst, &mut Vec::new());
                outs.push((skipped, dst));
            }
            let (s0, base) = &outs[0];
            for (s, out) in &outs[1..] {
                assert_eq!(s, s0, "n={n}");
                let diff: Vec<i32> = out
                    .iter()
                    .zip(base)
                    .map(|(a, b)| (*a as i32 - *b as i32).abs())
                    .collect();
                assert!(diff.iter().all(|&d| d <= 1), "n={n}");
                let changed = diff.iter().filter(|&&d| d > 0).count();
                assert!(
                    changed * 1000 <= diff.len(),
                    "n={n}: {changed} bytes differ"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn tissue_threshold_is_exact_for_every_kernel() -> Result<()> {
        let params = ReinhardParams::default();
        let target = reinhard_fit(&synthetic(20_000, 11), &params)?;
        let table = OdTable::new(params.io, params.beta);
        let n = 101; // 6 AVX-512 groups and a partial one
        let needed = needed_tissue(n, 0.3);
        for found in [needed - 1, needed] {
            // Background (all bytes above the tissue threshold) with `found` dark pixels spread
            // over the patch, the last one in the partial group.
            let mut src: Vec<u8> = (0..n)
                .flat_map(|i| [245, 240 + (i % 7) as u8, 236])
                .collect();
            for k in 0..found {
                let i = n - 1 - k * 3;
                src[3 * i..3 * i + 3].copy_from_slice(&[90 + k as u8, 40 + 2 * k as u8, 120]);
            }
            for isa in simd::supported() {
                let job = job(&target, &table, needed, isa);
                let mut dst = vec![0u8; src.len()];
                let skipped = reinhard_one(&job, &src, &mut dst, &mut Vec::new());
                assert_eq!(skipped, found < needed, "{isa} found {found}");
                assert_eq!(dst == src, skipped, "{isa} found {found}");
            }
        }
        Ok(())
    }

    #[test]
    fn reinhard_self_normalisation_is_near_identity() -> Result<()> {
        let img = synthetic(4096, 4);
        let params = ReinhardParams::default();
        let t = reinhard_fit(&img, &params)?;
        let batch = crate::view::Batch::of_pixels("patches", &img, 1, 4096)?;
        let done = reinhard_transform(batch, &t, &params, Some(1))?;
        assert_eq!(done.skipped, vec![false]);
        assert_eq!(done.concentrations, None);
        let worst = img
            .iter()
            .zip(&done.patches)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap_or(0);
        assert!(worst <= 1, "worst {worst}");
        Ok(())
    }
}
