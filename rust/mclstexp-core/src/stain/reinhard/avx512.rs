//! AVX-512 versions of the Reinhard per-pixel loops, 16 pixels per step: the AVX2 kernel
//! ([`super::avx2`], whose docs describe the arithmetic) on 512-bit registers.
//!
//! LAB values go to the buffer in groups of 16 pixels: `buf[48 g..48 g + 48]` holds L, then a,
//! then b of pixels `16 g..16 g + 16`, 16 floats each. A last partial group is padded with black
//! pixels, which are neither counted in the moments nor written out.
//!
//! Every function here is `unsafe` only because it needs AVX-512F and AVX-512BW: the caller must
//! have checked that the CPU supports both. Memory is reached through fixed-size arrays and table
//! indices that are in range by construction (each `unsafe` block says why).

use std::arch::x86_64::*;

use super::super::rgb512::{pack, picks, unpack, GROUP, GROUP_BYTES};
use super::{Lab, Moments, Stats, GAMMA_BINS};

/// Floats of a group of LAB values.
const GROUP_FLOATS: usize = 3 * GROUP;
/// Groups per f32 partial sum of the moments (256 pixels, as in the portable loop).
const BLOCK: usize = 16;

/// Constants of the forward and inverse conversions, broadcast once.
struct Consts {
    fwd: [[__m512; 3]; 3],
    inv: [[__m512; 3]; 3],
    picks: [__m512i; 3],
}

#[target_feature(enable = "avx512f,avx512bw")]
fn consts(lab: &Lab) -> Consts {
    let bc = |m: &[[f32; 3]; 3]| m.map(|row| row.map(|x| _mm512_set1_ps(x)));
    Consts {
        fwd: bc(&lab.fwd),
        inv: bc(&lab.inv),
        picks: picks(),
    }
}

/// The AVX2 kernel's division-free cube root on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn cbrt(x: __m512) -> __m512 {
    let bits = _mm512_cvtepi32_ps(_mm512_castps_si512(x));
    let third = _mm512_cvttps_epi32(_mm512_mul_ps(bits, _mm512_set1_ps(1.0 / 3.0)));
    let mut r = _mm512_castsi512_ps(_mm512_sub_epi32(_mm512_set1_epi32(0x54a2_3000), third));
    let x3 = _mm512_mul_ps(x, _mm512_set1_ps(1.0 / 3.0));
    for _ in 0..2 {
        let r3 = _mm512_mul_ps(_mm512_mul_ps(r, r), r);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(x3, r3, _mm512_set1_ps(4.0 / 3.0)));
    }
    let r2 = _mm512_mul_ps(r, r);
    let c = _mm512_mul_ps(x, r2);
    let excess = _mm512_fmsub_ps(_mm512_mul_ps(c, c), c, x);
    _mm512_fnmadd_ps(excess, _mm512_mul_ps(r2, _mm512_set1_ps(1.0 / 3.0)), c)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn lab_f(t: __m512) -> __m512 {
    let linear = _mm512_fmadd_ps(t, _mm512_set1_ps(7.787), _mm512_set1_ps(16.0 / 116.0));
    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, _mm512_set1_ps(0.008856));
    _mm512_mask_blend_ps(above, linear, cbrt(t))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn lab_f_inv(f: __m512) -> __m512 {
    let cube = _mm512_mul_ps(_mm512_mul_ps(f, f), f);
    let linear = _mm512_mul_ps(
        _mm512_sub_ps(f, _mm512_set1_ps(16.0 / 116.0)),
        _mm512_set1_ps(1.0 / 7.787),
    );
    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(f, _mm512_set1_ps(0.206_896_6));
    _mm512_mask_blend_ps(above, linear, cube)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn dot3(row: &[__m512; 3], v: [__m512; 3]) -> __m512 {
    _mm512_fmadd_ps(
        row[0],
        v[0],
        _mm512_fmadd_ps(row[1], v[1], _mm512_mul_ps(row[2], v[2])),
    )
}

/// L, a, b of 16 pixels, and a bit mask of those whose three bytes are all `<= tissue_max`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn to_lab(
    px: &[u8; GROUP_BYTES],
    lab: &Lab,
    k: &Consts,
    tissue_max: __m512i,
) -> ([__m512; 3], __mmask16) {
    let rgb = unpack(px, &k.picks);
    let brightest = _mm512_max_epi32(_mm512_max_epi32(rgb[0], rgb[1]), rgb[2]);
    let tissue = _mm512_cmple_epi32_mask(brightest, tissue_max);
    // SAFETY: every lane of `unpack` is a byte value in 0..=255 and `lab.lin` has 256 entries.
    let lin = rgb.map(|idx| unsafe { _mm512_i32gather_ps::<4>(idx, lab.lin.as_ptr()) });
    let f = k.fwd.map(|row| lab_f(dot3(&row, lin)));
    let v = [
        _mm512_fmadd_ps(f[1], _mm512_set1_ps(116.0), _mm512_set1_ps(-16.0)),
        _mm512_mul_ps(_mm512_sub_ps(f[0], f[1]), _mm512_set1_ps(500.0)),
        _mm512_mul_ps(_mm512_sub_ps(f[1], f[2]), _mm512_set1_ps(200.0)),
    ];
    (v, tissue)
}

