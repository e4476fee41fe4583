//! A patch's own Macenko stain estimate (steps 1-6 of the `stain` module docs), one function per
//! pass: tissue sums, stain plane (covariance and eigenvectors), extreme angles, stain matrix,
//! concentrations and their percentiles.

use super::super::select::*;
use super::super::*;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{pair_dot, pair_tables, table_bounds, weighted_tables, Scratch};
use crate::simd::Isa;

/// A patch's own stain estimate.
pub(super) struct Estimate {
    pub(super) stain_matrix: [[f64; 2]; 3],
    pub(super) max_conc: [f64; 2],
    pub(super) pinv: [[f64; 3]; 2],
}

/// Steps 1-6 of the module docs on `pixels` (`[n, 3]` bytes).
pub(super) fn estimate(
    pixels: &[u8],
    params: &MacenkoParams,
    table: &OdTable,
    scratch: &mut Scratch,
) -> std::result::Result<Estimate, Degenerate> {
    let n_pixels = pixels.len() / 3;
    // 1-2: tissue pixels and the sums of their ODs.
    let sums = tissue_sums(pixels, table, &mut scratch.tissue, scratch.isa);
    let needed = needed_tissue(n_pixels, params.min_tissue).max(2);
    if sums.count < needed {
        return Err(Degenerate::TooLittleTissue {
            found: sums.count,
            needed,
        });
    }
    // 3: the plane of the two main eigenvectors of the ODs' covariance.
    let plane = stain_plane(&sums)?;
    // 4: robust extreme angles of the tissue ODs in that plane.
    let (lo, hi) = extreme_angles(&plane, params.alpha, &table.od, scratch);
    // 5: the stain matrix, hematoxylin first.
    let stain_matrix = stain_matrix(&plane, lo, hi);
    let pinv = pinv_3x2(&stain_matrix).ok_or(Degenerate::ParallelStains)?;
    // 6: concentrations of all pixels and their 99th percentiles.
    let max_conc = max_concentrations(pixels, &pinv, &table.od, scratch)?;
    Ok(Estimate {
        stain_matrix,
        max_conc,
        pinv,
    })
}

/// The tissue pixels' count and the sums of their ODs and OD products (f64 accumulators).
struct TissueSums {
    count: usize,
    /// Sums of the R, G, B ODs.
    s: [f64; 3],
    /// Sums of the products rr, rg, rb, gg, gb, bb.
    ss: [f64; 6],
}

/// Steps 1-2: the tissue pixels of `pixels` (every channel's OD `>= beta`) copied in order into
/// `tissue` (with the code of `isa`, see [`compact_tissue`]), and the sums of their ODs.
fn tissue_sums(pixels: &[u8], table: &OdTable, tissue: &mut Vec<[u8; 3]>, isa: Isa) -> TissueSums {
    let m = compact_tissue(pixels, table.tissue_max, tissue, isa);
    // The sums over the tissue pixels, in pixel order (f64 accumulators).
    let od = &table.od;
    let mut s = [0f64; 3];
    let mut ss = [0f64; 6];
    for &[r, g, b] in tissue.iter() {
        let (a, b, c) = (od[r as usize], od[g as usize], od[b as usize]);
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
    TissueSums { count: m, s, ss }
}

/// Pixels of slack at the end of the tissue buffer: the AVX2 compaction stores 32 bytes at the
/// cursor (at most 8 past the 24 it fills).
const TISSUE_SLACK: usize = 3;

/// The pixels of `pixels` whose three bytes are all `<= tissue_max` (none when `None`), in order,
/// into `tissue` (cleared first; its length is their count, returned). The first pixels run
/// through the kernel of `isa` (lowered to what the CPU runs), the rest through the portable loop.
pub(super) fn compact_tissue(
    pixels: &[u8],
    tissue_max: Option<u8>,
    tissue: &mut Vec<[u8; 3]>,
    isa: Isa,
) -> usize {
    let n_pixels = pixels.len() / 3;
    tissue.clear();
    tissue.resize(n_pixels + TISSUE_SLACK, [0; 3]);
    let Some(t) = tissue_max else {
        tissue.clear();
        return 0;
    };
    let (done, mut m) = match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX-512 F and BW.
        Isa::Avx512 => unsafe { avx512::compact_tissue(pixels, t, tissue.as_flattened_mut()) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::compact_tissue(pixels, t, tissue.as_flattened_mut()) },
        _ => (0, 0),
    };
    // Branch-free compaction: every pixel is written at the tissue cursor, which moves on only
    // past tissue, so a ragged tissue mask costs no mispredictions.
    for px in pixels[3 * done..].chunks_exact(3) {
        let keep = px[0].max(px[1]).max(px[2]) <= t;
        // `m <= i < n_pixels` at the i-th pixel, so the slot exists.
        if let Some(slot) = tissue.get_mut(m) {
            *slot = [px[0], px[1], px[2]];
        }
        m += keep as usize;
    }
    tissue.truncate(m);
    m
}

