//! Macenko normalisation (see the module docs of `stain`): fitting a target, and normalising a
//! batch of patches to it (each patch's own estimate from [`estimate`], then the re-composition
//! through per-byte tables).

use rayon::prelude::*;

use super::*;
use crate::pool;
use crate::simd::{self, Isa};
use crate::view::RgbBatch;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod estimate;

pub(super) use estimate::pinv_3x2;
use estimate::{estimate, Estimate};

/// Reusable per-thread buffers, and the instruction-set level of the per-pixel passes (always one
/// the CPU supports: [`Scratch::new`] lowers it).
#[derive(Default)]
struct Scratch {
    isa: Isa,
    tissue: Vec<[u8; 3]>,
    angles: Vec<f32>,
    c0: Vec<f32>,
    c1: Vec<f32>,
    hist: Vec<u32>,
    hist1: Vec<u32>,
    gather: Vec<f32>,
}

impl Scratch {
    fn new(isa: Isa) -> Self {
        Scratch {
            isa: isa.supported_or_below(),
            ..Scratch::default()
        }
    }
}

/// Three per-byte tables, one per input channel: `t[j][v]` for byte value `v` of channel `j`.
type Tables = [[f32; 256]; 3];

/// Two sets of [`Tables`] interleaved (see [`pair_tables`]): `t[j][v] = [first, second]`.
type PairTables = [[[f32; 2]; 256]; 3];

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

/// Two sets of [`weighted_tables`] interleaved: `t[j][v] = [w0[j] * od[v], w1[j] * od[v]]`, so
/// one lookup per channel serves both dot products.
fn pair_tables(w0: [f64; 3], w1: [f64; 3], od: &[f64; 256]) -> PairTables {
    let mut t = [[[0f32; 2]; 256]; 3];
    for j in 0..3 {
        for v in 0..256 {
            t[j][v] = [(w0[j] * od[v]) as f32, (w1[j] * od[v]) as f32];
        }
    }
    t
}

