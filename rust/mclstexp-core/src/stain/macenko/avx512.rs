//! AVX-512 versions of Macenko's two per-pixel projection loops (the angle and concentration
//! passes), 16 pixels per step, and of the re-composition.
//!
//! The projection passes look up the same interleaved pair tables as the portable loops
//! (`pair_tables`), 8 pixels per 64-bit gather (half the gathered elements of one 32-bit gather
//! per table and direction). Every lane computes exactly what the portable loop computes for its
//! pixel (the same table entries summed in the same order, the same IEEE division, `max`/`min`
//! against the same bounds with the same NaN outcome, truncation), so the values, and hence the
//! histograms and the selected order statistics, are bit-identical. Only the histogram halves a pixel counts into
//! differ, which the merge makes irrelevant.
//!
//! Every function here is `unsafe` only because it needs AVX-512F and AVX-512BW: the caller must
//! have checked that the CPU supports both.

use std::arch::x86_64::*;

use super::super::rgb512::{picks, unpack, GROUP, GROUP_BYTES};
use super::super::select::{Binner, Counts, BIN_MASK, SELECT_BINS};
use super::{Lut, PairTables};

/// `super::pair_dot` of 16 pixels (channel bytes `idx` from `unpack`): the first and second
/// terms' sums, one lane per pixel, in pixel order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn pair_dot(t: &PairTables, idx: &[__m512i; 3]) -> (__m512, __m512) {
    // Entry `t[j][v]` is 8 bytes at `t[j] + 8 v`: one 64-bit gather lane per pixel.
    let gather = |j: usize, v: __m256i| {
        // SAFETY: every index lane is a byte value (0..=255, zero-extended by `unpack`) and each
        // table has 256 entries of 8 bytes, so every gathered address lies inside `t[j]`.
        _mm512_castpd_ps(unsafe { _mm512_i32gather_pd::<8>(v, t[j].as_ptr().cast::<f64>()) })
    };
    let sum = |half: fn(__m512i) -> __m256i| {
        let (r, g, b) = (
            gather(0, half(idx[0])),
            gather(1, half(idx[1])),
            gather(2, half(idx[2])),
        );
        // `(r + g) + b` on both terms: the portable order.
        _mm512_add_ps(_mm512_add_ps(r, g), b)
    };
    // [x0 y0 x1 y1 .. x7 y7] and [x8 y8 .. x15 y15].
    let lo = sum(|v| _mm512_castsi512_si256(v));
    let hi = sum(|v| _mm512_extracti64x4_epi64::<1>(v));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    (
        _mm512_permutex2var_ps(lo, even, hi),
        _mm512_permutex2var_ps(lo, odd, hi),
    )
}

/// `Binner::bin` per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn bins(v: __m512, b: &Binner) -> __m512i {
    let x = _mm512_mul_ps(
        _mm512_sub_ps(v, _mm512_set1_ps(b.lo)),
        _mm512_set1_ps(b.scale),
    );
    // `_mm512_max_ps(x, 0)` returns 0 when `x` is NaN, as `f32::max` does.
    let x = _mm512_max_ps(x, _mm512_setzero_ps());
    let x = _mm512_min_ps(x, _mm512_set1_ps((SELECT_BINS - 1) as f32));
    _mm512_cvttps_epi32(x)
}

/// Counts the 16 bins of `bins` (each `< SELECT_BINS`) into `hist` (`2 * SELECT_BINS`), even
/// lanes into the first half, odd lanes into the second. The lanes are read out of the register
/// (a store and 16 reloads would wait on store forwarding).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn count(hist: &mut Counts, bins: __m512i) {
    let quarters = [
        _mm512_castsi512_si128(bins),
        _mm512_extracti32x4_epi32::<1>(bins),
        _mm512_extracti32x4_epi32::<2>(bins),
        _mm512_extracti32x4_epi32::<3>(bins),
    ];
    for q in quarters {
        let lanes = [
            _mm_cvtsi128_si32(q),
            _mm_extract_epi32::<1>(q),
            _mm_extract_epi32::<2>(q),
            _mm_extract_epi32::<3>(q),
        ];
        for (i, b) in lanes.into_iter().enumerate() {
            // Bins are < SELECT_BINS: the mask changes nothing, but shows the compiler that the
            // index is in range.
            hist[(b as usize & BIN_MASK) + (i & 1) * SELECT_BINS] += 1;
        }
    }
}

