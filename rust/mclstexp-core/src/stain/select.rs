//! Exact order statistics and numpy-style percentiles through a histogram (Macenko's angles
//! and concentrations).

use crate::simd::Isa;

/// Histogram bins of [`order_stats`] (a power of two, see [`BIN_MASK`]).
pub(super) const SELECT_BINS: usize = 2048;
/// `SELECT_BINS - 1`: `bin & BIN_MASK` is `bin` for every bin, and shows the compiler so (the
/// SIMD kernels' histogram updates).
#[cfg(target_arch = "x86_64")]
pub(super) const BIN_MASK: usize = SELECT_BINS - 1;
/// A histogram whose even and odd elements count into separate halves (see `merge_halves`).
#[cfg(target_arch = "x86_64")]
pub(super) type Counts = [u32; 2 * SELECT_BINS];
const _: () = assert!(SELECT_BINS.is_power_of_two());

/// A monotone map of values onto `SELECT_BINS` bins over `[lo, hi]`; values outside the bounds go
/// to the end bins, so any bounds give exact ranks (tight bounds only make it faster).
#[derive(Clone, Copy)]
pub(super) struct Binner {
    pub(super) lo: f32,
    pub(super) scale: f32,
}

impl Binner {
    pub(super) fn new(lo: f32, hi: f32) -> Option<Self> {
        let scale = SELECT_BINS as f32 / (hi - lo);
        (hi > lo && scale.is_finite() && lo.is_finite()).then_some(Binner { lo, scale })
    }

    #[inline]
    pub(super) fn bin(&self, v: f32) -> usize {
        // `max`/`min` return the non-NaN operand, so `x` is a number in [0, SELECT_BINS - 1].
        let x = ((v - self.lo) * self.scale)
            .max(0.0)
            .min((SELECT_BINS - 1) as f32);
        // SAFETY: `x` is finite and within [0, 2047] (see above), which `u32` represents exactly,
        // so the conversion is defined.
        (unsafe { x.to_int_unchecked::<u32>() }) as usize
    }
}

/// The histogram of some values: their counts per bin under `binner` (`SELECT_BINS` entries),
/// or no histogram at all (`binner: None`: ranks are then selected by sorting).
#[derive(Clone, Copy)]
pub(super) struct Hist<'a> {
    pub(super) binner: Option<&'a Binner>,
    pub(super) counts: &'a [u32],
}

/// Adds the second half of a `2 * SELECT_BINS` histogram into the first and drops it.
pub(super) fn merge_halves(hist: &mut Vec<u32>) {
    if hist.len() == 2 * SELECT_BINS {
        let (a, b) = hist.split_at_mut(SELECT_BINS);
        a.iter_mut().zip(b.iter()).for_each(|(x, y)| *x += *y);
    }
    hist.truncate(SELECT_BINS);
}

/// Counts `values` into `hist` (resized to `SELECT_BINS`).
#[cfg(test)]
pub(super) fn fill_hist(values: &[f32], binner: &Binner, hist: &mut Vec<u32>) {
    hist.clear();
    hist.resize(SELECT_BINS, 0);
    for &v in values {
        hist[binner.bin(v)] += 1;
    }
}

/// The order statistics `sorted(values)[rank]` for each of `ranks` (each `< values.len()`).
///
/// A histogram over `[lo, hi]` (bounds of the values, ideally tight) finds the bin of each rank;
/// only that bin's elements are then selected. The bin map is monotone and clamps values outside
/// the bounds into the end bins, so ranks are exact whatever the bounds. `values` must be non-empty.
#[cfg(test)]
pub(super) fn order_stats<const K: usize>(
    values: &[f32],
    ranks: [usize; K],
    (lo, hi): (f32, f32),
    hist: &mut Vec<u32>,
    gather: &mut Vec<f32>,
) -> [f32; K] {
    let binner = Binner::new(lo, hi);
    if let Some(b) = &binner {
        fill_hist(values, b, hist);
    }
    let hist = Hist {
        binner: binner.as_ref(),
        counts: hist,
    };
    select_ranks(values, ranks, hist, gather, crate::simd::isa())
}