/// `Lab::quantize` on 16 lanes: `floor(255 * clip(gamma(l), 0, 1))`, NaN -> 0.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize(l: __m512, lab: &Lab) -> __m512i {
    let scaled = _mm512_mul_ps(l, _mm512_set1_ps(GAMMA_BINS as f32));
    // maxps returns its second operand when either is NaN: NaN -> 0.
    let x = _mm512_min_ps(
        _mm512_max_ps(scaled, _mm512_setzero_ps()),
        _mm512_set1_ps(GAMMA_BINS as f32),
    );
    let bin = _mm512_cvttps_epi32(x);
    let base = lab.coarse.as_ptr().cast::<i64>();
    // SAFETY: every lane of `bin` is in 0..=GAMMA_BINS (clamped above) and `lab.coarse` has
    // GAMMA_BINS + 1 entries of 8 bytes (`Bin` is `repr(C)`: f32 then i32); no alignment needed.
    let (a, b) = unsafe {
        (
            _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(bin), base),
            _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(bin), base),
        )
    };
    // `a` holds (next, below) of pixels 0..8, `b` of pixels 8..16: even dwords are `next`.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let next = _mm512_castsi512_ps(_mm512_permutex2var_epi32(a, even, b));
    let below = _mm512_permutex2var_epi32(a, odd, b);
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(l, next);
    _mm512_mask_add_epi32(below, up, below, _mm512_set1_epi32(1))
}

/// Adds the lanes of `v` (f32) to `acc` in f64.
#[target_feature(enable = "avx512f,avx512bw")]
fn add_lanes(acc: &mut f64, v: __m512) {
    let mut lanes = [0f32; GROUP];
    // SAFETY: `lanes` holds 16 floats; the store is unaligned.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
    *acc += lanes.iter().map(|&x| x as f64).sum::<f64>();
}

/// `Kernel::lab_stats` with the grouped buffer layout (module docs).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn lab_stats(
    pixels: &[u8],
    tissue_max: i32,
    lab: &Lab,
    buf: &mut Vec<f32>,
) -> Stats {
    let n = pixels.len() / 3;
    let k = consts(lab);
    let (full, rest) = pixels.as_chunks::<GROUP_BYTES>();
    // The last partial group, padded with black (never counted).
    let mut tail = [0u8; GROUP_BYTES];
    tail[..rest.len()].copy_from_slice(rest);
    let tail_pixels = rest.len() / 3;
    let groups = full.len() + usize::from(tail_pixels > 0);
    // Every float of the buffer is written below: only resize (and zero) when the size changes.
    if buf.len() != GROUP_FLOATS * groups {
        buf.clear();
        buf.resize(GROUP_FLOATS * groups, 0.0);
    }
    let out = buf.as_chunks_mut::<GROUP_FLOATS>().0;
    let tmax = _mm512_set1_epi32(tissue_max);
    let mut tissue = 0;
    let (first, _) = to_lab(full.first().unwrap_or(&tail), lab, &k, tmax);
    let shift = first.map(|v| _mm512_cvtss_f32(v));
    let mut m = Moments::new(shift);
    let sh = shift.map(|x| _mm512_set1_ps(x));
    let store = |v: [__m512; 3], dst: &mut [f32; GROUP_FLOATS]| {
        // SAFETY: `dst` holds 48 floats: three unaligned stores of 16 at offsets 0, 16, 32.
        unsafe {
            _mm512_storeu_ps(dst.as_mut_ptr(), v[0]);
            _mm512_storeu_ps(dst.as_mut_ptr().add(GROUP), v[1]);
            _mm512_storeu_ps(dst.as_mut_ptr().add(2 * GROUP), v[2]);
        }
    };
    let flush = |m: &mut Moments, s: [__m512; 3], q: [__m512; 3]| {
        for c in 0..3 {
            add_lanes(&mut m.sum[c], s[c]);
            add_lanes(&mut m.sq[c], q[c]);
        }
    };
    for (src, dst) in full.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let mut s = [_mm512_setzero_ps(); 3];
        let mut q = [_mm512_setzero_ps(); 3];
        for (px, d) in src.iter().zip(dst.iter_mut()) {
            let (v, t) = to_lab(px, lab, &k, tmax);
            tissue += t.count_ones() as usize;
            store(v, d);
            for c in 0..3 {
                let dv = _mm512_sub_ps(v[c], sh[c]);
                s[c] = _mm512_add_ps(s[c], dv);
                q[c] = _mm512_fmadd_ps(dv, dv, q[c]);
            }
        }
        flush(&mut m, s, q);
    }
    if tail_pixels > 0 {
        if let Some(d) = out.get_mut(full.len()) {
            let (v, t) = to_lab(&tail, lab, &k, tmax);
            // Lanes 0..tail_pixels (< 16).
            let valid: __mmask16 = (1u16 << tail_pixels) - 1;
            tissue += (t & valid).count_ones() as usize;
            store(v, d);
            let mut s = [_mm512_setzero_ps(); 3];
            let mut q = [_mm512_setzero_ps(); 3];
            for c in 0..3 {
                let dv = _mm512_maskz_sub_ps(valid, v[c], sh[c]);
                s[c] = dv;
                q[c] = _mm512_mul_ps(dv, dv);
            }
            flush(&mut m, s, q);
        }
    }
    m.finish(n, tissue)
}

