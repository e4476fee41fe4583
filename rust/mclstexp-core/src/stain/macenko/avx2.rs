//! AVX2 + FMA versions of Macenko's per-pixel passes (angles, concentrations, re-composition),
//! 8 pixels per step.
//!
//! The projection passes look up the same interleaved pair tables as the portable loops
//! (`pair_tables`: one 8-byte entry per channel and byte value holds both directions' terms), 4
//! pixels per 64-bit gather, and add the three channels' terms in the portable order; the
//! pseudo-angle, the bin map and the byte truncation are the portable operations lane by lane
//! (same IEEE division, `max`/`min` with the same NaN outcome). So every value, histogram and
//! order statistic is bit-identical to the portable path's; only the histogram halves a pixel
//! counts into differ, which the merge makes irrelevant. No FMA is used: a fused product would
//! round differently from the portable code.
//!
//! Every function here is `unsafe` only because it needs AVX2 and FMA: the caller must have
//! checked that the CPU supports both.

use std::arch::x86_64::*;

use super::super::rgb256::{pack_dwords, unpack, GROUP, GROUP_BYTES};
use super::super::select::{Binner, Counts, BIN_MASK, SELECT_BINS};
use super::{Lut, PairTables};

/// [`super::pair_dot`] of 8 pixels (channel bytes `idx` from `unpack`): the first and second
/// terms' sums, one lane per pixel, in pixel order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pair_dot(t: &PairTables, idx: &[__m256i; 3]) -> (__m256, __m256) {
    // Entry `t[j][v]` is 8 bytes at `t[j] + 8 v`: one 64-bit gather lane per pixel.
    let gather = |j: usize, v: __m128i| {
        // SAFETY: every index lane is a byte value (0..=255, zero-extended by `unpack`) and each
        // table has 256 entries of 8 bytes, so every gathered address lies inside `t[j]`.
        _mm256_castpd_ps(unsafe { _mm256_i32gather_pd::<8>(t[j].as_ptr().cast::<f64>(), v) })
    };
    let sum = |half: fn(__m256i) -> __m128i| {
        let (r, g, b) = (
            gather(0, half(idx[0])),
            gather(1, half(idx[1])),
            gather(2, half(idx[2])),
        );
        // `(r + g) + b` on both terms: the portable order.
        _mm256_add_ps(_mm256_add_ps(r, g), b)
    };
    // [x0 y0 x1 y1 | x2 y2 x3 y3] and [x4 y4 x5 y5 | x6 y6 x7 y7].
    let lo = sum(|v| _mm256_castsi256_si128(v));
    let hi = sum(|v| _mm256_extracti128_si256::<1>(v));
    // Even (odd) floats of both: pixels 0, 1, 4, 5, 2, 3, 6, 7; then in order.
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let x = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
    let y = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
    (
        _mm256_permutevar8x32_ps(x, order),
        _mm256_permutevar8x32_ps(y, order),
    )
}

/// `Binner::bin` per lane, stored to `out`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bins(v: __m256, b: &Binner, out: &mut [u32; GROUP]) {
    let x = _mm256_mul_ps(
        _mm256_sub_ps(v, _mm256_set1_ps(b.lo)),
        _mm256_set1_ps(b.scale),
    );
    // `_mm256_max_ps(x, 0)` returns its second operand, 0, when `x` is NaN, as `f32::max` does.
    let x = _mm256_max_ps(x, _mm256_setzero_ps());
    let x = _mm256_min_ps(x, _mm256_set1_ps((SELECT_BINS - 1) as f32));
    // SAFETY: `out` holds 8 u32, one 32-byte unaligned store.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_cvttps_epi32(x)) };
}

