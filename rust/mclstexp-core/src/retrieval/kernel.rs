//! The dot-product micro-kernel: one tile of `MR` queries x `NR` references.
//!
//! References are stored packed in *panels* of [`NR`] rows: panel element `p * NR + j` is component
//! `p` of reference `j` of the panel, so one aligned-width load fetches the same component of `NR`
//! consecutive references. Queries are packed the same way in tiles of [`MR`] rows (element
//! `p * MR + i` is component `p` of query `i` of the tile); the kernel broadcasts one query
//! component at a time and accumulates `MR x NR` dot products in registers.
//!
//! Every score of every (query, reference) pair is computed by the same sequence of operations
//! (`acc = fma(q[p], r[p], acc)` for `p = 0..dim`, in order) whatever its position in the tile, so
//! identical references always get bit-identical scores and ties are broken by index, never by
//! rounding. The kernel follows the process's instruction-set level ([`crate::simd::isa`]):
//! AVX-512 (12 zmm accumulators, the panel column loaded once per component, query components
//! broadcast), else AVX2+FMA (the same tile as two 6 x 16 halves), else a portable scalar kernel.
//! AVX-512 and AVX2 both use fused multiply-adds in the same order, so they give identical
//! scores; the portable kernel uses a separate multiply and add and may differ in the last bit,
//! but each index uses exactly one kernel. `MCLSTEXP_NO_AVX512` selects the AVX2 kernel on an
//! AVX-512 machine (see [`crate::simd`]).

use crate::simd::Isa;

/// Query rows per tile.
pub const MR: usize = 12;
/// Reference rows per panel (and tile columns).
pub const NR: usize = 16;
/// Number of scores in one tile.
pub const TILE: usize = MR * NR;

/// The name the index reports for the kernel of `isa` (`"avx512f"`, `"avx2+fma"`, `"portable"`):
/// the AVX-512 tile needs AVX-512F only.
pub fn name(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 => "avx512f",
        other => other.name(),
    }
}

/// Computes the tile of dot products between `MR` query rows and one panel with the kernel of
/// `isa`.
///
/// `queries` holds one packed tile of `MR` queries (`dim * MR` values, component-major) and
/// `panel` holds `dim * NR` values (component-major, see the module docs). On return
/// `tile[i * NR + j]` is the dot product of query row `i` with panel reference `j`, and bit
/// `j` of `masks[i]` is set when that score is strictly greater than `thresholds[i]`. A level
/// the CPU lacks runs as the best one below it ([`Isa::supported_or_below`]).
///
/// # Panics
/// When a slice is shorter than stated above (an internal invariant, never user input).
#[inline]
pub fn tile(
    isa: Isa,
    queries: &[f32],
    panel: &[f32],
    dim: usize,
    thresholds: &[f32; MR],
    tile: &mut [f32; TILE],
    masks: &mut [u32; MR],
) {
    assert!(queries.len() >= MR * dim && panel.len() >= NR * dim);
    // The level is public, so a caller may name one its CPU lacks: it is lowered here (a cached
    // load per tile).
    match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: the level is supported, so the CPU has AVX-512F; the slice lengths were
            // checked at the top of this function.
            unsafe { tile_avx512(queries, panel, dim, thresholds, tile, masks) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => {
            for half in 0..2 {
                let rows = &queries[half * (MR / 2)..];
                let th = &thresholds[half * (MR / 2)..];
                let out = &mut tile[half * (MR / 2) * NR..];
                let m = &mut masks[half * (MR / 2)..];
                // SAFETY: the level is supported, so the CPU has AVX2 and FMA. Lengths:
                // `rows` starts at row 0 or 6 of the tile, so rows.len() >= MR * dim - 6 =
                // MR * (dim - 1) + 6; `th` and `m` have >= 6 entries and `out` >= 6 * NR.
                unsafe { tile_avx2_half(rows, panel, dim, th, out, m) };
            }
        }
        _ => tile_portable(queries, panel, dim, thresholds, tile, masks),
    }
}

