//! AVX2 + FMA versions of the Reinhard per-pixel loops, 8 pixels per step.
//!
//! The arithmetic is the portable one (same formulas, same tables, same f32 precision) done on 8
//! lanes, except that products and sums fuse into FMAs and the cube root is division-free (see
//! [`cbrt`]; within an f32 ulp, where the portable one is within two). LAB values agree with the
//! portable loops to a few f32 ulps, the output bytes but for rare one-level ties at a rounding
//! threshold (the tests check both). The tissue pixels are counted on the way (see `Stats`).
//!
//! LAB values go to the buffer in groups of 8 pixels: `buf[24 g..24 g + 24]` holds L, then a, then
//! b of pixels `8 g..8 g + 8`, 8 floats each. A last partial group is padded with black pixels,
//! which are neither counted in the moments nor written out.
//!
//! Every function here is `unsafe` only because it needs AVX2 and FMA: the caller must have
//! checked that the CPU supports both. Memory is reached through fixed-size arrays and table
//! indices that are in range by construction (each `unsafe` block says why).

use std::arch::x86_64::*;

use super::super::rgb256::{pack, unpack, GROUP};
use super::{Lab, Moments, Stats, GAMMA_BINS};

/// Groups per f32 partial sum of the moments (256 pixels, as in the portable loop).
const BLOCK: usize = 32;

/// Constants of the forward and inverse conversions, broadcast once.
struct Consts {
    fwd: [[__m256; 3]; 3],
    inv: [[__m256; 3]; 3],
}

#[target_feature(enable = "avx2,fma")]
fn consts(lab: &Lab) -> Consts {
    let bc = |m: &[[f32; 3]; 3]| m.map(|row| row.map(|x| _mm256_set1_ps(x)));
    Consts {
        fwd: bc(&lab.fwd),
        inv: bc(&lab.inv),
    }
}

/// Cube root of 8 positive normal floats to within an f32 ulp, without a division: a bit-level
/// first guess of `x^(-1/3)` (the bits divided by 3 in f32), two Newton steps
/// `r <- r (4/3 - x/3 r^3)`, then `c = x r^2` and one Newton step for the cube root
/// `c <- c - (c^3 - x) r^2 / 3` (`r^2` stands in for `1 / c^2`). Other lanes (0, subnormals) may
/// give NaN, which the caller's blend discards.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn cbrt(x: __m256) -> __m256 {
    let bits = _mm256_cvtepi32_ps(_mm256_castps_si256(x));
    let third = _mm256_cvttps_epi32(_mm256_mul_ps(bits, _mm256_set1_ps(1.0 / 3.0)));
    let mut r = _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_set1_epi32(0x54a2_3000), third));
    let x3 = _mm256_mul_ps(x, _mm256_set1_ps(1.0 / 3.0));
    for _ in 0..2 {
        let r3 = _mm256_mul_ps(_mm256_mul_ps(r, r), r);
        r = _mm256_mul_ps(r, _mm256_fnmadd_ps(x3, r3, _mm256_set1_ps(4.0 / 3.0)));
    }
    let r2 = _mm256_mul_ps(r, r);
    let c = _mm256_mul_ps(x, r2);
    let excess = _mm256_fmsub_ps(_mm256_mul_ps(c, c), c, x);
    _mm256_fnmadd_ps(excess, _mm256_mul_ps(r2, _mm256_set1_ps(1.0 / 3.0)), c)
}

/// `lab_f` on 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lab_f(t: __m256) -> __m256 {
    let linear = _mm256_fmadd_ps(t, _mm256_set1_ps(7.787), _mm256_set1_ps(16.0 / 116.0));
    let above = _mm256_cmp_ps::<_CMP_GT_OQ>(t, _mm256_set1_ps(0.008856));
    _mm256_blendv_ps(linear, cbrt(t), above)
}