/// The unit eigenvectors of the largest (`main`) and second-largest (`second`) eigenvalues of
/// the tissue ODs' covariance, each oriented so that its components sum to `>= 0`.
struct Plane {
    second: [f64; 3],
    main: [f64; 3],
}

impl Plane {
    /// The unit OD direction at angle `phi` in the plane (`cos phi` along `second`).
    fn direction(&self, phi: f64) -> [f64; 3] {
        let (c, s) = (phi.cos(), phi.sin());
        let (e2, e1) = (&self.second, &self.main);
        [
            e2[0] * c + e1[0] * s,
            e2[1] * c + e1[1] * s,
            e2[2] * c + e1[2] * s,
        ]
    }
}

/// Step 3: the covariance (ddof = 1) of the tissue ODs and the plane of its two main
/// eigenvectors; a single colour (non-finite covariance or no second direction) is degenerate.
fn stain_plane(sums: &TissueSums) -> std::result::Result<Plane, Degenerate> {
    let (s, ss) = (&sums.s, &sums.ss);
    let nf = sums.count as f64;
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
    let mut second = [vectors[0][1], vectors[1][1], vectors[2][1]];
    let mut main = [vectors[0][2], vectors[1][2], vectors[2][2]];
    for e in [&mut second, &mut main] {
        if e[0] + e[1] + e[2] < 0.0 {
            e.iter_mut().for_each(|x| *x = -*x);
        }
    }
    Ok(Plane { second, main })
}

/// Step 4: the angles at percentiles `alpha` and `100 - alpha` of the tissue ODs projected on
/// `plane` (`scratch.tissue` from [`tissue_sums`]).
fn extreme_angles(plane: &Plane, alpha: f64, od: &[f64; 256], scratch: &mut Scratch) -> (f64, f64) {
    let binner = pseudo_angles(plane, od, scratch);
    let hist = Hist {
        binner: binner.as_ref(),
        counts: &scratch.hist,
    };
    angle_percentiles(
        &scratch.angles,
        (alpha, 100.0 - alpha),
        hist,
        &mut scratch.gather,
        scratch.isa,
    )
}

