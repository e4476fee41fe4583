//! Patch boxes at spot centres or on a tissue grid, level/mpp choice, and resampling.
//!
//! Box convention (the method's): a `size` px patch at level `L` around the level-0 centre
//! `(cx, cy)` starts at `floor(cx / ds_L) - size / 2` (integer division), so at level 0 it is the
//! crop `[floor(cx) - size/2, floor(cx) - size/2 + size)`. With a target resolution (`mpp`) the
//! patch covers `size * mpp / mpp0` level-0 pixels around the same centre; it is read from the
//! coarsest level that is still at least as fine as the target and resampled (antialiased
//! bilinear, the same filter as Pillow's `Image.resize(..., BILINEAR)`).

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::slide::{Level, Slide};
use crate::view::{Mask, RgbImage, Size, SourceBox, Window};

/// Largest side, in source pixels, that one resampled patch may cover.
pub const MAX_SOURCE_SIDE: f64 = 32768.0;

/// How patches are sampled from the slide.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatchSpec {
    /// Output side in pixels.
    pub size: usize,
    /// Level to read (used when `mpp` is `None`).
    pub level: usize,
    /// Target microns per pixel; `None` reads `level` as is.
    pub mpp: Option<f64>,
    /// Microns per pixel of level 0, needed with `mpp`; `None`: the slide's own
    /// ([`Slide::mean_mpp`]) where [`read_patches`] has a slide to ask.
    pub slide_mpp: Option<f64>,
}

/// Where a patch is read from: a level and, per axis, the source box in that level's continuous
/// pixel coordinates (pixel `j` covers `[j, j + 1)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub level: usize,
    /// Source pixels per output pixel (1.0 = plain crop).
    pub scale: f64,
}

/// The index of the coarsest level whose downsample is at most `target` (with a small tolerance),
/// OpenSlide's `get_best_level_for_downsample`.
pub fn best_level(levels: &[Level], target: f64) -> usize {
    let mut best = 0;
    for (i, lv) in levels.iter().enumerate() {
        if lv.downsample <= target * (1.0 + 1e-6) && lv.downsample >= levels[best].downsample {
            best = i;
        }
    }
    best
}

/// Chooses the level and scale for `spec` on a slide with `levels`.
pub fn plan(levels: &[Level], spec: &PatchSpec) -> Result<Plan> {
    if spec.size == 0 || spec.size > 1 << 14 {
        return Err(Error::invalid(
            "size",
            format!("must be in [1, 16384], got {}", spec.size),
        ));
    }
    match spec.mpp {
        None => {
            if spec.level >= levels.len() {
                return Err(Error::invalid(
                    "level",
                    format!("must be in [0, {}), got {}", levels.len(), spec.level),
                ));
            }
            Ok(Plan {
                level: spec.level,
                scale: 1.0,
            })
        }
        Some(mpp) => {
            if !(mpp.is_finite() && mpp > 0.0) {
                return Err(Error::invalid(
                    "mpp",
                    format!("must be a positive number, got {mpp}"),
                ));
            }
            let mpp0 = spec.slide_mpp.ok_or_else(|| {
                Error::invalid(
                    "mpp",
                    "the slide declares no microns per pixel; pass the slide's mpp explicitly or \
                     use mpp=None to read a level as is",
                )
            })?;
            if !(mpp0.is_finite() && mpp0 > 0.0) {
                return Err(Error::invalid(
                    "slide_mpp",
                    format!("must be positive, got {mpp0}"),
                ));
            }
            let target = mpp / mpp0;
            let level = best_level(levels, target);
            let scale = target / levels[level].downsample;
            let scale = if (scale - 1.0).abs() < 1e-6 {
                1.0
            } else {
                scale
            };
            let side = scale * spec.size as f64;
            if side > MAX_SOURCE_SIDE {
                return Err(Error::invalid(
                    "mpp",
                    format!(
                        "{mpp} um/px is too coarse for this slide: a patch would cover {side:.0} \
                         pixels of its coarsest suitable level (at most {MAX_SOURCE_SIDE})"
                    ),
                ));
            }
            Ok(Plan { level, scale })
        }
    }
}

