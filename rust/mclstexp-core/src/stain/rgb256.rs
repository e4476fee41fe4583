//! 8 packed RGB pixels <-> three AVX2 registers of 8 `i32` lanes (one byte value each), shared
//! by the Macenko and Reinhard AVX2 kernels (the 256-bit counterpart of `rgb512`).
//!
//! Every function here is `unsafe` to call only because it needs AVX2 (the kernels enable FMA
//! with it): the caller must have checked that the CPU supports both. Memory is reached through
//! fixed-size arrays under masks (each `unsafe` block says why).

use std::arch::x86_64::*;

/// Pixels per group (one register per channel).
pub(super) const GROUP: usize = 8;
/// Bytes of a group of RGB pixels.
pub(super) const GROUP_BYTES: usize = 3 * GROUP;

/// The first 6 of 8 dwords: 24 bytes = 8 RGB pixels.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mask24() -> __m256i {
    _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0)
}

/// Channel bytes of 8 RGB pixels, one `i32` lane per pixel, in pixel order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn unpack(px: &[u8; GROUP_BYTES]) -> [__m256i; 3] {
    // SAFETY: the mask selects dwords 0..6, bytes 0..24 of `px`, which is 24 bytes long; the
    // masked-out dwords are not read (vpmaskmovd does not touch them), and no alignment is needed.
    let v = unsafe { _mm256_maskload_epi32(px.as_ptr().cast::<i32>(), mask24()) };
    // Pixels 0-3 (bytes 0..12) to the low 128-bit lane, pixels 4-7 (bytes 12..24) to the high.
    let v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0));
    // Per 128-bit lane: bytes c, c + 3, c + 6, c + 9 into the low byte of each dword, the other
    // bytes zero (a `pshufb` index with the high bit set writes 0).
    let pick = |c: i32| {
        let dword = |k: i32| (c + 3 * k) | (0x80 << 8) | (0x80 << 16) | (0x80u32 << 24) as i32;
        _mm256_broadcastsi128_si256(_mm_setr_epi32(dword(0), dword(1), dword(2), dword(3)))
    };
    [0, 1, 2].map(|c| _mm256_shuffle_epi8(v, pick(c)))
}

/// Inverse of [`unpack`]: bytes (`i32` lanes in `0..=255`) of 8 pixels into `out`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn pack(rgb: [__m256i; 3], out: &mut [u8; GROUP_BYTES]) {
    let p = _mm256_or_si256(
        _mm256_or_si256(rgb[0], _mm256_slli_epi32::<8>(rgb[1])),
        _mm256_slli_epi32::<16>(rgb[2]),
    );
    pack_dwords(p, out);
}

/// Bytes 0, 1, 2 of each dword of `p` (8 pixels as `[r, g, b, _]`) into `out`, in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn pack_dwords(p: __m256i, out: &mut [u8; GROUP_BYTES]) {
    let z = -128i8;
    let squeeze = _mm256_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, z, z, z, z, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14,
        z, z, z, z,
    );
    let p = _mm256_shuffle_epi8(p, squeeze);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));
    // SAFETY: the mask selects dwords 0..6, bytes 0..24 of `out`, which is 24 bytes long; the
    // masked-out dwords are not written, and no alignment is needed.
    unsafe { _mm256_maskstore_epi32(out.as_mut_ptr().cast::<i32>(), mask24(), p) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_pack_round_trip() {
        if !crate::simd::Isa::Avx2Fma.is_supported() {
            return;
        }
        let px: [u8; GROUP_BYTES] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        #[target_feature(enable = "avx2,fma")]
        fn round_trip(px: &[u8; GROUP_BYTES]) -> ([[i32; GROUP]; 3], [u8; GROUP_BYTES]) {
            let ch = unpack(px);
            let mut lanes = [[0i32; GROUP]; 3];
            for c in 0..3 {
                // SAFETY: 8 ints, unaligned store.
                unsafe { _mm256_storeu_si256(lanes[c].as_mut_ptr().cast(), ch[c]) };
            }
            let mut out = [0u8; GROUP_BYTES];
            pack(ch, &mut out);
            (lanes, out)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        let (lanes, out) = unsafe { round_trip(&px) };
        for i in 0..GROUP {
            for c in 0..3 {
                assert_eq!(lanes[c][i], px[3 * i + c] as i32);
            }
        }
        assert_eq!(out, px);
    }
}