/// The pseudo-angles of the tissue pixels in `plane` into `scratch.angles`, counted into
/// `scratch.hist` on the way; returns the binner of that histogram (`None`: no histogram).
fn pseudo_angles(plane: &Plane, od: &[f64; 256], scratch: &mut Scratch) -> Option<Binner> {
    let txy = pair_tables(plane.second, plane.main, od);
    // Pseudo-angles lie in [-2, 2].
    let angle_bins = Binner::new(-2.0, 2.0);
    scratch.angles.clear();
    scratch.hist.clear();
    scratch.hist.resize(2 * SELECT_BINS, 0);
    if let Some(binner) = &angle_bins {
        let done = match scratch.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                let flat = scratch.tissue.as_flattened();
                let (angles, hist) = (&mut scratch.angles, &mut scratch.hist);
                // SAFETY: `scratch.isa` is supported (see `Scratch::new`): AVX-512 F and BW.
                unsafe { avx512::pseudo_angles(flat, &txy, binner, angles, hist) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                let flat = scratch.tissue.as_flattened();
                let (angles, hist) = (&mut scratch.angles, &mut scratch.hist);
                // SAFETY: `scratch.isa` is supported (see `Scratch::new`): AVX2 and FMA.
                unsafe { avx2::pseudo_angles(flat, &txy, binner, angles, hist) }
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
    angle_bins
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

/// Step 5: the stain matrix (`3 x 2`, columns H and E) from the directions at angles `lo` and
/// `hi`: hematoxylin is the one with the larger red OD.
fn stain_matrix(plane: &Plane, lo: f64, hi: f64) -> [[f64; 2]; 3] {
    let v_min = plane.direction(lo);
    let v_max = plane.direction(hi);
    let (h, e) = if v_min[0] > v_max[0] {
        (v_min, v_max)
    } else {
        (v_max, v_min)
    };
    [[h[0], e[0]], [h[1], e[1]], [h[2], e[2]]]
}

/// Step 6: the concentrations of all `pixels` under `pinv` (into `scratch.c0`, `scratch.c1`)
/// and their 99th percentiles; a maximum that is not clearly positive is degenerate.
fn max_concentrations(
    pixels: &[u8],
    pinv: &[[f64; 3]; 2],
    od: &[f64; 256],
    scratch: &mut Scratch,
) -> std::result::Result<[f64; 2], Degenerate> {
    let [bin0, bin1] = concentrations(pixels, pinv, od, scratch);
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
    Ok(max_conc)
}

/// The H and E concentrations of every pixel into `scratch.c0` and `scratch.c1`, counted into
/// `scratch.hist` and `scratch.hist1` when both have a binner (returned; the bounds are those of
/// the tables, so every value falls inside).
fn concentrations(
    pixels: &[u8],
    pinv: &[[f64; 3]; 2],
    od: &[f64; 256],
    scratch: &mut Scratch,
) -> [Option<Binner>; 2] {
    let n_pixels = pixels.len() / 3;
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
                &t01,
                bin0.as_ref().zip(bin1.as_ref()),
                [&mut scratch.c0[..], &mut scratch.c1[..]],
                [&mut scratch.hist[..], &mut scratch.hist1[..]],
            )
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `scratch.isa` is supported (see `Scratch::new`): AVX2 and FMA.
        Isa::Avx2Fma => unsafe {
            avx2::concentrations(
                pixels,
                &t01,
                bin0.as_ref().zip(bin1.as_ref()),
                [&mut scratch.c0[..], &mut scratch.c1[..]],
                [&mut scratch.hist[..], &mut scratch.hist1[..]],
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
    [bin0, bin1]
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
            if a[p][q] != 0.0 {
                jacobi_rotate(&mut a, &mut v, p, q);
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

/// One Jacobi rotation zeroing `a[p][q]` (`!= 0`): `A <- J^T A J`, `V <- V J`.
fn jacobi_rotate(a: &mut [[f64; 3]; 3], v: &mut [[f64; 3]; 3], p: usize, q: usize) {
    let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
    let t = if theta == 0.0 { 1.0 } else { t };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
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

/// Least-squares pseudo-inverse `(H^T H)^-1 H^T` of a `3 x 2` matrix; `None` when its columns are
/// (nearly) parallel or not unit-ish.
pub(in crate::stain) fn pinv_3x2(h: &[[f64; 2]; 3]) -> Option<[[f64; 3]; 2]> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_compacts_tissue_as_the_portable_loop() {
        let mut state = 5u64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        // Runs of tissue and background (whole groups of 8 and 16 of either, and mixed ones).
        let pixels: Vec<u8> = (0..5000)
            .flat_map(|i: usize| {
                let dark = !(i / 13).is_multiple_of(3) || (i / 40).is_multiple_of(2);
                let v = |r: u32| {
                    if dark {
                        (r % 180) as u8
                    } else {
                        (r % 256) as u8
                    }
                };
                [v(rnd()), v(rnd()), v(rnd())]
            })
            .collect();
        for t in [None, Some(0u8), Some(100), Some(179), Some(254), Some(255)] {
            for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 5000] {
                let src = &pixels[..3 * n];
                let mut want = Vec::new();
                let count = compact_tissue(src, t, &mut want, Isa::Portable);
                assert_eq!(count, want.len());
                let expected = src
                    .chunks_exact(3)
                    .filter(|p| t.is_some_and(|t| p.iter().all(|&v| v <= t)))
                    .count();
                assert_eq!(count, expected, "t {t:?} n {n}");
                for isa in crate::simd::supported() {
                    let mut got = vec![[9u8; 3]; 3];
                    assert_eq!(compact_tissue(src, t, &mut got, isa), count);
                    assert_eq!(got, want, "{isa} t {t:?} n {n}");
                }
            }
        }
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
}
