//! Tissue detection on a thumbnail: Otsu's threshold on HSV saturation, then morphology.
//!
//! H&E tissue is coloured (pink/purple, saturated); glass and background are grey or white
//! (unsaturated). The mask is `saturation > max(otsu, min_saturation)`, closed (fills small gaps)
//! and then opened (removes specks) with a `(2r+1) x (2r+1)` square.

use crate::error::{Error, Result};
use crate::view::{RgbImage, Size};

/// HSV saturation of each RGB pixel, scaled to 0..=255.
pub fn saturation(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            let max = p[0].max(p[1]).max(p[2]);
            let min = p[0].min(p[1]).min(p[2]);
            if max == 0 {
                0
            } else {
                ((u32::from(max - min) * 255 + u32::from(max) / 2) / u32::from(max)) as u8
            }
        })
        .collect()
}

/// Otsu's threshold of a 256-bin histogram: the `t` maximising the between-class variance of
/// `{v <= t}` and `{v > t}`.
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &h)| i as f64 * h as f64)
        .sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let (mut best, mut best_var) = (0u8, -1f64);
    for (t, &h) in hist.iter().enumerate() {
        w0 += h as f64;
        sum0 += t as f64 * h as f64;
        let w1 = total as f64 - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let var = w0 * w1 * (m0 - m1) * (m0 - m1);
        if var > best_var {
            best_var = var;
            best = t as u8;
        }
    }
    best
}

/// Binary dilation (`max`) or erosion (`min`) with a `(2r+1)` square, separable.
fn morph(mask: &[bool], w: usize, h: usize, r: usize, dilate: bool) -> Vec<bool> {
    if r == 0 {
        return mask.to_vec();
    }
    let pick = |a: bool, b: bool| if dilate { a || b } else { a && b };
    // Outside the image counts as background for dilation and as foreground for erosion, so
    // objects touching the border are not eaten away.
    let outside = !dilate;
    let mut tmp = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut v = mask[y * w + x];
            for d in 1..=r {
                let l = if x >= d { mask[y * w + x - d] } else { outside };
                let rr = if x + d < w {
                    mask[y * w + x + d]
                } else {
                    outside
                };
                v = pick(v, pick(l, rr));
            }
            tmp[y * w + x] = v;
        }
    }
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut v = tmp[y * w + x];
            for d in 1..=r {
                let u = if y >= d {
                    tmp[(y - d) * w + x]
                } else {
                    outside
                };
                let dn = if y + d < h {
                    tmp[(y + d) * w + x]
                } else {
                    outside
                };
                v = pick(v, pick(u, dn));
            }
            out[y * w + x] = v;
        }
    }
    out
}

/// The tissue mask of an RGB thumbnail (row by row, `width x height` values); returns the mask
/// and the threshold used.
pub fn tissue_mask(
    image: RgbImage<'_>,
    min_saturation: u8,
    radius: usize,
) -> Result<(Vec<bool>, u8)> {
    let (
        rgb,
        Size {
            width: w,
            height: h,
        },
    ) = (image.data(), image.size());
    if radius > 64 {
        return Err(Error::invalid(
            "radius",
            format!("must be at most 64, got {radius}"),
        ));
    }
    let s = saturation(rgb);
    let mut hist = [0u64; 256];
    for &v in &s {
        hist[usize::from(v)] += 1;
    }
    let t = otsu(&hist).max(min_saturation);
    let mask: Vec<bool> = s.iter().map(|&v| v > t).collect();
    let closed = morph(&morph(&mask, w, h, radius, true), w, h, radius, false);
    let opened = morph(&morph(&closed, w, h, radius, false), w, h, radius, true);
    Ok((opened, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(img: &[u8], width: usize, height: usize, min_saturation: u8) -> (Vec<bool>, u8) {
        RgbImage::new("image", img, Size { width, height })
            .and_then(|image| tissue_mask(image, min_saturation, 1))
            .unwrap_or_default()
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut h = [0u64; 256];
        h[10] = 100;
        h[200] = 50;
        let t = otsu(&h);
        assert!((10..200).contains(&t));
    }

    #[test]
    fn finds_a_pink_square_on_white() {
        let (w, h) = (40, 30);
        let mut img = vec![245u8; w * h * 3];
        for y in 10..20 {
            for x in 5..25 {
                let o = (y * w + x) * 3;
                img[o..o + 3].copy_from_slice(&[200, 100, 180]);
            }
        }
        // A speck of noise that the opening removes.
        img[(2 * w + 35) * 3..(2 * w + 35) * 3 + 3].copy_from_slice(&[200, 100, 180]);
        let (mask, _) = mask_of(&img, w, h, 10);
        let count = mask.iter().filter(|&&b| b).count();
        assert_eq!(count, 10 * 20);
        assert!(mask[15 * w + 10]);
        assert!(!mask[2 * w + 35]);
    }

    #[test]
    fn blank_slide_has_no_tissue() {
        let img = vec![250u8; 20 * 20 * 3];
        let (mask, _) = mask_of(&img, 20, 20, 20);
        assert!(mask.iter().all(|&b| !b));
    }
}