/// `Kernel::apply` with the grouped buffer layout (module docs).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn apply(
    buf: &[f32],
    gain: [f32; 3],
    offset: [f32; 3],
    lab: &Lab,
    dst: &mut [u8],
) {
    let k = consts(lab);
    let gain = gain.map(|x| _mm512_set1_ps(x));
    let offset = offset.map(|x| _mm512_set1_ps(x));
    let to_rgb = |v: &[f32; GROUP_FLOATS]| -> [__m512i; 3] {
        // SAFETY: `v` holds 48 floats: three unaligned loads of 16 at offsets 0, 16, 32.
        let raw = unsafe {
            [
                _mm512_loadu_ps(v.as_ptr()),
                _mm512_loadu_ps(v.as_ptr().add(GROUP)),
                _mm512_loadu_ps(v.as_ptr().add(2 * GROUP)),
            ]
        };
        let l = [0, 1, 2].map(|c| _mm512_fmadd_ps(raw[c], gain[c], offset[c]));
        let fy = _mm512_fmadd_ps(
            l[0],
            _mm512_set1_ps(1.0 / 116.0),
            _mm512_set1_ps(16.0 / 116.0),
        );
        let fx = _mm512_fmadd_ps(l[1], _mm512_set1_ps(1.0 / 500.0), fy);
        let fz = _mm512_fnmadd_ps(l[2], _mm512_set1_ps(1.0 / 200.0), fy);
        let xyz = [lab_f_inv(fx), lab_f_inv(fy), lab_f_inv(fz)];
        k.inv.map(|row| quantize(dot3(&row, xyz), lab))
    };
    let groups = buf.as_chunks::<GROUP_FLOATS>().0;
    let (full, rest) = dst.as_chunks_mut::<GROUP_BYTES>();
    for (d, v) in full.iter_mut().zip(groups) {
        pack(to_rgb(v), d);
    }
    if !rest.is_empty() {
        if let Some(v) = groups.get(full.len()) {
            let mut tail = [0u8; GROUP_BYTES];
            pack(to_rgb(v), &mut tail);
            rest.copy_from_slice(&tail[..rest.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_avx512() -> bool {
        crate::simd::Isa::Avx512.is_supported()
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    fn quantize16(l: [f32; GROUP], lab: &Lab) -> [i32; GROUP] {
        let mut out = [0i32; GROUP];
        // SAFETY: 16 floats in, 16 ints out, unaligned loads and stores.
        unsafe {
            let v = quantize(_mm512_loadu_ps(l.as_ptr()), lab);
            _mm512_storeu_si512(out.as_mut_ptr().cast(), v);
        }
        out
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    fn cbrt16(x: [f32; GROUP]) -> [f32; GROUP] {
        let mut out = [0f32; GROUP];
        // SAFETY: 16 floats in, 16 out, unaligned loads and stores.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), cbrt(_mm512_loadu_ps(x.as_ptr()))) };
        out
    }

    #[test]
    fn quantize_is_the_portable_one() {
        if !have_avx512() {
            return;
        }
        let lab = Lab::new();
        let mut values: Vec<f32> = (0..100_000).map(|i| i as f32 / 99_990.0).collect();
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
        for chunk in values.chunks(GROUP) {
            let mut l = [0f32; GROUP];
            l[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: the CPU supports AVX-512F and BW (checked above).
            let got = unsafe { quantize16(l, &lab) };
            for (v, g) in l.iter().zip(got) {
                assert_eq!(g, lab.quantize(*v) as i32, "at {v}");
            }
        }
    }

    #[test]
    fn cbrt_is_within_an_ulp() {
        if !have_avx512() {
            return;
        }
        let mut worst = 0f64;
        for i in 0..(1 << 17) {
            let x: [f32; GROUP] = std::array::from_fn(|j| 0.008 + (GROUP * i + j) as f32 * 5e-7);
            // SAFETY: the CPU supports AVX-512F and BW (checked above).
            let got = unsafe { cbrt16(x) };
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