/// Concentration pass over the first `8 * k` pixels of `pixels` (`[n, 3]` bytes): the H and E
/// concentrations through the pair tables `t01` into `out` (each at least as long as the pixels
/// done) and, when both binners exist, their histograms into `hists` (`2 * SELECT_BINS` each).
/// Returns the number of pixels done; the caller does the rest.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn concentrations(
    pixels: &[u8],
    t01: &PairTables,
    binners: Option<(&Binner, &Binner)>,
    [c0, c1]: [&mut [f32]; 2],
    [h0, h1]: [&mut [u32]; 2],
) -> usize {
    let (mut b0, mut b1) = ([0u32; GROUP], [0u32; GROUP]);
    let (Ok(h0), Ok(h1)) = (<&mut Counts>::try_from(h0), <&mut Counts>::try_from(h1)) else {
        return 0;
    };
    let mut done = 0;
    let (groups, _) = pixels.as_chunks::<GROUP_BYTES>();
    for ((px, a), b) in groups
        .iter()
        .zip(c0.as_chunks_mut::<GROUP>().0)
        .zip(c1.as_chunks_mut::<GROUP>().0)
    {
        let (va, vb) = pair_dot(t01, &unpack(px));
        // SAFETY: `a` and `b` hold 8 floats each, one 32-byte unaligned store each.
        unsafe {
            _mm256_storeu_ps(a.as_mut_ptr(), va);
            _mm256_storeu_ps(b.as_mut_ptr(), vb);
        }
        if let Some((bin0, bin1)) = binners {
            bins(va, bin0, &mut b0);
            bins(vb, bin1, &mut b1);
            for i in 0..GROUP {
                let half = (i & 1) * SELECT_BINS;
                // Bins are < SELECT_BINS (clamped above): the mask changes nothing, but shows
                // the compiler that the index is in range.
                h0[(b0[i] as usize & BIN_MASK) + half] += 1;
                h1[(b1[i] as usize & BIN_MASK) + half] += 1;
            }
        }
        done += GROUP;
    }
    done
}

/// Angle pass: pseudo-angles of the first `8 * k` pixels of `pixels` (their ODs projected through
/// the pair tables `txy` of the plane's two directions) appended to `out`, counted into `hist`
/// (`2 * SELECT_BINS`) under `binner`. Returns the number of pixels done.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pseudo_angles(
    pixels: &[u8],
    txy: &PairTables,
    binner: &Binner,
    out: &mut Vec<f32>,
    hist: &mut [u32],
) -> usize {
    let Ok(hist) = <&mut Counts>::try_from(hist) else {
        return 0;
    };
    let mut bin = [0u32; GROUP];
    let mut lanes = [0f32; GROUP];
    let (zero, one) = (_mm256_setzero_ps(), _mm256_set1_ps(1.0));
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (groups, _) = pixels.as_chunks::<GROUP_BYTES>();
    for px in groups {
        let (x, y) = pair_dot(txy, &unpack(px));
        // As `pseudo_angle`: s = |x| + |y|; r = x / s; y >= 0 ? 1 - r : r - 1; s == 0 -> 0.
        let s = _mm256_add_ps(_mm256_and_ps(x, abs_mask), _mm256_and_ps(y, abs_mask));
        let r = _mm256_div_ps(x, s);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(y, zero);
        let p = _mm256_blendv_ps(_mm256_sub_ps(r, one), _mm256_sub_ps(one, r), up);
        let p = _mm256_blendv_ps(p, zero, _mm256_cmp_ps::<_CMP_EQ_OQ>(s, zero));
        // SAFETY: `lanes` holds 8 floats, one 32-byte unaligned store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), p) };
        out.extend_from_slice(&lanes);
        bins(p, binner, &mut bin);
        for (i, &b) in bin.iter().enumerate() {
            // As above: the mask shows that the index is in range.
            hist[(b as usize & BIN_MASK) + (i & 1) * SELECT_BINS] += 1;
        }
    }
    GROUP * groups.len()
}