/// Concentration pass over the first `16 * k` pixels of `pixels` (`[n, 3]` bytes): the H and E
/// concentrations through `tables` into `out` (each at least as long as the pixels done) and,
/// when both binners exist, their histograms into `hists` (`2 * SELECT_BINS` each). Returns the
/// number of pixels done; the caller does the rest.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn concentrations(
    pixels: &[u8],
    t01: &PairTables,
    binners: Option<(&Binner, &Binner)>,
    [c0, c1]: [&mut [f32]; 2],
    [h0, h1]: [&mut [u32]; 2],
) -> usize {
    let (Ok(h0), Ok(h1)) = (<&mut Counts>::try_from(h0), <&mut Counts>::try_from(h1)) else {
        return 0;
    };
    let picks = picks();
    let mut done = 0;
    for ((px, a), b) in pixels
        .chunks_exact(GROUP_BYTES)
        .zip(c0.chunks_exact_mut(GROUP))
        .zip(c1.chunks_exact_mut(GROUP))
    {
        let Ok(px) = <&[u8; GROUP_BYTES]>::try_from(px) else {
            break;
        };
        let (va, vb) = pair_dot(t01, &unpack(px, &picks));
        // SAFETY: `a` and `b` hold 16 floats each, one 64-byte unaligned store each.
        unsafe {
            _mm512_storeu_ps(a.as_mut_ptr(), va);
            _mm512_storeu_ps(b.as_mut_ptr(), vb);
        }
        if let Some((bin0, bin1)) = binners {
            count(h0, bins(va, bin0));
            count(h1, bins(vb, bin1));
        }
        done += GROUP;
    }
    done
}

/// Angle pass: pseudo-angles of the first `16 * k` pixels of `pixels` (their ODs projected through
/// the tables of the plane's two directions) appended to `out`, counted into `hist`
/// (`2 * SELECT_BINS`) under `binner`. Returns the number of pixels done.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
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
    let picks = picks();
    let mut lanes = [0f32; GROUP];
    let (zero, one) = (_mm512_setzero_ps(), _mm512_set1_ps(1.0));
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let mut done = 0;
    for px in pixels.chunks_exact(GROUP_BYTES) {
        let Ok(px) = <&[u8; GROUP_BYTES]>::try_from(px) else {
            break;
        };
        let (x, y) = pair_dot(txy, &unpack(px, &picks));
        let abs =
            |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
        // As `pseudo_angle`: s = |x| + |y|; r = x / s; y >= 0 ? 1 - r : r - 1; s == 0 -> 0.
        let s = _mm512_add_ps(abs(x), abs(y));
        let r = _mm512_div_ps(x, s);
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(y, zero);
        let p = _mm512_mask_blend_ps(up, _mm512_sub_ps(r, one), _mm512_sub_ps(one, r));
        let p = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(s, zero), p, zero);
        // SAFETY: `lanes` holds 16 floats, one 64-byte unaligned store.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), p) };
        out.extend_from_slice(&lanes);
        count(hist, bins(p, binner));
        done += GROUP;
    }
    done
}