/// `lab_f_inv` on 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lab_f_inv(f: __m256) -> __m256 {
    let cube = _mm256_mul_ps(_mm256_mul_ps(f, f), f);
    let linear = _mm256_mul_ps(
        _mm256_sub_ps(f, _mm256_set1_ps(16.0 / 116.0)),
        _mm256_set1_ps(1.0 / 7.787),
    );
    let above = _mm256_cmp_ps::<_CMP_GT_OQ>(f, _mm256_set1_ps(0.206_896_6));
    _mm256_blendv_ps(linear, cube, above)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot3(row: &[__m256; 3], v: [__m256; 3]) -> __m256 {
    _mm256_fmadd_ps(
        row[0],
        v[0],
        _mm256_fmadd_ps(row[1], v[1], _mm256_mul_ps(row[2], v[2])),
    )
}

/// L, a, b of 8 pixels, and a bit mask of those whose three bytes are all `<= tissue_max`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn to_lab(px: &[u8; 24], lab: &Lab, k: &Consts, tissue_max: __m256i) -> ([__m256; 3], u32) {
    let rgb = unpack(px);
    let brightest = _mm256_max_epi32(_mm256_max_epi32(rgb[0], rgb[1]), rgb[2]);
    let background = _mm256_cmpgt_epi32(brightest, tissue_max);
    let tissue = !(_mm256_movemask_ps(_mm256_castsi256_ps(background)) as u32) & 0xff;
    // SAFETY: every lane of `unpack` is a byte value in 0..=255 and `lab.lin` has 256 entries.
    let lin = rgb.map(|idx| unsafe { _mm256_i32gather_ps::<4>(lab.lin.as_ptr(), idx) });
    let f = k.fwd.map(|row| lab_f(dot3(&row, lin)));
    let v = [
        _mm256_fmadd_ps(f[1], _mm256_set1_ps(116.0), _mm256_set1_ps(-16.0)),
        _mm256_mul_ps(_mm256_sub_ps(f[0], f[1]), _mm256_set1_ps(500.0)),
        _mm256_mul_ps(_mm256_sub_ps(f[1], f[2]), _mm256_set1_ps(200.0)),
    ];
    (v, tissue)
}

/// `Lab::quantize` on 8 lanes: `floor(255 * clip(gamma(l), 0, 1))`, NaN -> 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn quantize(l: __m256, lab: &Lab) -> __m256i {
    let scaled = _mm256_mul_ps(l, _mm256_set1_ps(GAMMA_BINS as f32));
    // maxps returns its second operand when either is NaN: NaN -> 0.
    let x = _mm256_min_ps(
        _mm256_max_ps(scaled, _mm256_setzero_ps()),
        _mm256_set1_ps(GAMMA_BINS as f32),
    );
    let bin = _mm256_cvttps_epi32(x);
    // Two 4 x 64-bit gathers of (next, below) pairs: the first for pixels 0, 1, 4, 5, the second
    // for 2, 3, 6, 7, so that picking the even (odd) dwords of both puts `next` (`below`) of
    // pixels 0..8 in order.
    let bin = _mm256_permutevar8x32_epi32(bin, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
    let base = lab.coarse.as_ptr().cast::<i64>();
    // SAFETY: every lane of `bin` is in 0..=GAMMA_BINS (clamped above) and `lab.coarse` has
    // GAMMA_BINS + 1 entries of 8 bytes (`Bin` is `repr(C)`: f32 then i32); no alignment needed.
    let (a, b) = unsafe {
        (
            _mm256_castsi256_ps(_mm256_i32gather_epi64::<8>(
                base,
                _mm256_castsi256_si128(bin),
            )),
            _mm256_castsi256_ps(_mm256_i32gather_epi64::<8>(
                base,
                _mm256_extracti128_si256::<1>(bin),
            )),
        )
    };
    let next = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
    let below = _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
    // All ones (-1) where `l >= next`: subtracting it adds 1.
    let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(l, next));
    _mm256_sub_epi32(below, up)
}

