//! Tensor layout conversion: uint8 `N x H x W x 3` patches <-> float32 `N x 3 x H x W` tensors.
//!
//! Forward: `out[n, c, y, x] = (patch[n, y, x, c] / 255 - mean[c]) / std[c]`, computed in `f32` with
//! exactly that operation order, through one 256-entry lookup table per channel (so the result is
//! bit-identical to numpy's float32 `(x.astype(np.float32) / 255 - mean) / std`). One pass over the
//! input, one over the output, parallel over patches.
//!
//! Inverse (for display): `patch = clip(round_half_even((t * std[c] + mean[c]) * 255), 0, 255)`.
//! Non-finite tensor values become 0 (NaN) or clip (infinities); the result is always a valid image.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool;
use crate::view::{Batch, RgbBatch};

/// Per-channel mean and standard deviation of `[0, 1]`-scaled values (e.g. ImageNet's
/// `(0.485, 0.456, 0.406)` and `(0.229, 0.224, 0.225)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelNorm {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl ChannelNorm {
    /// Checks the values (finite means; finite stds `> 0` that stay non-zero as `f32`) and
    /// returns them as `f32`; errors name `mean` or `std`.
    fn to_f32(self) -> Result<([f32; 3], [f32; 3])> {
        let (mean, std) = (self.mean, self.std);
        let mut m = [0f32; 3];
        let mut s = [0f32; 3];
        for c in 0..3 {
            if !mean[c].is_finite() {
                return Err(Error::invalid(
                    "mean",
                    format!("must be finite, got {} for channel {c}", mean[c]),
                ));
            }
            if !(std[c].is_finite() && std[c] > 0.0) {
                return Err(Error::invalid(
                    "std",
                    format!("must be finite and > 0, got {} for channel {c}", std[c]),
                ));
            }
            m[c] = mean[c] as f32;
            s[c] = std[c] as f32;
            if s[c] == 0.0 || !s[c].is_finite() {
                return Err(Error::invalid(
                    "std",
                    format!(
                        "channel {c} value {} is not representable as float32",
                        std[c]
                    ),
                ));
            }
        }
        Ok((m, s))
    }

    /// The lookup table of the forward conversion: `lut[c][v] = (v / 255 - mean[c]) / std[c]` in
    /// `f32` (after the checks of the values).
    pub fn lut(&self) -> Result<[[f32; 256]; 3]> {
        let (m, s) = self.to_f32()?;
        let mut lut = [[0f32; 256]; 3];
        for c in 0..3 {
            for (v, slot) in lut[c].iter_mut().enumerate() {
                *slot = (v as f32 / 255.0f32 - m[c]) / s[c];
            }
        }
        Ok(lut)
    }
}

/// uint8 patches `[n, h, w, 3]` -> float32 `[n, 3, h, w]`. Parallel over patches in the pool of
/// `n_threads`.
pub fn to_tensor_layout(
    patches: RgbBatch<'_>,
    norm: &ChannelNorm,
    n_threads: Option<usize>,
) -> Result<Vec<f32>> {
    let lut = norm.lut()?;
    let src = patches.data();
    let mut out = vec![0f32; src.len()];
    let (pixels, image_len) = (patches.pixels(), patches.image_len());
    if src.is_empty() {
        return Ok(out);
    }
    pool::install(n_threads, || {
        out.par_chunks_mut(image_len)
            .zip(src.par_chunks(image_len))
            .for_each(|(dst, src)| forward_one(&lut, src, dst, pixels));
    })?;
    Ok(out)
}

/// One patch: `src` is `[pixels, 3]`, `dst` is `[3, pixels]`.
fn forward_one(lut: &[[f32; 256]; 3], src: &[u8], dst: &mut [f32], pixels: usize) {
    let (d0, rest) = dst.split_at_mut(pixels);
    let (d1, d2) = rest.split_at_mut(pixels);
    let (l0, l1, l2) = (&lut[0], &lut[1], &lut[2]);
    for (((px, a), b), c) in src
        .chunks_exact(3)
        .zip(d0.iter_mut())
        .zip(d1.iter_mut())
        .zip(d2.iter_mut())
    {
        *a = l0[px[0] as usize];
        *b = l1[px[1] as usize];
        *c = l2[px[2] as usize];
    }
}