/// Re-composition through `lut[j][v][k]` (see `recompose_by_tables`) for the first `8 * k`
/// pixels of `src` into `dst`: per pixel, `lut[0][r] * lut[1][g] * lut[2][b]` on 4 lanes (the
/// fourth is padding), two pixels per register, clamped to `[0, 255]` (NaN -> 0, as
/// `byte_trunc`) and truncated, exactly as the portable loop. Returns the number of pixels done.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn reconstruct(src: &[u8], dst: &mut [u8], lut: &Lut) -> usize {
    let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    // Pixel `p`'s 4 products, pixel `p + 4`'s in the high half.
    let product = |s: &[u8; GROUP_BYTES], p: usize| {
        let entry = |j: usize, q: usize| &lut[j][s[3 * q + j] as usize];
        let load = |j: usize| {
            let (lo, hi) = (entry(j, p), entry(j, p + 4));
            // SAFETY: each entry is 4 floats (16 bytes), unaligned loads.
            unsafe { _mm256_set_m128(_mm_loadu_ps(hi.as_ptr()), _mm_loadu_ps(lo.as_ptr())) }
        };
        let v = _mm256_mul_ps(_mm256_mul_ps(load(0), load(1)), load(2));
        // `_mm256_max_ps(v, 0)` returns its second operand, 0, when `v` is NaN, as `f32::max`.
        _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), top))
    };
    let (groups, _) = src.as_chunks::<GROUP_BYTES>();
    let (outs, _) = dst.as_chunks_mut::<GROUP_BYTES>();
    for (s, d) in groups.iter().zip(outs.iter_mut()) {
        let q = [0, 1, 2, 3].map(|p| product(s, p));
        // Lanes hold 0..=255, so the saturating packs are exact: pixels 0-3 as [r, g, b, 0] in
        // the low half, 4-7 in the high half.
        let w = _mm256_packus_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        pack_dwords(w, d);
    }
    GROUP * groups.len().min(outs.len())
}

/// Indices that move the lanes set in an 8-bit mask to the front, in order (for
/// `_mm256_permutevar8x32_epi32`; the other lanes are don't-cares).
static COMPRESS: [[u32; GROUP]; 256] = {
    let mut t = [[0u32; GROUP]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut k) = (0, 0);
        while lane < GROUP {
            if mask >> lane & 1 == 1 {
                t[mask][k] = lane as u32;
                k += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    t
};

/// Tissue compaction (`compact_tissue`) over the first `8 * k` pixels of `pixels`: the pixels
/// whose three bytes are all `<= tissue_max`, in order, into `out` from its start (3 bytes
/// each). Each step stores 32 bytes at the cursor, so it stops early where `out` has no room
/// for that (the caller gives it a few pixels of slack). Returns `(pixels done, pixels kept)`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn compact_tissue(
    pixels: &[u8],
    tissue_max: u8,
    out: &mut [u8],
) -> (usize, usize) {
    let tmax = _mm256_set1_epi32(i32::from(tissue_max));
    let z = -128i8;
    // Per 128-bit lane: bytes 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14 to the front, then the
    // lanes' 12 bytes side by side.
    let squeeze = _mm256_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, z, z, z, z, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14,
        z, z, z, z,
    );
    let join = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);
    let (mut done, mut kept) = (0, 0);
    let (groups, _) = pixels.as_chunks::<GROUP_BYTES>();
    for px in groups {
        let Some(dst) = out.get_mut(3 * kept..3 * kept + 32) else {
            break;
        };
        let [r, g, b] = unpack(px);
        let brightest = _mm256_max_epi32(_mm256_max_epi32(r, g), b);
        let background = _mm256_cmpgt_epi32(brightest, tmax);
        let keep = !(_mm256_movemask_ps(_mm256_castsi256_ps(background)) as u32) & 0xff;
        // [r, g, b, 0] per pixel, the kept ones to the front, 3 bytes each.
        let dwords = _mm256_or_si256(
            _mm256_or_si256(r, _mm256_slli_epi32::<8>(g)),
            _mm256_slli_epi32::<16>(b),
        );
        let order = &COMPRESS[keep as usize];
        // SAFETY: `order` holds 8 u32, one 32-byte unaligned load.
        let order = unsafe { _mm256_loadu_si256(order.as_ptr().cast()) };
        let packed = _mm256_permutevar8x32_epi32(dwords, order);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(packed, squeeze), join);
        // SAFETY: `dst` is 32 bytes long, one unaligned store.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), bytes) };
        kept += keep.count_ones() as usize;
        done += GROUP;
    }
    (done, kept)
}