/// Separable filter taps for one axis: per output pixel, the first source index and weights.
struct Taps {
    start: Vec<i64>,
    weights: Vec<Vec<f32>>,
}

/// Pillow's antialiased bilinear (triangle) filter for `out` pixels over the continuous source
/// interval `[x0, x0 + out * scale)`.
fn taps(x0: f64, scale: f64, out: usize) -> Taps {
    let filterscale = scale.max(1.0);
    let support = filterscale; // triangle support 1.0, widened when downsampling
    let mut start = Vec::with_capacity(out);
    let mut weights = Vec::with_capacity(out);
    for i in 0..out {
        let center = x0 + (i as f64 + 0.5) * scale;
        let lo = (center - support + 0.5).floor() as i64;
        let hi = (center + support + 0.5).floor() as i64;
        let mut w: Vec<f32> = (lo..hi)
            .map(|j| {
                let d = (j as f64 - center + 0.5) / filterscale;
                (1.0 - d.abs()).max(0.0) as f32
            })
            .collect();
        let sum: f32 = w.iter().sum();
        if sum > 0.0 {
            w.iter_mut().for_each(|v| *v /= sum);
        }
        start.push(lo);
        weights.push(w);
    }
    Taps { start, weights }
}

impl Taps {
    /// The source pixels `[lo, hi)` that the output pixels `outputs` read.
    fn span(&self, outputs: Range<usize>) -> (i64, i64) {
        let (start, weights) = (&self.start[outputs.clone()], &self.weights[outputs]);
        let lo = start.iter().copied().min().unwrap_or(0);
        let hi = start
            .iter()
            .zip(weights)
            .map(|(s, w)| s + w.len() as i64)
            .max()
            .unwrap_or(0);
        (lo, hi.max(lo + 1))
    }
}

/// How output pixels sample a source image: output pixel `(i, j)` covers the continuous source
/// box `[x + i * scale_x, x + (i + 1) * scale_x) x [y + j * scale_y, y + (j + 1) * scale_y)`.
#[derive(Clone, Copy, Debug)]
struct Sampling {
    x: f64,
    y: f64,
    scale_x: f64,
    scale_y: f64,
}

/// Resamples an RGB image provided through `read(window, buf)` (the source pixels of `window`,
/// packed, into `buf`) into `out` (`size.height * size.width * 3`), sampled as `at` says.
fn resample_from<F>(at: Sampling, size: Size, out: &mut [u8], read: F) -> Result<()>
where
    F: FnOnce(Window, &mut [u8]) -> Result<()>,
{
    let tx = taps(at.x, at.scale_x, size.width);
    let ty = taps(at.y, at.scale_y, size.height);
    resample_rows(&tx, &ty, 0..size.height, out, read)
}