/// float32 tensors `[n, 3, h, w]` -> uint8 `[n, h, w, 3]` (the inverse of [`to_tensor_layout`]).
pub fn from_tensor_layout(
    tensors: Batch<'_, f32>,
    norm: &ChannelNorm,
    n_threads: Option<usize>,
) -> Result<Vec<u8>> {
    let (m, s) = norm.to_f32()?;
    let src = tensors.data();
    let mut out = vec![0u8; src.len()];
    let (pixels, image_len) = (tensors.pixels(), tensors.image_len());
    if src.is_empty() {
        return Ok(out);
    }
    pool::install(n_threads, || {
        out.par_chunks_mut(image_len)
            .zip(src.par_chunks(image_len))
            .for_each(|(dst, src)| {
                let (s0, rest) = src.split_at(pixels);
                let (s1, s2) = rest.split_at(pixels);
                for (((px, a), b), c) in dst
                    .chunks_exact_mut(3)
                    .zip(s0.iter())
                    .zip(s1.iter())
                    .zip(s2.iter())
                {
                    px[0] = to_byte((a * s[0] + m[0]) * 255.0);
                    px[1] = to_byte((b * s[1] + m[1]) * 255.0);
                    px[2] = to_byte((c * s[2] + m[2]) * 255.0);
                }
            });
    })?;
    Ok(out)
}

/// Rounds half to even and clips to `0..=255`; NaN becomes 0.
#[inline]
fn to_byte(v: f32) -> u8 {
    // `as u8` saturates and maps NaN to 0, which is the documented behaviour.
    v.round_ties_even() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORM: ChannelNorm = ChannelNorm {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    fn batch<T>(data: &[T], n: usize, pixels: usize) -> Batch<'_, T> {
        Batch::of_pixels("patches", data, n, pixels).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn forward_matches_the_formula_and_layout() {
        let (n, h, w) = (2usize, 3usize, 4usize);
        let patches: Vec<u8> = (0..n * h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
        let out = to_tensor_layout(batch(&patches, n, h * w), &NORM, Some(2)).unwrap_or_default();
        assert_eq!(out.len(), patches.len());
        for i in 0..n {
            for p in 0..h * w {
                for c in 0..3 {
                    let v = patches[(i * h * w + p) * 3 + c] as f32;
                    let want = (v / 255.0 - NORM.mean[c] as f32) / NORM.std[c] as f32;
                    assert_eq!(out[(i * 3 + c) * h * w + p].to_bits(), want.to_bits());
                }
            }
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let patches: Vec<u8> = (0..256 * 3).map(|i| (i % 256) as u8).collect();
        let t = to_tensor_layout(batch(&patches, 1, 256), &NORM, Some(1)).unwrap_or_default();
        let back = from_tensor_layout(batch(&t, 1, 256), &NORM, Some(1)).unwrap_or_default();
        assert_eq!(back, patches);
    }

    #[test]
    fn inverse_clips_and_maps_nan_to_zero() {
        let t = [f32::NAN, 1e9, -1e9];
        let unit = ChannelNorm {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let back = from_tensor_layout(batch(&t, 1, 1), &unit, Some(1)).unwrap_or_default();
        assert_eq!(back, vec![0, 255, 0]);
    }

    #[test]
    fn bad_arguments_name_themselves() {
        let px = [0u8; 3];
        let bad_std = ChannelNorm {
            std: [0.2, 0.0, 0.2],
            ..NORM
        };
        let e = to_tensor_layout(batch(&px, 1, 1), &bad_std, None);
        assert!(matches!(e, Err(Error::InvalidArgument { arg: "std", .. })));
        let bad_mean = ChannelNorm {
            mean: [f64::NAN, 0.0, 0.0],
            ..NORM
        };
        let e = to_tensor_layout(batch(&px, 1, 1), &bad_mean, None);
        assert!(matches!(e, Err(Error::InvalidArgument { arg: "mean", .. })));
        let e = Batch::of_pixels("patches", &[0u8; 4], 1, 1);
        assert!(matches!(
            e,
            Err(Error::InvalidArgument { arg: "patches", .. })
        ));
    }
}