/// Adds the lanes of `v` (f32) to `acc` in f64.
#[target_feature(enable = "avx2,fma")]
fn add_lanes(acc: &mut f64, v: __m256) {
    let mut lanes = [0f32; GROUP];
    // SAFETY: `lanes` holds 8 floats; the store is unaligned.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    *acc += lanes.iter().map(|&x| x as f64).sum::<f64>();
}

/// `Kernel::lab_stats` with the grouped buffer layout (module docs).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn lab_stats(
    pixels: &[u8],
    tissue_max: i32,
    lab: &Lab,
    buf: &mut Vec<f32>,
) -> Stats {
    let n = pixels.len() / 3;
    let k = consts(lab);
    let (full, rest) = pixels.as_chunks::<24>();
    // The last partial group, padded with black (never counted).
    let mut tail = [0u8; 24];
    tail[..rest.len()].copy_from_slice(rest);
    let tail_pixels = rest.len() / 3;
    let groups = full.len() + usize::from(tail_pixels > 0);
    // Every float of the buffer is written below: only resize (and zero) when the size changes.
    if buf.len() != 24 * groups {
        buf.clear();
        buf.resize(24 * groups, 0.0);
    }
    let out = buf.as_chunks_mut::<24>().0;
    let tmax = _mm256_set1_epi32(tissue_max);
    let mut tissue = 0;
    let (first, _) = to_lab(full.first().unwrap_or(&tail), lab, &k, tmax);
    let shift = first.map(|v| _mm256_cvtss_f32(v));
    let mut m = Moments::new(shift);
    let sh = shift.map(|x| _mm256_set1_ps(x));
    let store = |v: [__m256; 3], dst: &mut [f32; 24]| {
        // SAFETY: `dst` holds 24 floats: three unaligned stores of 8 at offsets 0, 8, 16.
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), v[1]);
            _mm256_storeu_ps(dst.as_mut_ptr().add(16), v[2]);
        }
    };
    let flush = |m: &mut Moments, s: [__m256; 3], q: [__m256; 3]| {
        for c in 0..3 {
            add_lanes(&mut m.sum[c], s[c]);
            add_lanes(&mut m.sq[c], q[c]);
        }
    };
    for (src, dst) in full.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let mut s = [_mm256_setzero_ps(); 3];
        let mut q = [_mm256_setzero_ps(); 3];
        for (px, d) in src.iter().zip(dst.iter_mut()) {
            let (v, t) = to_lab(px, lab, &k, tmax);
            tissue += t.count_ones() as usize;
            store(v, d);
            for c in 0..3 {
                let dv = _mm256_sub_ps(v[c], sh[c]);
                s[c] = _mm256_add_ps(s[c], dv);
                q[c] = _mm256_fmadd_ps(dv, dv, q[c]);
            }
        }
        flush(&mut m, s, q);
    }
    if tail_pixels > 0 {
        if let Some(d) = out.get_mut(full.len()) {
            let (v, t) = to_lab(&tail, lab, &k, tmax);
            // Lanes 0..tail_pixels (< 8).
            tissue += (t & ((1 << tail_pixels) - 1)).count_ones() as usize;
            store(v, d);
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                _mm256_set1_epi32(tail_pixels as i32),
                lane,
            ));
            let mut s = [_mm256_setzero_ps(); 3];
            let mut q = [_mm256_setzero_ps(); 3];
            for c in 0..3 {
                let dv = _mm256_and_ps(_mm256_sub_ps(v[c], sh[c]), valid);
                s[c] = dv;
                q[c] = _mm256_mul_ps(dv, dv);
            }
            flush(&mut m, s, q);
        }
    }
    m.finish(n, tissue)
}

