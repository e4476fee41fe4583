//! Macenko normalisation (see the module docs of `stain`).

use rayon::prelude::*;

use super::select::*;
use super::*;
use crate::pool;
use crate::simd::{self, Isa};

#[cfg(target_arch = "x86_64")]
mod avx512;

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
pub(super) fn pinv_3x2(h: &[[f64; 2]; 3]) -> Option<[[f64; 3]; 2]> {
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

/// Two sets of [`weighted_tables`] interleaved: `t[j][v] = [w0[j] * od[v], w1[j] * od[v]]`, so
/// one lookup per channel serves both dot products.
fn pair_tables(w0: [f64; 3], w1: [f64; 3], od: &[f64; 256]) -> [[[f32; 2]; 256]; 3] {
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
fn pair_dot(t: &[[[f32; 2]; 256]; 3], px: &[u8]) -> [f32; 2] {
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
                            // Branch-free: every pixel is written at the tissue cursor and its ODs weighted by 0 or 1
                            // (adding `0.0 * od` leaves the sums bit-identical to skipping it), so a ragged tissue mask
                            // costs no mispredictions.
    scratch.tissue.resize(n_pixels, [0; 3]);
    let tissue_max = table.tissue_max;
    let mut m = 0usize;
    for px in pixels.chunks_exact(3) {
        let keep = tissue_max.is_some_and(|t| px[0].max(px[1]).max(px[2]) <= t);
        // `m <= i < n_pixels` at the i-th pixel, so the slot exists.
        if let Some(slot) = scratch.tissue.get_mut(m) {
            *slot = [px[0], px[1], px[2]];
        }
        m += keep as usize;
        let w = f64::from(keep as u8);
        let (a, b, c) = (
            od[px[0] as usize] * w,
            od[px[1] as usize] * w,
            od[px[2] as usize] * w,
        );
        s[0] += a;
        s[1] += b;
        s[2] += c;
        ss[0] += a * od[px[0] as usize];
        ss[1] += a * od[px[1] as usize];
        ss[2] += a * od[px[2] as usize];
        ss[3] += b * od[px[1] as usize];
        ss[4] += b * od[px[2] as usize];
        ss[5] += c * od[px[2] as usize];
    }
    scratch.tissue.truncate(m);
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
    let txy = pair_tables(e_second, e_main, od);
    // Pseudo-angles lie in [-2, 2]; their histogram is filled on the way.
    let angle_bins = Binner::new(-2.0, 2.0);
    scratch.angles.clear();
    scratch.hist.clear();
    scratch.hist.resize(2 * SELECT_BINS, 0);
    if let Some(binner) = &angle_bins {
        let done = match scratch.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                let (tx, ty) = (weighted_tables(e_second, od), weighted_tables(e_main, od));
                let flat = scratch.tissue.as_flattened();
                // SAFETY: `scratch.isa` is supported (see `Scratch::new`): AVX-512 F and BW.
                unsafe {
                    avx512::pseudo_angles(
                        flat,
                        &tx,
                        &ty,
                        binner,
                        &mut scratch.angles,
                        &mut scratch.hist,
                    )
                }
            }
            _ => 0,
        };
        let hist = &mut scratch.hist;
        // Even and odd elements count into separate halves: neighbouring pixels often share a
        // bin, and one counter would serialise on its own increments.
        scratch
            .angles
            .extend(scratch.tissue[done..].iter().enumerate().map(|(i, px)| {
                let [x, y] = pair_dot(&txy, px);
                let p = pseudo_angle(x, y);
                hist[binner.bin(p) + (i & 1) * SELECT_BINS] += 1;
                p
            }));
    }
    merge_halves(&mut scratch.hist);
    let angle_hist = Hist {
        binner: angle_bins.as_ref(),
        counts: &scratch.hist,
    };
    let (lo, hi) = angle_percentiles(
        &scratch.angles,
        (params.alpha, 100.0 - params.alpha),
        angle_hist,
        &mut scratch.gather,
        scratch.isa,
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
    let t01 = pair_tables(pinv[0], pinv[1], od);
    let (bin0, bin1) = (Binner::new(b0.0, b0.1), Binner::new(b1.0, b1.1));
    scratch.c0.resize(n_pixels, 0.0);
    scratch.c1.resize(n_pixels, 0.0);
    for h in [&mut scratch.hist, &mut scratch.hist1] {
        h.clear();
        h.resize(2 * SELECT_BINS, 0);
    }
    let done = match scratch.isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `scratch.isa` is supported (see `Scratch::new`): AVX-512 F and BW.
        Isa::Avx512 => unsafe {
            avx512::concentrations(
                pixels,
                &t0,
                &t1,
                bin0.as_ref().zip(bin1.as_ref()),
                &mut scratch.c0,
                &mut scratch.c1,
                &mut scratch.hist,
                &mut scratch.hist1,
            )
        },
        _ => 0,
    };
    let rest = pixels[3 * done..]
        .chunks_exact(3)
        .zip(scratch.c0[done..].iter_mut())
        .zip(scratch.c1[done..].iter_mut());
    match (&bin0, &bin1) {
        (Some(bin0), Some(bin1)) => {
            let (h0, h1) = (&mut scratch.hist, &mut scratch.hist1);
            for (i, ((px, a), b)) in rest.enumerate() {
                [*a, *b] = pair_dot(&t01, px);
                let half = (i & 1) * SELECT_BINS;
                h0[bin0.bin(*a) + half] += 1;
                h1[bin1.bin(*b) + half] += 1;
            }
        }
        _ => {
            for ((px, a), b) in rest {
                [*a, *b] = pair_dot(&t01, px);
            }
        }
    }
    merge_halves(&mut scratch.hist);
    merge_halves(&mut scratch.hist1);
    let (both, gather) = (bin0.is_some() && bin1.is_some(), &mut scratch.gather);
    let hist0 = Hist {
        binner: bin0.as_ref().filter(|_| both),
        counts: &scratch.hist,
    };
    let hist1 = Hist {
        binner: bin1.as_ref().filter(|_| both),
        counts: &scratch.hist1,
    };
    let max_conc = [
        percentile_linear(&scratch.c0, 99.0, hist0, gather, scratch.isa),
        percentile_linear(&scratch.c1, 99.0, hist1, gather, scratch.isa),
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
    (q_low, q_high): (f64, f64),
    hist: Hist<'_>,
    gather: &mut Vec<f32>,
    isa: Isa,
) -> (f64, f64) {
    let (l0, l1, lt) = percentile_ranks(pseudo.len(), q_low);
    let (h0, h1, ht) = percentile_ranks(pseudo.len(), q_high);
    let [a0, a1, b0, b1] = select_ranks(pseudo, [l0, l1, h0, h1], hist, gather, isa);
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

/// Fits a Macenko target on `pixels` (`[n, 3]` RGB bytes: one image or many patches pooled).
///
/// Errors: bad parameters -> `InvalidArgument`; an image that cannot be fitted (background, a
/// single colour, a single stain) -> `Numerical` saying why.
pub fn macenko_fit(pixels: &[u8], params: &MacenkoParams) -> Result<MacenkoTarget> {
    params.validate()?;
    check_pixels("image", pixels)?;
    let table = OdTable::new(params.io, params.beta);
    let mut scratch = Scratch::new(simd::isa());
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
    transform_with(
        simd::isa(),
        patches,
        n,
        pixels,
        target,
        params,
        out,
        conc,
        n_threads,
    )
}

/// [`macenko_transform`] with the per-pixel passes of `isa` (lowered to what the CPU runs).
#[allow(clippy::too_many_arguments)]
fn transform_with(
    isa: Isa,
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
    let total = check_rgb_batch("patches", patches.len(), n, pixels)?;
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
            .for_each_init(
                || Scratch::new(isa),
                |scratch, (((dst, src), c), flag)| {
                    *flag = macenko_one(src, dst, c, target, &target_pinv, params, &table, scratch);
                },
            );
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
        // exp(-mix * od) per byte value, `io` folded into the first table; `lut[j][v][k]` for
        // output channel `k` (the fourth lane pads to 16 bytes, one load per input channel).
        let mut lut = [[[0f32; 4]; 256]; 3];
        for (j, table) in lut.iter_mut().enumerate() {
            let pre = if j == 0 { params.io } else { 1.0 };
            for (v, entry) in table.iter_mut().enumerate() {
                for k in 0..3 {
                    entry[k] = (pre * (-mix[k][j] * od[v]).exp()) as f32;
                }
            }
        }
        let done = match scratch.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `scratch.isa` is supported (see `Scratch::new`): AVX-512 F and BW.
            Isa::Avx512 => unsafe { avx512::reconstruct(src, dst, &lut) },
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

#[cfg(test)]
mod tests {
    use super::super::test_support::synthetic;
    use super::*;

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
                let mut out = vec![0u8; batch.len()];
                let mut conc = vec![0f32; batch.len() / 3 * 2];
                let skipped = transform_with(
                    isa,
                    &batch,
                    3,
                    n,
                    &target,
                    &params,
                    &mut out,
                    Some(&mut conc),
                    Some(1),
                )?;
                Ok((out, conc, skipped))
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
}