/// Both [`table_dot`]s of a [`pair_tables`] (same summation order, so the same values).
#[inline]
fn pair_dot(t: &PairTables, px: &[u8]) -> [f32; 2] {
    let (a, b, c) = (
        t[0][px[0] as usize],
        t[1][px[1] as usize],
        t[2][px[2] as usize],
    );
    [a[0] + b[0] + c[0], a[1] + b[1] + c[1]]
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

/// Fits a Macenko target on `pixels` (`[n, 3]` RGB bytes: one image or many patches pooled).
///
/// Errors: bad parameters -> `InvalidArgument`; an image that cannot be fitted (background, a
/// single colour, a single stain) -> `Numerical` saying why.
pub fn macenko_fit(pixels: &[u8], params: &MacenkoParams) -> Result<MacenkoTarget> {
    params.validate()?;
    check_pixels("image", pixels)?;
    let table = OdTable::new(params.io, params.beta);
    let mut scratch = Scratch::new(simd::isa());
    let est = estimate(pixels, params, &table, &mut scratch).map_err(|why| {
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

/// Normalises a batch of patches (`[n, h, w, 3]` bytes) to `target`.
///
/// Returns the normalised patches (same layout), one flag per patch (`true` when it was copied
/// unchanged, see the module docs) and, with `concentrations`, the scaled H and E concentrations
/// each patch was re-composed from (`[n, h, w, 2]`; for a skipped patch, its concentrations under
/// the target's stain matrix, unscaled).
pub fn macenko_transform(
    patches: RgbBatch<'_>,
    target: &MacenkoTarget,
    params: &MacenkoParams,
    concentrations: bool,
    n_threads: Option<usize>,
) -> Result<Normalised> {
    transform_with(
        simd::isa(),
        patches,
        (target, params),
        concentrations,
        n_threads,
    )
}

/// What every patch of one call is normalised with.
struct Job<'a> {
    target: &'a MacenkoTarget,
    /// Pseudo-inverse of the target's stain matrix.
    target_pinv: [[f64; 3]; 2],
    params: &'a MacenkoParams,
    table: OdTable,
}

/// [`macenko_transform`] with the per-pixel passes of `isa` (lowered to what the CPU runs).
fn transform_with(
    isa: Isa,
    patches: RgbBatch<'_>,
    (target, params): (&MacenkoTarget, &MacenkoParams),
    concentrations: bool,
    n_threads: Option<usize>,
) -> Result<Normalised> {
    params.validate()?;
    target.validate()?;
    let (n, pixels) = (patches.len(), patches.pixels());
    let mut result = Normalised::new(patches, concentrations);
    if n == 0 || pixels == 0 {
        return Ok(result);
    }
    let job = Job {
        target,
        target_pinv: pinv_3x2(&target.stain_matrix).ok_or_else(|| {
            Error::invalid("stain_matrix", "its two columns (H and E) are parallel")
        })?,
        params,
        table: OdTable::new(params.io, params.beta),
    };
    let Normalised {
        patches: out,
        skipped,
        concentrations: conc,
    } = &mut result;
    let conc_chunks = optional_chunks(conc.as_deref_mut(), 2 * pixels, n);
    pool::install(n_threads, || {
        out.par_chunks_mut(3 * pixels)
            .zip(patches.data().par_chunks(3 * pixels))
            .zip(conc_chunks.into_par_iter())
            .zip(skipped.par_iter_mut())
            .for_each_init(
                || Scratch::new(isa),
                |scratch, (((dst, src), c), flag)| {
                    *flag = macenko_one(&job, src, dst, c, scratch);
                },
            );
    })?;
    Ok(result)
}

/// Splits an optional output buffer into one optional chunk per patch.
fn optional_chunks<T>(buf: Option<&mut [T]>, chunk: usize, n: usize) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(b) if chunk > 0 => b.chunks_mut(chunk).map(Some).collect(),
        _ => (0..n).map(|_| None).collect(),
    }
}

/// Normalises one patch; returns `true` when it was skipped (copied unchanged).
fn macenko_one(
    job: &Job<'_>,
    src: &[u8],
    dst: &mut [u8],
    conc: Option<&mut [f32]>,
    scratch: &mut Scratch,
) -> bool {
    let od = &job.table.od;
    let Ok(est) = estimate(src, job.params, &job.table, scratch) else {
        dst.copy_from_slice(src);
        if let Some(c) = conc {
            write_concentrations(src, &job.target_pinv, od, c);
        }
        return true;
    };
    let scale = [
        job.target.max_conc[0] / est.max_conc[0],
        job.target.max_conc[1] / est.max_conc[1],
    ];
    let mix = mix_matrix(job.target, scale, &est);
    let od_max = od[0].abs().max(od[255].abs());
    let widest = mix.iter().flatten().fold(0f64, |acc, v| acc.max(v.abs())) * od_max;
    if widest <= MAX_TABLE_LOG {
        recompose_by_tables(src, dst, &mix, (job.params.io, od), scratch.isa);
    } else {
        recompose_by_exp(src, dst, &mix, (job.params.io, od));
    }
    if let Some(c) = conc {
        let scaled = [0, 1].map(|i| est.pinv[i].map(|v| v * scale[i]));
        write_concentrations(src, &scaled, od, c);
    }
    false
}

/// The re-composition's mixing matrix: output log-intensity of channel `k` is
/// `-sum_j mix[k][j] * od[v_j]` (the target's stain matrix times the scaled concentrations of
/// the patch's own estimate).
fn mix_matrix(target: &MacenkoTarget, scale: [f64; 2], est: &Estimate) -> [[f64; 3]; 3] {
    let mut mix = [[0f64; 3]; 3];
    for (k, row) in mix.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            *slot = target.stain_matrix[k][0] * scale[0] * est.pinv[0][j]
                + target.stain_matrix[k][1] * scale[1] * est.pinv[1][j];
        }
    }
    mix
}