fn tile_portable(
    queries: &[f32],
    panel: &[f32],
    dim: usize,
    thresholds: &[f32; MR],
    tile: &mut [f32; TILE],
    masks: &mut [u32; MR],
) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..dim {
        let b = &panel[p * NR..(p + 1) * NR];
        for (i, row) in acc.iter_mut().enumerate() {
            let a = queries[p * MR + i];
            for (c, &bj) in row.iter_mut().zip(b) {
                *c += a * bj;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let mut mask = 0u32;
        for (j, &s) in row.iter().enumerate() {
            tile[i * NR + j] = s;
            if s > thresholds[i] {
                mask |= 1 << j;
            }
        }
        masks[i] = mask;
    }
}

/// AVX-512F kernel: 12 query rows x 16 references = 12 zmm accumulators; per component one load
/// of the panel and 12 broadcast-FMAs.
///
/// # Safety
/// The CPU must support AVX-512F; `queries.len() >= MR * dim` and `panel.len() >= NR * dim`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    queries: &[f32],
    panel: &[f32],
    dim: usize,
    thresholds: &[f32; MR],
    tile: &mut [f32; TILE],
    masks: &mut [u32; MR],
) {
    use std::arch::x86_64::*;
    let a = queries.as_ptr();
    let b = panel.as_ptr();
    let mut c = [_mm512_setzero_ps(); MR];
    for p in 0..dim {
        // SAFETY: p < dim, so p * NR + 15 < NR * dim <= panel.len(), and p * MR + i < MR * dim <=
        // queries.len() for every row i < MR (checked by the caller); loads are unaligned.
        unsafe {
            let bv = _mm512_loadu_ps(b.add(p * NR));
            let ap = a.add(p * MR);
            for (i, acc) in c.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(i)), bv, *acc);
            }
        }
    }
    let out = tile.as_mut_ptr();
    for (i, &acc) in c.iter().enumerate() {
        // SAFETY: i < MR, so i * NR + 15 < TILE = tile.len(); the store is unaligned.
        unsafe { _mm512_storeu_ps(out.add(i * NR), acc) };
        let t = _mm512_set1_ps(thresholds[i]);
        masks[i] = u32::from(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(acc, t));
    }
}