/// [`order_stats`] given the histogram of `values`; the bins' elements are gathered with the
/// code of `isa` (lowered to what the CPU runs).
pub(super) fn select_ranks<const K: usize>(
    values: &[f32],
    ranks: [usize; K],
    hist: Hist<'_>,
    gather: &mut Vec<f32>,
    isa: Isa,
) -> [f32; K] {
    let mut out = [0f32; K];
    let Hist {
        binner,
        counts: hist,
    } = hist;
    let binner = match binner {
        Some(b) if values.len() >= 128 && hist.len() == SELECT_BINS => b,
        _ => {
            gather.clear();
            gather.extend_from_slice(values);
            gather.sort_unstable_by(f32::total_cmp);
            for (slot, &r) in out.iter_mut().zip(ranks.iter()) {
                *slot = gather
                    .get(r.min(gather.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0.0);
            }
            return out;
        }
    };
    // (bin, rank within the bin) of every requested rank.
    let mut where_ = [(0usize, 0usize); K];
    for (slot, &r) in where_.iter_mut().zip(ranks.iter()) {
        let mut before = 0usize;
        for (b, &count) in hist.iter().enumerate() {
            let count = count as usize;
            if r < before + count || b == SELECT_BINS - 1 {
                *slot = (b, (r - before).min(count.saturating_sub(1)));
                break;
            }
            before += count;
        }
    }
    // Gather every target bin's elements in one pass. In the sorted gathered set, a bin's
    // elements follow those of the lower target bins.
    let mut bins = where_.map(|(b, _)| b);
    bins.sort_unstable();
    let mut distinct = [usize::MAX; K];
    let mut n_distinct = 0;
    for b in bins {
        if n_distinct == 0 || distinct[n_distinct - 1] != b {
            distinct[n_distinct] = b;
            n_distinct += 1;
        }
    }
    let targets = &distinct[..n_distinct];
    gather.clear();
    gather_bins(values, binner, targets, gather, isa);
    for (slot, &(b, within)) in out.iter_mut().zip(where_.iter()) {
        let offset: usize = targets
            .iter()
            .filter(|&&t| t < b)
            .map(|&t| hist[t] as usize)
            .sum();
        let idx = offset + within;
        if idx < gather.len() {
            let (_, v, _) = gather.select_nth_unstable_by(idx, f32::total_cmp);
            *slot = *v;
        }
    }
    out
}

/// Appends, in order, the elements of `values` whose bin under `binner` is one of `targets` (at
/// most 16 bins) to `out`, with the code of `isa` (lowered to what the CPU runs).
fn gather_bins(values: &[f32], binner: &Binner, targets: &[usize], out: &mut Vec<f32>, isa: Isa) {
    let done = match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX-512 F and BW; at most 16 targets.
        Isa::Avx512 if targets.len() <= 16 => unsafe {
            avx512::gather_bins(values, binner, targets, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is supported, so the CPU has AVX2 and FMA; at most 16 targets.
        Isa::Avx2Fma if targets.len() <= 16 => unsafe {
            avx2::gather_bins(values, binner, targets, out)
        },
        _ => 0,
    };
    out.extend(
        values[done..]
            .iter()
            .copied()
            .filter(|&v| targets.contains(&binner.bin(v))),
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Binner, SELECT_BINS};

    /// [`super::gather_bins`] over the first `8 * k` values, 8 at a time (the same bin map as
    /// [`Binner::bin`], lane by lane: same operations, same NaN outcome); returns how many values
    /// it went through. AVX2 has no compress: the kept lanes (rare: only a few bins of
    /// `SELECT_BINS` are targets) are appended one by one, in order.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `targets` has at most 16 bins.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gather_bins(
        values: &[f32],
        binner: &Binner,
        targets: &[usize],
        out: &mut Vec<f32>,
    ) -> usize {
        let (lo, scale) = (_mm256_set1_ps(binner.lo), _mm256_set1_ps(binner.scale));
        let top = _mm256_set1_ps((SELECT_BINS - 1) as f32);
        let mut wanted = [_mm256_set1_epi32(-1); 16];
        for (w, &t) in wanted.iter_mut().zip(targets) {
            *w = _mm256_set1_epi32(t as i32);
        }
        let wanted = &wanted[..targets.len()];
        let (chunks, _) = values.as_chunks::<8>();
        for chunk in chunks {
            // SAFETY: `chunk` holds 8 floats, one 32-byte unaligned load.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let x = _mm256_mul_ps(_mm256_sub_ps(v, lo), scale);
            // `_mm256_max_ps(x, 0)` returns its second operand, 0, when `x` is NaN, as
            // `f32::max` does.
            let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), top);
            let bins = _mm256_cvttps_epi32(x);
            let mut keep = _mm256_setzero_si256();
            for &w in wanted {
                keep = _mm256_or_si256(keep, _mm256_cmpeq_epi32(bins, w));
            }
            let mut mask = _mm256_movemask_ps(_mm256_castsi256_ps(keep)) as u32;
            while mask != 0 {
                out.push(chunk[mask.trailing_zeros() as usize]);
                mask &= mask - 1;
            }
        }
        8 * chunks.len()
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Binner, SELECT_BINS};

    /// [`super::gather_bins`] over the first `16 * k` values, 16 at a time (the same bin map
    /// as [`Binner::bin`], lane by lane: same operations, same NaN outcome); returns how many
    /// values it went through.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW; `targets` has at most 16 bins.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn gather_bins(
        values: &[f32],
        binner: &Binner,
        targets: &[usize],
        out: &mut Vec<f32>,
    ) -> usize {
        let (lo, scale) = (_mm512_set1_ps(binner.lo), _mm512_set1_ps(binner.scale));
        let top = _mm512_set1_ps((SELECT_BINS - 1) as f32);
        let mut wanted = [_mm512_set1_epi32(-1); 16];
        for (w, &t) in wanted.iter_mut().zip(targets) {
            *w = _mm512_set1_epi32(t as i32);
        }
        let wanted = &wanted[..targets.len()];
        let mut lanes = [0f32; 16];
        let mut done = 0;
        for chunk in values.chunks_exact(16) {
            // SAFETY: `chunk` holds 16 floats, one 64-byte unaligned load.
            let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            let x = _mm512_mul_ps(_mm512_sub_ps(v, lo), scale);
            // `_mm512_max_ps(x, 0)` returns 0 when `x` is NaN, as `f32::max` does.
            let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), top);
            let bins = _mm512_cvttps_epi32(x);
            let mut keep: __mmask16 = 0;
            for &w in wanted {
                keep |= _mm512_cmpeq_epi32_mask(bins, w);
            }
            if keep != 0 {
                // Kept lanes packed to the front, in order.
                let packed = _mm512_maskz_compress_ps(keep, v);
                // SAFETY: `lanes` holds 16 floats, one 64-byte unaligned store.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), packed) };
                out.extend_from_slice(&lanes[..keep.count_ones() as usize]);
            }
            done += 16;
        }
        done
    }
}