/// Re-composition as a product of three per-byte tables: `exp(-mix * od)` per byte value, `io`
/// folded into the first table (see [`Lut`]). The product runs with the code of `isa` (lowered
/// to what the CPU runs).
fn recompose_by_tables(
    src: &[u8],
    dst: &mut [u8],
    mix: &[[f64; 3]; 3],
    (io, od): (f64, &[f64; 256]),
    isa: Isa,
) {
    let mut lut = [[[0f32; 4]; 256]; 3];
    for (j, table) in lut.iter_mut().enumerate() {
        let pre = if j == 0 { io } else { 1.0 };
        for (v, entry) in table.iter_mut().enumerate() {
            for k in 0..3 {
                entry[k] = (pre * (-mix[k][j] * od[v]).exp()) as f32;
            }
        }
    }
    apply_lut(src, dst, &lut, isa);
}

/// The re-composition's tables: `lut[j][v][k]` for input channel `j`, byte value `v`, output
/// channel `k` (the fourth lane pads to 16 bytes, one load per input channel).
type Lut = [[[f32; 4]; 256]; 3];

/// Every pixel of `src` into `dst`: channel `k` is `lut[0][r][k] * lut[1][g][k] * lut[2][b][k]`
/// clipped to `[0, 255]` (NaN -> 0) and truncated, with the code of `isa` (lowered to what the
/// CPU runs) and the portable loop for the pixels it leaves.
fn apply_lut(src: &[u8], dst: &mut [u8], lut: &Lut, isa: Isa) {
    let done = match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX-512 F and BW.
        Isa::Avx512 => unsafe { avx512::reconstruct(src, dst, lut) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::reconstruct(src, dst, lut) },
        _ => 0,
    };
    for (s, d) in src[3 * done..]
        .chunks_exact(3)
        .zip(dst[3 * done..].chunks_exact_mut(3))
    {
        let (r, g, b) = (
            &lut[0][s[0] as usize],
            &lut[1][s[1] as usize],
            &lut[2][s[2] as usize],
        );
        for k in 0..3 {
            // Values above 255 clip (as `Inorm[Inorm > 255] = 255`), then truncate.
            d[k] = byte_trunc(r[k] * g[k] * b[k]);
        }
    }
}

/// Re-composition with `exp` per pixel, for mixing factors too wide for the table product.
fn recompose_by_exp(src: &[u8], dst: &mut [u8], mix: &[[f64; 3]; 3], (io, od): (f64, &[f64; 256])) {
    let logs: [Tables; 3] = [
        weighted_tables(mix[0], od),
        weighted_tables(mix[1], od),
        weighted_tables(mix[2], od),
    ];
    for (s, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
        for k in 0..3 {
            let value = io * (-(table_dot(&logs[k], s) as f64)).exp();
            d[k] = value.min(255.0) as u8;
        }
    }
}

