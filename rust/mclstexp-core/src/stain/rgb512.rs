//! 16 packed RGB pixels <-> three AVX-512 registers of 16 `i32` lanes (one byte value each),
//! shared by the Macenko and Reinhard AVX-512 kernels.
//!
//! Every function here is `unsafe` to call only because it needs AVX-512F and AVX-512BW: the
//! caller must have checked that the CPU supports both. Memory is reached through fixed-size
//! arrays under masks (each `unsafe` block says why).

use std::arch::x86_64::*;

/// Pixels per group (one register per channel).
pub(super) const GROUP: usize = 16;
/// Bytes of a group of RGB pixels.
pub(super) const GROUP_BYTES: usize = 3 * GROUP;
/// The first 12 of 16 dwords: 48 bytes = 16 RGB pixels.
const MASK48: __mmask16 = 0x0fff;

/// The `pshufb` patterns of [`unpack`], one per channel: built once per kernel call.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn picks() -> [__m512i; 3] {
    // Per 128-bit lane: bytes c, c + 3, c + 6, c + 9, each followed by three "zero" (0x80) bytes.
    let pick = |c: i32| {
        let dword = |k: i32| (c + 3 * k) | (0x80 << 8) | (0x80 << 16) | (0x80u32 << 24) as i32;
        _mm512_broadcast_i32x4(_mm_setr_epi32(dword(0), dword(1), dword(2), dword(3)))
    };
    [pick(0), pick(1), pick(2)]
}

/// Channel bytes of 16 RGB pixels, one `i32` lane per pixel (`picks` from [`picks`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn unpack(px: &[u8; GROUP_BYTES], picks: &[__m512i; 3]) -> [__m512i; 3] {
    // SAFETY: the mask selects dwords 0..12, bytes 0..48 of `px`, which is 48 bytes long; masked
    // -out dwords are not read (no fault), and no alignment is needed.
    let v = unsafe { _mm512_maskz_loadu_epi32(MASK48, px.as_ptr().cast::<i32>()) };
    // 4 pixels (12 bytes) to each 128-bit lane.
    let spread = _mm512_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 9, 10, 11, 0);
    let v = _mm512_permutexvar_epi32(spread, v);
    [0, 1, 2].map(|c| _mm512_shuffle_epi8(v, picks[c]))
}

/// Inverse of [`unpack`]: bytes (`i32` lanes in `0..=255`) of 16 pixels into `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn pack(rgb: [__m512i; 3], out: &mut [u8; GROUP_BYTES]) {
    let p = _mm512_or_si512(
        _mm512_or_si512(rgb[0], _mm512_slli_epi32::<8>(rgb[1])),
        _mm512_slli_epi32::<16>(rgb[2]),
    );
    // Per lane: bytes 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14 to the front.
    let squeeze = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128,
    ));
    let p = _mm512_shuffle_epi8(p, squeeze);
    let gather = _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 15, 15, 15, 15);
    let p = _mm512_permutexvar_epi32(gather, p);
    // SAFETY: the mask selects dwords 0..12, bytes 0..48 of `out`, which is 48 bytes long;
    // masked-out dwords are not written, and no alignment is needed.
    unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().cast::<i32>(), MASK48, p) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_pack_round_trip() {
        if !crate::simd::Isa::Avx512.is_supported() {
            return;
        }
        let px: [u8; GROUP_BYTES] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        #[target_feature(enable = "avx512f,avx512bw")]
        fn round_trip(px: &[u8; GROUP_BYTES]) -> ([[i32; GROUP]; 3], [u8; GROUP_BYTES]) {
            let ch = unpack(px, &picks());
            let mut lanes = [[0i32; GROUP]; 3];
            for c in 0..3 {
                // SAFETY: 16 ints, unaligned store.
                unsafe { _mm512_storeu_si512(lanes[c].as_mut_ptr().cast(), ch[c]) };
            }
            let mut out = [0u8; GROUP_BYTES];
            pack(ch, &mut out);
            (lanes, out)
        }
        // SAFETY: the CPU supports AVX-512F and BW (checked above).
        let (lanes, out) = unsafe { round_trip(&px) };
        for i in 0..GROUP {
            for c in 0..3 {
                assert_eq!(lanes[c][i], px[3 * i + c] as i32);
            }
        }
        assert_eq!(out, px);
    }
}