/// numpy's linear-interpolation percentile position: `(lower rank, upper rank, fraction)`.
pub(super) fn percentile_ranks(n: usize, q: f64) -> (usize, usize, f64) {
    let pos = q / 100.0 * (n.saturating_sub(1)) as f64;
    let lo = (pos.floor().max(0.0) as usize).min(n.saturating_sub(1));
    let t = (pos - lo as f64).max(0.0);
    (lo, (lo + 1).min(n.saturating_sub(1)), t)
}

/// numpy's default (`method="linear"`) percentile of non-empty `values`, `q` in `[0, 100]`, given
/// their histogram (see [`select_ranks`]).
pub(super) fn percentile_linear(
    values: &[f32],
    q: f64,
    hist: Hist<'_>,
    gather: &mut Vec<f32>,
    isa: Isa,
) -> f64 {
    let (lo, hi, t) = percentile_ranks(values.len(), q);
    let [a, b] = select_ranks(values, [lo, hi], hist, gather, isa);
    if t <= 0.0 {
        a as f64
    } else {
        lerp(a as f64, b as f64, t)
    }
}

/// numpy's `_lerp`: `a + (b - a) * t`, computed from the nearer end for `t >= 0.5`.
#[inline]
pub(super) fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let (mut h, mut g) = (Vec::new(), Vec::new());
        let v: Vec<f32> = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        let binner = Binner::new(0.0, 6.0);
        if let Some(b) = &binner {
            fill_hist(&v, b, &mut h);
        }
        let hist = Hist {
            binner: binner.as_ref(),
            counts: &h,
        };
        for isa in crate::simd::supported() {
            let mut p = |q| percentile_linear(&v, q, hist, &mut g, isa);
            assert_eq!(p(50.0), 3.0);
            assert!((p(99.0) - 4.96).abs() < 1e-9);
            assert!((p(1.0) - 1.04).abs() < 1e-9);
        }
    }

    #[test]
    fn every_level_gathers_as_the_portable_code() {
        let mut state = 7u64;
        let v: Vec<f32> = (0..1000)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                match i % 50 {
                    0 => f32::NAN,
                    1 => 1e9,
                    _ => ((state >> 40) as f32) / (1u64 << 24) as f32,
                }
            })
            .collect();
        let binner = Binner::new(0.0, 1.0);
        let Some(b) = binner.as_ref() else {
            panic!("valid bounds")
        };
        for targets in [&[0usize][..], &[5, 6], &[100, 2047], &[3, 900, 1500, 2000]] {
            for n in [0, 7, 8, 9, 15, 16, 17, 999, 1000] {
                let mut c = Vec::new();
                gather_bins(&v[..n], b, targets, &mut c, Isa::Portable);
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let mut a = Vec::new();
                for isa in crate::simd::supported() {
                    a.clear();
                    gather_bins(&v[..n], b, targets, &mut a, isa);
                    assert_eq!(bits(&a), bits(&c), "{isa} targets {targets:?} n {n}");
                }
                if n == 1000 && targets[0] == 0 {
                    assert!(!a.is_empty(), "NaN and low values fall into bin 0");
                }
            }
        }
    }

    #[test]
    fn order_stats_match_a_full_sort() {
        let (mut h, mut g) = (Vec::new(), Vec::new());
        let mut state = 12345u64;
        for case in 0..20 {
            let n = 1 + case * 997;
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    // Heavy ties and a long tail, like real concentrations.
                    let u = ((state >> 40) as f32) / (1u64 << 24) as f32;
                    if i % 3 == 0 {
                        0.25
                    } else {
                        u * u * u * 10.0 - 1.0
                    }
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            let ranks = [0, n / 100, n / 2, n - 1 - n / 100, n - 1];
            // Tight, loose and wrong bounds all give exact ranks.
            for bounds in [(-1.0, 9.0), (-5.0, 50.0), (0.0, 1.0)] {
                let got = order_stats(&v, ranks, bounds, &mut h, &mut g);
                for (r, x) in ranks.iter().zip(got) {
                    assert_eq!(sorted[*r], x, "n {n} rank {r} bounds {bounds:?}");
                }
            }
        }
    }
}