/// The concentrations `rows . OD` of every pixel of `src` into `conc` (`[pixels, 2]`).
fn write_concentrations(src: &[u8], rows: &[[f64; 3]; 2], od: &[f64; 256], conc: &mut [f32]) {
    let t0 = weighted_tables(rows[0], od);
    let t1 = weighted_tables(rows[1], od);
    for (px, cc) in src.chunks_exact(3).zip(conc.chunks_exact_mut(2)) {
        cc[0] = table_dot(&t0, px);
        cc[1] = table_dot(&t1, px);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::synthetic;
    use super::*;
    use crate::view::Batch;

    fn rgb_batch(data: &[u8], n: usize, pixels: usize) -> RgbBatch<'_> {
        Batch::of_pixels("patches", data, n, pixels).unwrap_or_else(|e| panic!("{e}"))
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
        let done = macenko_transform(rgb_batch(&img, 1, 4096), &t, &params, false, Some(1))?;
        assert_eq!(done.skipped, vec![false]);
        assert_eq!(done.concentrations, None);
        let diff: f64 = img
            .iter()
            .zip(&done.patches)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / img.len() as f64;
        assert!(diff < 1.5, "mean abs diff {diff}");
        Ok(())
    }

    #[test]
    fn every_level_gives_the_portable_result_exactly() -> Result<()> {
        let params = MacenkoParams::default();
        let target = macenko_fit(&synthetic(20_000, 21), &params)?;
        // Odd sizes (partial last groups of 16), and a patch-sized one; colours unlike the
        // target's so the map is not the identity.
        for (k, n) in [1usize, 15, 16, 17, 33, 200, 4099, 224 * 224]
            .into_iter()
            .enumerate()
        {
            let batch: Vec<u8> = (0..3u64)
                .flat_map(|p| synthetic(n, 100 * k as u64 + p))
                .enumerate()
                .map(|(i, v)| if i % 3 == 1 { v / 2 + 40 } else { v })
                .collect();
            let run = |isa: Isa| -> Result<(Vec<u8>, Vec<f32>, Vec<bool>)> {
                let patches = rgb_batch(&batch, 3, n);
                let done = transform_with(isa, patches, (&target, &params), true, Some(1))?;
                let conc = done.concentrations.unwrap_or_default();
                assert_eq!(conc.len(), batch.len() / 3 * 2);
                Ok((done.patches, conc, done.skipped))
            };
            let slow = run(Isa::Portable)?;
            for isa in simd::supported() {
                let fast = run(isa)?;
                assert_eq!(fast.2, slow.2, "{isa} n {n}: skipped flags differ");
                assert!(fast.0 == slow.0, "{isa} n {n}: outputs differ");
                let same = fast
                    .1
                    .iter()
                    .zip(&slow.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa} n {n}: concentrations differ");
            }
            if n >= 4099 {
                assert!(
                    !slow.2.iter().any(|&s| s),
                    "n {n}: a tissue patch was skipped"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn every_level_recomposes_extreme_tables_as_the_portable_loop() {
        // Products far above 255, below 0, infinite and NaN, and rounding right at a byte
        // boundary: every level clips and truncates as `byte_trunc`.
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            1e-30,
            254.999_98,
            255.0,
            255.000_02,
            1e30,
        ];
        let mut state = 99u64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut lut: Lut = [[[0f32; 4]; 256]; 3];
        for (j, table) in lut.iter_mut().enumerate() {
            for (v, entry) in table.iter_mut().enumerate() {
                for k in 0..4 {
                    entry[k] = match (v + 7 * j + 3 * k) % 5 {
                        0 => specials[rnd() as usize % specials.len()],
                        1 => 1.0,
                        _ => (rnd() % 70_000) as f32 / 1000.0 - 5.0,
                    };
                }
            }
        }
        for n in [0usize, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 1000] {
            let src: Vec<u8> = (0..3 * n).map(|_| rnd() as u8).collect();
            let mut want = vec![0u8; 3 * n];
            apply_lut(&src, &mut want, &lut, Isa::Portable);
            for isa in simd::supported() {
                let mut got = vec![0u8; 3 * n];
                apply_lut(&src, &mut got, &lut, isa);
                assert_eq!(got, want, "{isa} n {n}");
            }
        }
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
        let done = macenko_transform(rgb_batch(&batch, 4, px), &t, &params, true, Some(2))?;
        assert_eq!(done.skipped, vec![true, true, true, false]);
        assert_eq!(&done.patches[..3 * px * 3], &batch[..3 * px * 3]);
        let conc = done.concentrations.unwrap_or_default();
        assert_eq!(conc.len(), 4 * px * 2);
        assert!(conc.iter().all(|v| v.is_finite()));
        Ok(())
    }
}