/// Reconstruction through `lut[j][v][k]` (see `macenko_one`) for the first `4 * k` pixels of
/// `src` into `dst`: per pixel, `lut[0][r] * lut[1][g] * lut[2][b]` on 4 lanes (the fourth is
/// padding), clamped to `[0, 255]` (NaN -> 0, as `byte_trunc`) and truncated, exactly as the
/// portable loop. Returns the number of pixels done.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW (only their SSSE3 subset is used here).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn reconstruct(src: &[u8], dst: &mut [u8], lut: &Lut) -> usize {
    let (zero, top) = (_mm_setzero_ps(), _mm_set1_ps(255.0));
    // Bytes 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14 (RGB of 4 pixels) to the front.
    let squeeze = _mm_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128,
    );
    let mut tmp = [0u8; 16];
    let mut done = 0;
    for (s, d) in src.chunks_exact(12).zip(dst.chunks_exact_mut(12)) {
        let mut q = [_mm_setzero_si128(); 4];
        for (p, slot) in q.iter_mut().enumerate() {
            let (r, g, b) = (
                &lut[0][s[3 * p] as usize],
                &lut[1][s[3 * p + 1] as usize],
                &lut[2][s[3 * p + 2] as usize],
            );
            // SAFETY: each entry is 4 floats (16 bytes), unaligned loads.
            let v = unsafe {
                _mm_mul_ps(
                    _mm_mul_ps(_mm_loadu_ps(r.as_ptr()), _mm_loadu_ps(g.as_ptr())),
                    _mm_loadu_ps(b.as_ptr()),
                )
            };
            // `_mm_max_ps(v, 0)` returns 0 when `v` is NaN, as `f32::max` does.
            *slot = _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(v, zero), top));
        }
        // Lanes hold 0..=255, so the saturating packs are exact.
        let w = _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
        // SAFETY: `tmp` holds 16 bytes, one unaligned store.
        unsafe { _mm_storeu_si128(tmp.as_mut_ptr().cast(), _mm_shuffle_epi8(w, squeeze)) };
        d.copy_from_slice(&tmp[..12]);
        done += 4;
    }
    done
}

/// Tissue compaction (`compact_tissue`) over the first `16 * k` pixels of `pixels`: the pixels
/// whose three bytes are all `<= tissue_max`, in order, into `out` from its start (3 bytes
/// each; `out` must hold 3 bytes per pixel kept, which `pixels.len()` bytes always do; it stops
/// early otherwise). Returns `(pixels done, pixels kept)`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn compact_tissue(
    pixels: &[u8],
    tissue_max: u8,
    out: &mut [u8],
) -> (usize, usize) {
    let picks = picks();
    let tmax = _mm512_set1_epi32(i32::from(tissue_max));
    // Per 128-bit lane: bytes 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14 to the front; then the
    // lanes' 12 bytes side by side.
    let squeeze = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128,
    ));
    let join = _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 15, 15, 15, 15);
    let (mut done, mut kept) = (0, 0);
    for px in pixels.as_chunks::<GROUP_BYTES>().0 {
        let [r, g, b] = unpack(px, &picks);
        let brightest = _mm512_max_epi32(_mm512_max_epi32(r, g), b);
        let keep = _mm512_cmple_epi32_mask(brightest, tmax);
        let n = keep.count_ones() as usize;
        let Some(dst) = out.get_mut(3 * kept..3 * (kept + n)) else {
            break;
        };
        // [r, g, b, 0] per pixel, the kept ones to the front, 3 bytes each.
        let dwords = _mm512_or_si512(
            _mm512_or_si512(r, _mm512_slli_epi32::<8>(g)),
            _mm512_slli_epi32::<16>(b),
        );
        let packed = _mm512_maskz_compress_epi32(keep, dwords);
        let bytes = _mm512_permutexvar_epi32(join, _mm512_shuffle_epi8(packed, squeeze));
        // The first `3 n` (<= 48) bytes.
        let bytemask: __mmask64 = (1u64 << (3 * n)) - 1;
        // SAFETY: the mask selects bytes 0..3n, exactly `dst`; masked-out bytes are neither
        // written nor faulted on, and no alignment is needed.
        unsafe { _mm512_mask_storeu_epi8(dst.as_mut_ptr().cast(), bytemask, bytes) };
        kept += n;
        done += GROUP;
    }
    (done, kept)
}