/// AVX2+FMA half tile: 6 query rows x 16 references = 12 ymm accumulators, 2 loads of the panel
/// and 6 broadcasts per component. Called twice per tile (rows 0..6 and 6..12).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `queries` starts at row 0 or 6 of a packed tile (stride
/// `MR` per component) with `queries.len() >= MR * (dim - 1) + 6`, `panel.len() >= NR * dim`,
/// `thresholds.len() >= 6`, `tile.len() >= 6 * NR`, `masks.len() >= 6`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2_half(
    queries: &[f32],
    panel: &[f32],
    dim: usize,
    thresholds: &[f32],
    tile: &mut [f32],
    masks: &mut [u32],
) {
    use std::arch::x86_64::*;
    let a = queries.as_ptr();
    let b = panel.as_ptr();
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();
    for p in 0..dim {
        // SAFETY: p < dim, so p * NR + 15 < NR * dim <= panel.len() and p * MR + i <
        // MR * (dim - 1) + 6 <= queries.len() for every row i < 6 (the caller's contract).
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            let a0 = _mm256_broadcast_ss(&*a.add(p * MR));
            c00 = _mm256_fmadd_ps(a0, b0, c00);
            c01 = _mm256_fmadd_ps(a0, b1, c01);
            let a1 = _mm256_broadcast_ss(&*a.add(p * MR + 1));
            c10 = _mm256_fmadd_ps(a1, b0, c10);
            c11 = _mm256_fmadd_ps(a1, b1, c11);
            let a2 = _mm256_broadcast_ss(&*a.add(p * MR + 2));
            c20 = _mm256_fmadd_ps(a2, b0, c20);
            c21 = _mm256_fmadd_ps(a2, b1, c21);
            let a3 = _mm256_broadcast_ss(&*a.add(p * MR + 3));
            c30 = _mm256_fmadd_ps(a3, b0, c30);
            c31 = _mm256_fmadd_ps(a3, b1, c31);
            let a4 = _mm256_broadcast_ss(&*a.add(p * MR + 4));
            c40 = _mm256_fmadd_ps(a4, b0, c40);
            c41 = _mm256_fmadd_ps(a4, b1, c41);
            let a5 = _mm256_broadcast_ss(&*a.add(p * MR + 5));
            c50 = _mm256_fmadd_ps(a5, b0, c50);
            c51 = _mm256_fmadd_ps(a5, b1, c51);
        }
    }
    let rows = [
        (c00, c01),
        (c10, c11),
        (c20, c21),
        (c30, c31),
        (c40, c41),
        (c50, c51),
    ];
    let out = tile.as_mut_ptr();
    for (i, &(lo, hi)) in rows.iter().enumerate() {
        // SAFETY: i < 6, so i * NR + 15 < 6 * NR <= tile.len(); unaligned stores are used.
        unsafe {
            _mm256_storeu_ps(out.add(i * NR), lo);
            _mm256_storeu_ps(out.add(i * NR + 8), hi);
        }
        let t = _mm256_set1_ps(thresholds[i]);
        let m_lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(lo, t)) as u32;
        let m_hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(hi, t)) as u32;
        masks[i] = m_lo | (m_hi << 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(queries: &[f32], panel: &[f32], dim: usize) -> Vec<f64> {
        let mut out = vec![0.0; TILE];
        for i in 0..MR {
            for j in 0..NR {
                out[i * NR + j] = (0..dim)
                    .map(|p| queries[p * MR + i] as f64 * panel[p * NR + j] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn every_kernel_matches_a_naive_tile() {
        let dim = 37;
        let queries: Vec<f32> = (0..MR * dim)
            .map(|x| ((x * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let panel: Vec<f32> = (0..NR * dim)
            .map(|x| ((x * 104729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let expected = naive(&queries, &panel, dim);
        let mut tiles = Vec::new();
        let levels: Vec<Isa> = crate::simd::supported().collect();
        for &isa in &levels {
            let mut tile = [0.0; TILE];
            let mut masks = [0; MR];
            let thresholds = [0.0; MR];
            super::tile(
                isa,
                &queries,
                &panel,
                dim,
                &thresholds,
                &mut tile,
                &mut masks,
            );
            for i in 0..MR {
                for j in 0..NR {
                    let got = tile[i * NR + j];
                    assert!((got as f64 - expected[i * NR + j]).abs() < 1e-4, "{isa}");
                    assert_eq!(masks[i] >> j & 1 == 1, got > 0.0);
                }
            }
            tiles.push(tile);
        }
        // The two FMA kernels compute every score in the same order: bit-identical.
        if tiles.len() == 3 {
            assert_eq!(tiles[1], tiles[2]);
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p mclstexp-core kernel_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a speed probe, not a test"]
    fn kernel_speed() {
        let dim = 256;
        let queries: Vec<f32> = (0..16 * MR * dim).map(|x| (x % 7) as f32).collect();
        let panel: Vec<f32> = (0..NR * dim).map(|x| (x % 5) as f32).collect();
        let isa = crate::simd::isa();
        let mut scores = [0.0; TILE];
        let mut masks = [0; MR];
        let th = [f32::INFINITY; MR];
        let reps = 20000;
        let t = std::time::Instant::now();
        for r in 0..reps {
            let q = &queries[(r % 16) * MR * dim..];
            tile(isa, q, &panel, dim, &th, &mut scores, &mut masks);
            std::hint::black_box(&scores);
        }
        let dt = t.elapsed().as_secs_f64();
        let flops = 2.0 * (MR * NR * dim * reps) as f64;
        println!("{}: {:.1} GFLOP/s", name(isa), flops / dt / 1e9);
    }
}