/// `Kernel::apply` with the grouped buffer layout (module docs).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn apply(
    buf: &[f32],
    gain: [f32; 3],
    offset: [f32; 3],
    lab: &Lab,
    dst: &mut [u8],
) {
    let k = consts(lab);
    let gain = gain.map(|x| _mm256_set1_ps(x));
    let offset = offset.map(|x| _mm256_set1_ps(x));
    let to_rgb = |v: &[f32; 24]| -> [__m256i; 3] {
        // SAFETY: `v` holds 24 floats: three unaligned loads of 8 at offsets 0, 8, 16.
        let raw = unsafe {
            [
                _mm256_loadu_ps(v.as_ptr()),
                _mm256_loadu_ps(v.as_ptr().add(8)),
                _mm256_loadu_ps(v.as_ptr().add(16)),
            ]
        };
        let l = [0, 1, 2].map(|c| _mm256_fmadd_ps(raw[c], gain[c], offset[c]));
        let fy = _mm256_fmadd_ps(
            l[0],
            _mm256_set1_ps(1.0 / 116.0),
            _mm256_set1_ps(16.0 / 116.0),
        );
        let fx = _mm256_fmadd_ps(l[1], _mm256_set1_ps(1.0 / 500.0), fy);
        let fz = _mm256_fnmadd_ps(l[2], _mm256_set1_ps(1.0 / 200.0), fy);
        let xyz = [lab_f_inv(fx), lab_f_inv(fy), lab_f_inv(fz)];
        k.inv.map(|row| quantize(dot3(&row, xyz), lab))
    };
    let groups = buf.as_chunks::<24>().0;
    let (full, rest) = dst.as_chunks_mut::<24>();
    for (d, v) in full.iter_mut().zip(groups) {
        pack(to_rgb(v), d);
    }
    if !rest.is_empty() {
        if let Some(v) = groups.get(full.len()) {
            let mut tail = [0u8; 24];
            pack(to_rgb(v), &mut tail);
            rest.copy_from_slice(&tail[..rest.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_avx2() -> bool {
        crate::simd::Isa::Avx2Fma.is_supported()
    }

    #[target_feature(enable = "avx2,fma")]
    fn quantize8(l: [f32; 8], lab: &Lab) -> [i32; 8] {
        let mut out = [0i32; 8];
        // SAFETY: 8 floats in, 8 ints out, unaligned loads and stores.
        unsafe {
            let v = quantize(_mm256_loadu_ps(l.as_ptr()), lab);
            _mm256_storeu_si256(out.as_mut_ptr().cast(), v);
        }
        out
    }

    #[test]
    fn quantize_is_the_portable_one() {
        if !have_avx2() {
            return;
        }
        let lab = Lab::new();
        let mut values: Vec<f32> = (0..100_000).map(|i| i as f32 / 99_990.0).collect();
        // Every threshold and its neighbours, and the special values.
        for &t in &lab.thresholds[1..256] {
            values.extend([
                t,
                f32::from_bits(t.to_bits() - 1),
                f32::from_bits(t.to_bits() + 1),
            ]);
        }
        values.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1.0,
            2.0,
            0.0,
            -0.0,
        ]);
        for chunk in values.chunks(8) {
            let mut l = [0f32; 8];
            l[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            let got = unsafe { quantize8(l, &lab) };
            for (v, g) in l.iter().zip(got) {
                assert_eq!(g, lab.quantize(*v) as i32, "at {v}");
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn cbrt8(x: [f32; 8]) -> [f32; 8] {
        let mut out = [0f32; 8];
        // SAFETY: 8 floats in, 8 out, unaligned loads and stores.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), cbrt(_mm256_loadu_ps(x.as_ptr()))) };
        out
    }

    #[test]
    fn cbrt_is_within_an_ulp() {
        if !have_avx2() {
            return;
        }
        // The whole range `lab_f` takes the cube root of (t in (0.008856, ~1]), and beyond.
        let mut worst = 0f64;
        for i in 0..(1 << 18) {
            let x: [f32; 8] = std::array::from_fn(|j| 0.008 + (8 * i + j) as f32 * 5e-7);
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            let got = unsafe { cbrt8(x) };
            for (v, c) in x.iter().zip(got) {
                let want = (*v as f64).cbrt();
                worst = worst.max(((c as f64) - want).abs() / want);
            }
        }
        assert!(
            worst <= f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
    }
}