/// The output rows `rows` of a resample with taps `tx` (columns) and `ty` (rows) into `out`
/// (`rows.len() * width * 3`), reading only the source rows they need: a whole image can be
/// resampled band by band, with the same result as in one piece.
fn resample_rows<F>(tx: &Taps, ty: &Taps, rows: Range<usize>, out: &mut [u8], read: F) -> Result<()>
where
    F: FnOnce(Window, &mut [u8]) -> Result<()>,
{
    let ow = tx.start.len();
    let (x_lo, x_hi) = tx.span(0..ow);
    let (y_lo, y_hi) = ty.span(rows.clone());
    let (sw, sh) = ((x_hi - x_lo) as usize, (y_hi - y_lo) as usize);
    let mut src = vec![255u8; sw * sh * 3];
    let window = Window {
        x: x_lo,
        y: y_lo,
        width: sw,
        height: sh,
    };
    read(window, &mut src)?;
    // Horizontal pass: sh rows x ow columns.
    let mut mid = vec![0f32; sh * ow * 3];
    for r in 0..sh {
        let row = &src[r * sw * 3..(r + 1) * sw * 3];
        for (i, (s, w)) in tx.start.iter().zip(&tx.weights).enumerate() {
            let base = (s - x_lo) as usize;
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let p = (base + k) * 3;
                acc[0] += wk * f32::from(row[p]);
                acc[1] += wk * f32::from(row[p + 1]);
                acc[2] += wk * f32::from(row[p + 2]);
            }
            let m = (r * ow + i) * 3;
            mid[m..m + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass.
    let (starts, weights) = (&ty.start[rows.clone()], &ty.weights[rows]);
    for (j, (s, w)) in starts.iter().zip(weights).enumerate() {
        let base = (s - y_lo) as usize;
        for i in 0..ow {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let m = ((base + k) * ow + i) * 3;
                acc[0] += wk * mid[m];
                acc[1] += wk * mid[m + 1];
                acc[2] += wk * mid[m + 2];
            }
            let o = (j * ow + i) * 3;
            for c in 0..3 {
                out[o + c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

/// Checks an output size of a resize: at least one pixel each way.
fn check_output_size(size: Size) -> Result<()> {
    if size.width == 0 || size.height == 0 {
        return Err(Error::invalid(
            "size",
            format!(
                "the output must be at least 1 x 1 pixels, got {} x {}",
                size.width, size.height
            ),
        ));
    }
    Ok(())
}

/// Resamples a whole RGB image to `size` (Pillow BILINEAR semantics).
pub fn resize(image: RgbImage<'_>, size: Size) -> Result<Vec<u8>> {
    let src = image.size();
    let region = SourceBox {
        x: 0.0,
        y: 0.0,
        width: src.width as f64,
        height: src.height as f64,
    };
    resize_box(image, region, size)
}

/// Resamples the continuous box `region` of an RGB image to `size` (Pillow's
/// `resize(..., BILINEAR, box=...)`; taps outside replicate the edge).
pub fn resize_box(image: RgbImage<'_>, region: SourceBox, size: Size) -> Result<Vec<u8>> {
    check_output_size(size)?;
    let SourceBox {
        x,
        y,
        width,
        height,
    } = region;
    if ![x, y, width, height].iter().all(|v| v.is_finite()) || width <= 0.0 || height <= 0.0 {
        return Err(Error::invalid(
            "box",
            "must be finite with positive width and height",
        ));
    }
    let mut out = vec![0u8; size.width * size.height * 3];
    let at = Sampling {
        x,
        y,
        scale_x: width / size.width as f64,
        scale_y: height / size.height as f64,
    };
    resample_from(at, size, &mut out, |window, buf| {
        copy_clamped(image, window, buf);
        Ok(())
    })?;
    Ok(out)
}

/// Copies `window` of an in-memory image into `buf`, replicating edge pixels outside it (Pillow
/// clamps taps to the image; replicating the edge gives the same weights' effect closely).
fn copy_clamped(image: RgbImage<'_>, window: Window, buf: &mut [u8]) {
    let (
        src,
        Size {
            width: sw,
            height: sh,
        },
    ) = (image.data(), image.size());
    let Window {
        x,
        y,
        width: w,
        height: h,
    } = window;
    for r in 0..h {
        let sy = (y + r as i64).clamp(0, sh as i64 - 1) as usize;
        for c in 0..w {
            let sx = (x + c as i64).clamp(0, sw as i64 - 1) as usize;
            let s = (sy * sw + sx) * 3;
            let o = (r * w + c) * 3;
            buf[o..o + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
}

/// Reads one patch into `out` (`size * size * 3`); returns whether its box lies inside the level.
fn read_one(
    slide: &Slide,
    plan: &Plan,
    spec: &PatchSpec,
    c: [f64; 2],
    out: &mut [u8],
) -> Result<bool> {
    let lv = slide.levels()[plan.level];
    let size = spec.size;
    if !(c[0].is_finite() && c[1].is_finite()) || c[0].abs() > 1e12 || c[1].abs() > 1e12 {
        return Err(Error::invalid(
            "centers",
            format!("non-finite or absurd centre {c:?}"),
        ));
    }
    let (fx, fy) = (c[0].floor(), c[1].floor());
    if plan.scale == 1.0 {
        let left = (fx / lv.downsample).floor() as i64 - (size / 2) as i64;
        let top = (fy / lv.downsample).floor() as i64 - (size / 2) as i64;
        slide.read_into(plan.level, left, top, size, size, out)?;
        let inside = left >= 0
            && top >= 0
            && left + size as i64 <= lv.width as i64
            && top + size as i64 <= lv.height as i64;
        return Ok(inside);
    }
    // Continuous centre matching the crop at scale 1 (odd sizes centre on the pixel's middle).
    let half_odd = if size % 2 == 1 { 0.5 } else { 0.0 };
    let ds = lv.downsample;
    let fov = size as f64 * plan.scale; // level-L pixels
    let bx = (fx + half_odd) / ds - fov / 2.0;
    let by = (fy + half_odd) / ds - fov / 2.0;
    let inside = bx >= -1e-9
        && by >= -1e-9
        && bx + fov <= lv.width as f64 + 1e-9
        && by + fov <= lv.height as f64 + 1e-9;
    let at = Sampling {
        x: bx,
        y: by,
        scale_x: plan.scale,
        scale_y: plan.scale,
    };
    let square = Size {
        width: size,
        height: size,
    };
    resample_from(at, square, out, |w, buf| {
        slide.read_into(plan.level, w.x, w.y, w.width, w.height, buf)
    })?;
    Ok(inside)
}

/// Reads patches at `centers` (level-0 `(x, y)`), in parallel on the process pool.
///
/// Returns the patches (`N * size * size * 3`, RGB, white outside the slide) and, per patch,
/// whether its box lies fully inside the slide.
pub fn read_patches(
    slide: &Slide,
    centers: &[[f64; 2]],
    spec: &PatchSpec,
    n_threads: Option<usize>,
) -> Result<(Vec<u8>, Vec<bool>)> {
    let per = spec.size * spec.size * 3;
    let total = (per as u64).saturating_mul(centers.len() as u64);
    if total > crate::slide::MAX_REGION_BYTES {
        return Err(Error::invalid(
            "centers",
            "too many patches for one call (over 4 GiB); read them in batches",
        ));
    }
    let mut out = vec![0u8; per * centers.len()];
    let mut inside = vec![false; centers.len()];
    read_patches_into(slide, centers, spec, n_threads, &mut out, &mut inside)?;
    Ok((out, inside))
}

/// Like [`read_patches`], writing into caller-provided buffers (`out`: `N * size * size * 3`
/// bytes, `inside`: `N`), so a caller reading many batches can reuse one buffer.
pub fn read_patches_into(
    slide: &Slide,
    centers: &[[f64; 2]],
    spec: &PatchSpec,
    n_threads: Option<usize>,
    out: &mut [u8],
    inside: &mut [bool],
) -> Result<()> {
    let spec = &PatchSpec {
        slide_mpp: spec.slide_mpp.or_else(|| slide.mean_mpp()),
        ..*spec
    };
    let plan = plan(slide.levels(), spec)?;
    let per = spec.size * spec.size * 3;
    if out.len() != per * centers.len() || inside.len() != centers.len() {
        return Err(Error::invalid(
            "out",
            format!(
                "expected a buffer of shape ({}, {}, {}, 3)",
                centers.len(),
                spec.size,
                spec.size
            ),
        ));
    }
    if centers.is_empty() {
        return Ok(());
    }
    // Visit the patches in the slide's tile order (row of tiles, then column, of each patch's
    // top-left source pixel), whatever order the caller gave them in: a patch then mostly needs
    // tiles its predecessors just decoded, which the slide's tile cache still holds, so a batch
    // decodes each tile about once instead of once per patch that touches it. Each worker takes
    // a contiguous run of this order; the results land at the caller's indices.
    let order = tile_order(slide, &plan, spec, centers)?;
    let mut slots: Vec<Option<(&mut [u8], &mut bool)>> = out
        .chunks_mut(per)
        .zip(inside.iter_mut())
        .map(Some)
        .collect();
    let mut work: Vec<(&mut [u8], &mut bool, [f64; 2])> = Vec::with_capacity(centers.len());
    for &i in &order {
        if let Some((patch, ok)) = slots[i].take() {
            work.push((patch, ok, centers[i]));
        }
    }
    crate::pool::resolve_size(n_threads)?; // the same argument check either way
    if let [(patch, ok, c)] = work.as_mut_slice() {
        // One patch: read it on the calling thread, so callers that read patch by patch from
        // several threads of their own (GIL released) run in parallel, not queued on the pool.
        **ok = read_one(slide, &plan, spec, *c, patch)?;
        return Ok(());
    }
    crate::pool::install(n_threads, || {
        work.into_par_iter().try_for_each(|(patch, ok, c)| {
            *ok = read_one(slide, &plan, spec, c, patch)?;
            Ok::<(), Error>(())
        })
    })?
}

/// The indices of `centers` sorted by the tile (row, then column) holding the top-left pixel of
/// each patch's source box at the planned level (stable: ties keep the caller's order).
fn tile_order(
    slide: &Slide,
    plan: &Plan,
    spec: &PatchSpec,
    centers: &[[f64; 2]],
) -> Result<Vec<usize>> {
    let (tw, th) = slide.tile_size(plan.level)?;
    let (tw, th) = (tw.max(1) as f64, th.max(1) as f64);
    let ds = slide.levels()[plan.level].downsample;
    let half = spec.size as f64 * plan.scale / 2.0;
    // Non-finite or absurd centres sort anywhere (`as` saturates); `read_one` rejects them.
    let tile_of = |v: f64, t: f64| ((v.floor() / ds - half) / t).floor() as i64;
    let mut order: Vec<usize> = (0..centers.len()).collect();
    order.sort_by_key(|&i| (tile_of(centers[i][1], th), tile_of(centers[i][0], tw)));
    Ok(order)
}

/// Bytes of source pixels a thumbnail reads at a time: the thumbnail is resampled band by band of
/// output rows, so its memory stays bounded (this, the bands' filter state and the slide's tile
/// cache) whatever the size of the level it is made from.
pub const THUMBNAIL_BAND_BYTES: usize = 64 << 20;

/// A thumbnail of the whole slide whose longer side is at most `max_size` pixels.
///
/// Returns `(pixels, width, height)`; the thumbnail's pixel `(i, j)` covers level-0 pixels
/// `[i * W0 / width, (i + 1) * W0 / width)` (and likewise for rows). It is resampled (Pillow's
/// antialiased bilinear, edge pixels replicated) from the coarsest level at least as fine as it,
/// in bands of [`THUMBNAIL_BAND_BYTES`] of that level: a single-level slide of any size is never
/// decoded whole.
pub fn thumbnail(
    slide: &Slide,
    max_size: usize,
    n_threads: Option<usize>,
) -> Result<(Vec<u8>, usize, usize)> {
    thumbnail_in_bands(slide, max_size, n_threads, THUMBNAIL_BAND_BYTES)
}

fn thumbnail_in_bands(
    slide: &Slide,
    max_size: usize,
    n_threads: Option<usize>,
    band_bytes: usize,
) -> Result<(Vec<u8>, usize, usize)> {
    if max_size == 0 {
        return Err(Error::invalid("max_size", "must be >= 1"));
    }
    let l0 = slide.levels()[0];
    let f = (max_size as f64 / l0.width.max(l0.height) as f64).min(1.0);
    let tw = ((l0.width as f64 * f).round() as usize).max(1);
    let th = ((l0.height as f64 * f).round() as usize).max(1);
    let level = best_level(
        slide.levels(),
        (l0.width as f64 / tw as f64).min(l0.height as f64 / th as f64),
    );
    let lv = slide.levels()[level];
    let (lw, lh) = (lv.width as usize, lv.height as usize);
    if (lw, lh) == (tw, th) {
        return Ok((slide.read_region(level, 0, 0, lw, lh, n_threads)?, tw, th));
    }
    let tx = taps(0.0, lw as f64 / tw as f64, tw);
    let ty = taps(0.0, lh as f64 / th as f64, th);
    let mut out = vec![0u8; tw * th * 3];
    let row_bytes = lw * 3;
    let mut first = 0;
    while first < th {
        // As many output rows as fit in the budget (at least one).
        let mut end = first + 1;
        while end < th {
            let (lo, hi) = ty.span(first..end + 1);
            if (hi - lo) as usize * row_bytes > band_bytes {
                break;
            }
            end += 1;
        }
        let band = &mut out[first * tw * 3..end * tw * 3];
        resample_rows(&tx, &ty, first..end, band, |window, buf| {
            // The level's rows of the window (clamped to the image), then edge replication.
            let ya = window.y.clamp(0, lh as i64 - 1);
            let yb = (window.y + window.height as i64).clamp(ya + 1, lh as i64);
            let rows = slide.read_region(level, 0, ya, lw, (yb - ya) as usize, n_threads)?;
            let size = Size {
                width: lw,
                height: (yb - ya) as usize,
            };
            let shifted = Window {
                y: window.y - ya,
                ..window
            };
            copy_clamped(RgbImage::new("image", &rows, size)?, shifted, buf);
            Ok(())
        })?;
        first = end;
    }
    Ok((out, tw, th))
}

/// Centres (level-0 `(x, y)`) of a regular grid of `fov`-pixel cells over a slide of `slide`
/// level-0 pixels, keeping the cells whose tissue fraction in `mask` (a thumbnail mask of the
/// whole slide) is at least `min_fraction`. Only whole cells inside the slide are returned, row
/// by row.
pub fn grid_centers(
    mask: Mask<'_>,
    slide: (u64, u64),
    fov: f64,
    min_fraction: f64,
) -> Result<Vec<[f64; 2]>> {
    if !(fov.is_finite() && fov >= 1.0) {
        return Err(Error::invalid(
            "size",
            "grid cells must be at least one pixel",
        ));
    }
    if !(0.0..=1.0).contains(&min_fraction) {
        return Err(Error::invalid("min_tissue", "must be in [0, 1]"));
    }
    let (width, height) = slide;
    let (
        mask,
        Size {
            width: mw,
            height: mh,
        },
    ) = (mask.data(), mask.size());
    let nx = (width as f64 / fov).floor() as usize;
    let ny = (height as f64 / fov).floor() as usize;
    let (sx, sy) = (mw as f64 / width as f64, mh as f64 / height as f64);
    let mut out = Vec::new();
    for gy in 0..ny {
        for gx in 0..nx {
            let (x0, y0) = (gx as f64 * fov, gy as f64 * fov);
            // Thumbnail pixels whose centres fall inside the cell (at least the nearest one).
            let mx0 = ((x0 * sx).floor() as usize).min(mw - 1);
            let my0 = ((y0 * sy).floor() as usize).min(mh - 1);
            let mx1 = (((x0 + fov) * sx).ceil() as usize).clamp(mx0 + 1, mw);
            let my1 = (((y0 + fov) * sy).ceil() as usize).clamp(my0 + 1, mh);
            let mut hit = 0usize;
            for my in my0..my1 {
                hit += mask[my * mw + mx0..my * mw + mx1]
                    .iter()
                    .filter(|&&b| b)
                    .count();
            }
            let n = (mx1 - mx0) * (my1 - my0);
            if hit > 0 && hit as f64 >= min_fraction * n as f64 {
                out.push([x0 + fov / 2.0, y0 + fov / 2.0]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> Vec<Level> {
        [1.0, 4.0, 16.0]
            .iter()
            .map(|&d| Level {
                width: (1000.0 / d) as u64,
                height: (800.0 / d) as u64,
                downsample: d,
            })
            .collect()
    }

    #[test]
    fn best_level_is_the_coarsest_not_coarser_than_asked() {
        let l = levels();
        assert_eq!(best_level(&l, 1.0), 0);
        assert_eq!(best_level(&l, 3.9), 0);
        assert_eq!(best_level(&l, 4.0), 1);
        assert_eq!(best_level(&l, 100.0), 2);
        assert_eq!(best_level(&l, 0.5), 0);
    }

    #[test]
    fn plan_needs_an_mpp_to_resample() {
        let l = levels();
        let spec = PatchSpec {
            size: 224,
            level: 0,
            mpp: Some(1.0),
            slide_mpp: None,
        };
        assert!(matches!(
            plan(&l, &spec),
            Err(Error::InvalidArgument { arg: "mpp", .. })
        ));
        let spec = PatchSpec {
            slide_mpp: Some(0.25),
            ..spec
        };
        assert_eq!(
            plan(&l, &spec).ok(),
            Some(Plan {
                level: 1,
                scale: 1.0
            })
        );
        let spec = PatchSpec {
            mpp: Some(0.5),
            ..spec
        };
        assert_eq!(
            plan(&l, &spec).ok(),
            Some(Plan {
                level: 0,
                scale: 2.0
            })
        );
        let spec = PatchSpec {
            mpp: Some(1e6),
            ..spec
        };
        assert!(matches!(
            plan(&l, &spec),
            Err(Error::InvalidArgument { arg: "mpp", .. })
        ));
    }

    fn size(width: usize, height: usize) -> Size {
        Size { width, height }
    }

    fn resized(src: &[u8], from: Size, to: Size) -> Result<Vec<u8>> {
        resize(RgbImage::new("image", src, from)?, to)
    }

    #[test]
    fn resize_identity_and_constant() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 11 % 256) as u8).collect();
        assert_eq!(
            resized(&src, size(5, 4), size(5, 4)).ok(),
            Some(src.clone())
        );
        let flat = vec![77u8; 9 * 7 * 3];
        assert!(resized(&flat, size(9, 7), size(4, 3))
            .unwrap_or_default()
            .iter()
            .all(|&v| v == 77));
        assert!(matches!(
            resized(&flat, size(9, 7), size(0, 3)),
            Err(Error::InvalidArgument { arg: "size", .. })
        ));
    }

    #[test]
    fn box_downsample_by_two_averages_pairs() {
        // A 4x1 grey ramp halved: Pillow's triangle filter with support 2 over pairs.
        let src: Vec<u8> = [0u8, 100, 200, 250]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let out = resized(&src, size(4, 1), size(2, 1)).unwrap_or_default();
        // Output 0 centred at source 1.0: taps j=0 (w .75) and 1 (w .75) and -1/2 (0.25, clamped)
        assert!(out[0] < out[3]);
    }

    /// A textured `w x h` PNG slide in a temporary file.
    fn png_slide(w: usize, h: usize) -> (std::path::PathBuf, Vec<u8>) {
        let pixels: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 7 + y) as u8,
                    (x ^ (y * 3)) as u8,
                    (y * 5 + x / 3) as u8,
                ]
            })
            .collect();
        let path =
            std::env::temp_dir().join(format!("mclstexp-thumb-{}-{w}.png", std::process::id()));
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
            enc.set_color(png::ColorType::Rgb);
            let written = enc
                .write_header()
                .and_then(|mut wr| wr.write_image_data(&pixels));
            assert!(written.is_ok());
        }
        assert!(std::fs::write(&path, bytes).is_ok());
        (path, pixels)
    }

    #[test]
    fn a_thumbnail_made_in_bands_equals_one_made_in_one_piece() {
        let (w, h) = (301, 187);
        let (path, pixels) = png_slide(w, h);
        let slide = Slide::open(&path);
        let _ = std::fs::remove_file(&path);
        let Ok(slide) = slide else {
            panic!("the test slide does not open")
        };
        for max_size in [64, 100, 301] {
            let f = (max_size as f64 / w as f64).min(1.0);
            let (tw, th) = (
                (w as f64 * f).round() as usize,
                (h as f64 * f).round() as usize,
            );
            // The previous implementation: the whole level, resized in one piece.
            let whole = resized(&pixels, size(w, h), size(tw, th)).unwrap_or_default();
            for band_bytes in [1, 3 * w * 10, usize::MAX] {
                let banded = thumbnail_in_bands(&slide, max_size, Some(2), band_bytes);
                let Ok((px, got_w, got_h)) = banded else {
                    panic!("max_size {max_size}, bands of {band_bytes} bytes: {banded:?}")
                };
                assert_eq!((got_w, got_h), (tw, th));
                assert!(
                    px == whole,
                    "max_size {max_size}, bands of {band_bytes} bytes"
                );
            }
        }
    }

    #[test]
    fn grid_keeps_tissue_cells() {
        // 4x4 mask over a 400x400 slide, tissue in the top-left quarter.
        let mut mask = vec![false; 16];
        for y in 0..2 {
            for x in 0..2 {
                mask[y * 4 + x] = true;
            }
        }
        let c = Mask::new("mask", &mask, size(4, 4))
            .and_then(|m| grid_centers(m, (400, 400), 100.0, 0.5))
            .unwrap_or_default();
        assert_eq!(
            c,
            vec![[50.0, 50.0], [150.0, 50.0], [50.0, 150.0], [150.0, 150.0]]
        );
    }
}
