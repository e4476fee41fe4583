//! Fused training augmentation: colour jitter + horizontal flip + rotation (nearest neighbour,
//! black fill) + conversion to the network's input layout, in one pass per output pixel.
//!
//! The random parameters are drawn by the caller (Python draws them from a `torch.Generator`, so
//! reproducibility and resume do not depend on this code); this module applies them. It mirrors
//! the reference torch implementation (`mclstexp.train.data._augment_torch`) operation for
//! operation in `f32`, so the uint8 result is identical up to rare +-1 grey levels where a
//! colour value lands on a rounding boundary (the reference sums its 4x3 colour matrix product in
//! BLAS order; see the Python tests for the measured bound).
//!
//! Per image `i` with brightness `b`, contrast `c`, saturation `s`, flip `f` and angle `t`:
//!
//! - colour (torchvision's ColorJitter formulas, brightness -> contrast -> saturation, one clamp):
//!   with `gray(p) = 0.299 r + 0.587 g + 0.114 b` and `m` = mean grey level of the *source* image
//!   over the sub-grid of every `max(1, min(H, W) / 56)`-th row and column,
//!   `out_k = a p_k + g gray(p) + (1 - c) b m` with `a = s c b`, `g = (1 - s) c b`, then
//!   `clamp(0, 255)` and rounding (`+ 0.5`, truncation);
//! - geometry: with `(dx, dy) = (x - cx, y - cy)` about the centre `(cx, cy) = ((W - 1) / 2,
//!   (H - 1) / 2)`, output pixel `(y, x)` takes the source pixel nearest to
//!   `(cx + s (cos t dx - sin t dy), cy + sin t dx + cos t dy)` with `s = -1` when flipped (the
//!   flip applies first) and `+1` otherwise; with the y axis pointing down, positive `t` turns the
//!   image counter-clockwise on screen; outside the source the pixel is black (all channels 0 before
//!   the normalisation below, and the colour offset does not apply there);
//! - output: either uint8 `N x H x W x 3`, or float32 `N x 3 x H x W` with
//!   `(v / 255 - mean[k]) / std[k]` (bit-identical to numpy/torch float32, the values of
//!   [`ChannelNorm::lut`]).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::normalize::ChannelNorm;
use crate::pool;
use crate::simd::{self, Isa};
use crate::view::RgbBatch;

/// Luma weights of the grey level (ITU-R 601, as torchvision's `rgb_to_grayscale`).
pub const GRAY: [f32; 3] = [0.299, 0.587, 0.114];

/// Per-image random parameters, one entry per image (all slices of length `n`).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// Brightness factors (>= 0; 1 = unchanged).
    pub brightness: &'a [f64],
    /// Contrast factors (>= 0; 1 = unchanged).
    pub contrast: &'a [f64],
    /// Saturation factors (>= 0; 1 = unchanged).
    pub saturation: &'a [f64],
    /// Horizontal flip (applied before the rotation).
    pub flip: &'a [bool],
    /// Rotation angles in degrees (counter-clockwise on screen for positive angles, as
    /// torchvision's `rotate`: +90 degrees equals `numpy.rot90`).
    pub angle: &'a [f64],
}

/// The jobs of one call: job `i` reads source image `indices[i]` with the parameters of entry
/// `i` of `params` and writes output image `out_rows[i]` (default `i`).
#[derive(Debug, Clone, Copy)]
pub struct Jobs<'a> {
    /// Source image of each job.
    pub indices: &'a [usize],
    /// Output image of each job (distinct); `None`: job `i` writes image `i`.
    pub out_rows: Option<&'a [usize]>,
    /// One entry per job.
    pub params: Params<'a>,
}

/// Where the result goes.
#[derive(Debug)]
pub enum Output<'a> {
    /// uint8 `N x H x W x 3`.
    Uint8(&'a mut [u8]),
    /// float32 `N x 3 x H x W`, `(v / 255 - mean) / std` per channel.
    Tensor {
        /// The output buffer.
        out: &'a mut [f32],
        /// Per-channel mean and standard deviation (of the [0, 1] scaled values).
        norm: ChannelNorm,
    },
}

impl Output<'_> {
    /// Number of values in the output buffer.
    fn len(&self) -> usize {
        match self {
            Output::Uint8(o) => o.len(),
            Output::Tensor { out, .. } => out.len(),
        }
    }
}

/// The per-image constants of the fused map, derived from [`Params`] exactly as the reference
/// torch implementation derives them (in `f32`, same operation order).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ImageMap {
    /// Colour matrix rows: `out_k = sum_j p_j mat[j][k] + 255 * off`.
    mat: [[f32; 3]; 3],
    /// Multiplier of the source mean grey level in the offset: `(1 - c) b`.
    contrast_shift: f32,
    /// The inverse map from output to source coordinates (relative to the centre):
    /// `sx = m00 xs + m01 ys`, `sy = m10 xs + m11 ys` with `m00 = cos(t) sign`,
    /// `m01 = -sin(t) sign`, `m10 = sin(t)`, `m11 = cos(t)` (sign = -1 when flipped).
    m00: f32,
    m01: f32,
    m10: f32,
    m11: f32,
}

impl ImageMap {
    fn new(b: f64, c: f64, s: f64, flip: bool, angle_deg: f64) -> Self {
        let (b, c, s) = (b as f32, c as f32, s as f32);
        let a = s * c * b;
        let g = (1.0 - s) * c * b;
        let mut mat = [[0f32; 3]; 3];
        for (j, row) in mat.iter_mut().enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                let eye = if j == k { 1.0f32 } else { 0.0 };
                *v = g * GRAY[j] + a * eye;
            }
        }
        let rad = angle_deg * (std::f64::consts::PI / 180.0);
        let (cos, sin) = ((rad.cos()) as f32, (rad.sin()) as f32);
        let sign = if flip { -1.0f32 } else { 1.0 };
        ImageMap {
            mat,
            contrast_shift: (1.0 - c) * b,
            m00: cos * sign,
            m01: -sin * sign,
            m10: sin,
            m11: cos,
        }
    }
}

/// `a * b + c` rounded once to `f32` (a fused multiply-add), computed in `f64`: the product of two
/// `f32` is exact in `f64`, and so is the sum whenever the operands span at most 53 bits, which
/// holds here unless `|a|` < 2^-19 or so; even then the result differs from a true FMA only when
/// the `f64` sum lands exactly on an `f32` rounding midpoint. Faster than `f32::mul_add` without
/// a target FMA unit (a libm call), and needs no `unsafe` feature dispatch.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (f64::from(a) * f64::from(b) + f64::from(c)) as f32
}

/// The sub-grid step of the contrast mean.
pub fn contrast_step(h: usize, w: usize) -> usize {
    (h.min(w) / 56).max(1)
}

/// Padding of the reference implementation's coordinate frame (coordinates there are offset by
/// `pad` so that truncation is rounding for every rotated position; kept for identical floats).
/// Large enough for any rotation of a non-square image: `R - min(H, W) / 2 <= max(H, W) (sqrt 2 -
/// 1) / 2 + (max - min) / 2` with `R` = half the diagonal.
fn frame_pad(h: usize, w: usize) -> usize {
    let side = h.max(w) as f64;
    let excess = (h.max(w) - h.min(w)).div_ceil(2);
    (side * (std::f64::consts::SQRT_2 - 1.0) / 2.0).ceil() as usize + 1 + excess
}

/// Mean grey level of one `[h, w, 3]` image over the sub-grid (as `f32`, like the reference).
fn mean_gray(img: &[u8], h: usize, w: usize) -> f32 {
    let step = contrast_step(h, w);
    let mut sums = [0f64; 3];
    let mut count = 0usize;
    for y in (0..h).step_by(step) {
        let row = &img[y * w * 3..(y + 1) * w * 3];
        for px in row.chunks_exact(3).step_by(step) {
            sums[0] += f64::from(px[0]);
            sums[1] += f64::from(px[1]);
            sums[2] += f64::from(px[2]);
            count += 1;
        }
    }
    if count == 0 {
        return 0.0;
    }
    // integer sums are exact; the reference divides the f32 sum by the count in f32
    let mean = sums.map(|s| s as f32 / count as f32);
    mean[0] * GRAY[0] + mean[1] * GRAY[1] + mean[2] * GRAY[2]
}

fn check_params(p: &Params<'_>, n: usize) -> Result<()> {
    let lens: [(&'static str, usize); 5] = [
        ("brightness", p.brightness.len()),
        ("contrast", p.contrast.len()),
        ("saturation", p.saturation.len()),
        ("flip", p.flip.len()),
        ("angle", p.angle.len()),
    ];
    for (arg, len) in lens {
        if len != n {
            return Err(Error::invalid(
                arg,
                format!("expected one value per image ({n}), got {len}"),
            ));
        }
    }
    let factors: [(&'static str, &[f64]); 3] = [
        ("brightness", p.brightness),
        ("contrast", p.contrast),
        ("saturation", p.saturation),
    ];
    for (arg, values) in factors {
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(Error::invalid(
                arg,
                format!("factors must be finite and >= 0, got {v} for image {i}"),
            ));
        }
    }
    if let Some((i, v)) = p.angle.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            "angle",
            format!("must be finite, got {v} for image {i}"),
        ));
    }
    Ok(())
}

/// Augments every image of `src` (uint8 `N x H x W x 3`) with the parameters of the same index
/// into `out`; parallel over images in the pool of `n_threads`.
pub fn augment(
    src: RgbBatch<'_>,
    params: &Params<'_>,
    out: Output<'_>,
    n_threads: Option<usize>,
) -> Result<()> {
    let indices: Vec<usize> = (0..src.len()).collect();
    let jobs = Jobs {
        indices: &indices,
        out_rows: None,
        params: *params,
    };
    augment_rows(src, &jobs, out, n_threads)
}

/// Runs `jobs` (see [`Jobs`]) on the images of `src` (any number of `H x W x 3` images) into
/// `out`; output images no job writes are left untouched. This gathers batch rows straight from
/// a RAM-resident patch cache without an intermediate copy.
///
/// Errors: `indices` out of range, `out_rows` out of range or repeated, parameters of the wrong
/// length or out of range, an output that is not whole images.
pub fn augment_rows(
    src: RgbBatch<'_>,
    jobs: &Jobs<'_>,
    out: Output<'_>,
    n_threads: Option<usize>,
) -> Result<()> {
    augment_with(simd::isa(), src, jobs, out, n_threads)
}

/// [`augment_rows`] with the row passes of `isa` (lowered to what the CPU runs).
fn augment_with(
    isa: Isa,
    src: RgbBatch<'_>,
    jobs: &Jobs<'_>,
    out: Output<'_>,
    n_threads: Option<usize>,
) -> Result<()> {
    let per = src.image_len();
    if per == 0 {
        return Ok(());
    }
    let dest = destinations(src, jobs, out.len())?;
    let (h, w) = (src.shape().height, src.shape().width);
    let geo = Geometry::new(h, w);
    let p = &jobs.params;
    let maps: Vec<ImageMap> = (0..jobs.indices.len())
        .map(|i| {
            let (b, c, s) = (p.brightness[i], p.contrast[i], p.saturation[i]);
            ImageMap::new(b, c, s, p.flip[i], p.angle[i])
        })
        .collect();
    let sources: Vec<&[u8]> = jobs.indices.iter().filter_map(|&k| src.image(k)).collect();
    match out {
        Output::Uint8(dst) => {
            let work = pair_rows(dst.chunks_mut(per), &dest, &sources, &maps);
            pool::install(n_threads, || {
                work.into_par_iter()
                    .for_each_init(Scratch::default, |scratch, (d, s, m)| {
                        dispatch(isa, &geo, s, m, scratch, |y, vals| {
                            emit_uint8(d, w, y, vals)
                        })
                    });
            })
        }
        Output::Tensor { out, norm } => {
            // validates mean/std; the values below equal its entries bit for bit (same ops)
            norm.lut()?;
            let (mf, sf) = (norm.mean.map(|v| v as f32), norm.std.map(|v| v as f32));
            let work = pair_rows(out.chunks_mut(per), &dest, &sources, &maps);
            pool::install(n_threads, || {
                work.into_par_iter()
                    .for_each_init(Scratch::default, |scratch, (d, s, m)| {
                        dispatch(isa, &geo, s, m, scratch, |y, vals| {
                            emit_tensor(d, (h, w), y, vals, (mf, sf))
                        })
                    });
            })
        }
    }
}

/// Checks the jobs against `src` and an output of `out_len` values; returns each job's output
/// image (distinct, in range).
fn destinations(src: RgbBatch<'_>, jobs: &Jobs<'_>, out_len: usize) -> Result<Vec<usize>> {
    let (per, n_src, n_jobs) = (src.image_len(), src.len(), jobs.indices.len());
    if let Some((i, &k)) = jobs.indices.iter().enumerate().find(|(_, &k)| k >= n_src) {
        return Err(Error::invalid(
            "indices",
            format!("index {k} (job {i}) is out of range for {n_src} images"),
        ));
    }
    check_params(&jobs.params, n_jobs)?;
    if !out_len.is_multiple_of(per) {
        let (h, w) = (src.shape().height, src.shape().width);
        return Err(Error::invalid(
            "out",
            format!("expected whole {h} x {w} x 3 images, got {out_len} values"),
        ));
    }
    let n_out = out_len / per;
    let dest: Vec<usize> = match jobs.out_rows {
        Some(r) if r.len() != n_jobs => {
            return Err(Error::invalid(
                "out_rows",
                format!("expected one row per job ({n_jobs}), got {}", r.len()),
            ))
        }
        Some(r) => r.to_vec(),
        None => (0..n_jobs).collect(),
    };
    let mut taken = vec![false; n_out];
    for &r in &dest {
        match taken.get_mut(r) {
            Some(t) if !*t => *t = true,
            Some(_) => {
                return Err(Error::invalid(
                    "out_rows",
                    format!("row {r} is written twice"),
                ))
            }
            None => {
                return Err(Error::invalid(
                    "out",
                    format!("has {n_out} images, but row {r} is to be written"),
                ))
            }
        }
    }
    Ok(dest)
}

/// Writes output row `y` (channel values, integers 0..=255 as `f32`) of a uint8 `H x W x 3`
/// image `d` of width `w`.
#[inline(always)]
fn emit_uint8(d: &mut [u8], w: usize, y: usize, [r, g, b]: [&[f32]; 3]) {
    let row = &mut d[y * w * 3..(y + 1) * w * 3];
    for (((p, &r), &g), &b) in row.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
        // SAFETY: `run` emits integral values in 0..=255 (clamped, truncated), which
        // `to_int_unchecked` converts exactly (its only precondition is a finite value
        // representable in the target).
        let v = unsafe {
            [
                r.to_int_unchecked::<u8>(),
                g.to_int_unchecked::<u8>(),
                b.to_int_unchecked::<u8>(),
            ]
        };
        p.copy_from_slice(&v);
    }
}

/// Writes output row `y` of a float32 `3 x H x W` image `d`: `(v / 255 - mean) / std` per
/// channel.
#[inline(always)]
fn emit_tensor(
    d: &mut [f32],
    (h, w): (usize, usize),
    y: usize,
    vals: [&[f32]; 3],
    (mean, std): ([f32; 3], [f32; 3]),
) {
    let hw = h * w;
    for (k, vals) in vals.into_iter().enumerate() {
        let row = &mut d[k * hw + y * w..k * hw + (y + 1) * w];
        let (mk, sk) = (mean[k], std[k]);
        for (o, &v) in row.iter_mut().zip(vals) {
            *o = (v / 255.0 - mk) / sk;
        }
    }
}

/// `(output image, source image, parameters)` per job; `dest` was checked to hold distinct rows
/// in range, so every job gets its own output slice.
fn pair_rows<'o, 's, T>(
    chunks: std::slice::ChunksMut<'o, T>,
    dest: &[usize],
    sources: &[&'s [u8]],
    maps: &'s [ImageMap],
) -> Vec<(&'o mut [T], &'s [u8], &'s ImageMap)> {
    let mut slots: Vec<Option<&'o mut [T]>> = chunks.map(Some).collect();
    dest.iter()
        .zip(sources.iter().zip(maps.iter()))
        .filter_map(|(&r, (&s, m))| slots.get_mut(r).and_then(Option::take).map(|d| (d, s, m)))
        .collect()
}

/// The image geometry shared by every image of a batch.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    pad: i64,
    /// Centre + pad + 0.5 (column, row): truncation of (coordinate + 0.5) is nearest.
    x0: f32,
    y0: f32,
    /// `(W - 1) / 2`, `(H - 1) / 2`.
    cx: f32,
    cy: f32,
}

impl Geometry {
    fn new(h: usize, w: usize) -> Self {
        let pad = frame_pad(h, w);
        let cx = (w as f64 - 1.0) / 2.0;
        let cy = (h as f64 - 1.0) / 2.0;
        Geometry {
            h,
            w,
            pad: pad as i64,
            x0: (cx + pad as f64 + 0.5) as f32,
            y0: (cy + pad as f64 + 0.5) as f32,
            cx: cx as f32,
            cy: cy as f32,
        }
    }

    /// Runs the fused map over one image, row by row, calling `emit(y, [r, g, b])` with the
    /// output row's channel values (integers 0..=255 as `f32`). Each row goes through short passes
    /// over row buffers (coordinates, gather, colour) so that everything but the gather
    /// vectorises. `FMA`: whether the target has a fused multiply-add unit (see [`fma`]).
    #[inline(always)]
    fn run<const FMA: bool>(
        &self,
        src: &[u8],
        m: &ImageMap,
        scratch: &mut Scratch,
        mut emit: impl FnMut(usize, [&[f32]; 3]),
    ) {
        let (h, w) = (self.h, self.w);
        let fma = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { fma(a, b, c) };
        // the reference scales the offset by 1/255 and multiplies it by V = 255 inside the image
        let off = ((m.contrast_shift * mean_gray(src, h, w) + 0.5) / 255.0) * 255.0;
        let mat = m.mat;
        // sizes fit i64: h * w * 3 was checked not to overflow usize
        let (wi, hi, pad) = (w as i64, h as i64, self.pad);
        scratch.resize(w);
        let Scratch {
            xs,
            coord_x,
            coord_y,
            rgbv,
            vals,
        } = scratch;
        for (x, v) in xs.iter_mut().enumerate() {
            *v = x as f32 - self.cx;
        }
        for y in 0..h {
            let ys = y as f32 - self.cy;
            // source coordinates in the reference's operation order (torch's addcmul is a fused
            // multiply-add): sx = fma(m01, ys, fma(m00, xs, x0)), sy = fma(m10, xs, fma(m11, ys, y0));
            // nearest = truncation of (coordinate + 0.5) (x0, y0 hold the + 0.5 and the pad)
            // (vectorised: float math only; the padded coordinates are >= 0, so trunc = floor)
            let row_y = fma(m.m11, ys, self.y0);
            for ((cx, cy), &xs) in coord_x.iter_mut().zip(coord_y.iter_mut()).zip(xs.iter()) {
                *cx = fma(m.m01, ys, fma(m.m00, xs, self.x0)).trunc();
                *cy = fma(m.m10, xs, row_y).trunc();
            }
            // gather (outside the image: black and no colour offset)
            let [r, g, b, v] = rgbv;
            for (x, (&cx, &cy)) in coord_x.iter().zip(coord_y.iter()).enumerate() {
                let px = cx as i64 - pad;
                let py = cy as i64 - pad;
                let inside = px >= 0 && py >= 0 && px < wi && py < hi;
                let p = if inside {
                    let i = 3 * (py * wi + px) as usize;
                    src.get(i..i + 3)
                } else {
                    None
                };
                (r[x], g[x], b[x], v[x]) = match p {
                    Some(p) => (p[0], p[1], p[2], 1),
                    None => (0, 0, 0, 0),
                };
            }
            // colour map, clamp, rounding (the +0.5 in `off`) by truncation
            for (k, o) in vals.iter_mut().enumerate() {
                let (m0, m1, m2) = (mat[0][k], mat[1][k], mat[2][k]);
                for ((((o, &r), &g), &b), &v) in o
                    .iter_mut()
                    .zip(r.iter())
                    .zip(g.iter())
                    .zip(b.iter())
                    .zip(v.iter())
                {
                    let c = f32::from(r) * m0
                        + f32::from(g) * m1
                        + f32::from(b) * m2
                        + f32::from(v) * off;
                    *o = c.clamp(0.0, 255.0).trunc();
                }
            }
            emit(y, [&vals[0], &vals[1], &vals[2]]);
        }
    }
}

/// Row buffers of [`Geometry::run`], reused across the images of one worker.
#[derive(Debug, Default)]
struct Scratch {
    xs: Vec<f32>,
    coord_x: Vec<f32>,
    coord_y: Vec<f32>,
    rgbv: [Vec<u8>; 4],
    vals: [Vec<f32>; 3],
}

impl Scratch {
    fn resize(&mut self, w: usize) {
        self.xs.resize(w, 0.0);
        self.coord_x.resize(w, 0.0);
        self.coord_y.resize(w, 0.0);
        for v in &mut self.rgbv {
            v.resize(w, 0);
        }
        for v in &mut self.vals {
            v.resize(w, 0.0);
        }
    }
}

/// Applies `run` to one image with the code path of `isa` (lowered to what the CPU runs): from
/// AVX2 + FMA up (x86-64) the row passes vectorise 8 wide and use hardware fused multiply-adds;
/// the portable path emulates them exactly (see [`fma`]). Both give the same result. There is
/// no AVX-512 version: that level runs the AVX2 one.
fn dispatch(
    isa: Isa,
    geo: &Geometry,
    src: &[u8],
    m: &ImageMap,
    scratch: &mut Scratch,
    emit: impl FnMut(usize, [&[f32]; 3]),
) {
    match isa.supported_or_below() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `run_avx2_fma` only requires AVX2 and FMA, which every supported level from
        // `Avx2Fma` up has; it has no other preconditions.
        Isa::Avx2Fma | Isa::Avx512 => unsafe { run_avx2_fma(geo, src, m, scratch, emit) },
        _ => geo.run::<false>(src, m, scratch, emit),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2_fma(
    geo: &Geometry,
    src: &[u8],
    m: &ImageMap,
    scratch: &mut Scratch,
    emit: impl FnMut(usize, [&[f32]; 3]),
) {
    geo.run::<true>(src, m, scratch, emit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::BatchShape;

    fn batch(src: &[u8], n: usize, h: usize, w: usize) -> RgbBatch<'_> {
        let shape = BatchShape {
            n,
            height: h,
            width: w,
        };
        RgbBatch::new("patches", src, shape).unwrap_or_else(|e| panic!("{e}"))
    }

    fn image(n: usize, h: usize, w: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n * h * w * 3)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }

    struct P {
        b: Vec<f64>,
        c: Vec<f64>,
        s: Vec<f64>,
        f: Vec<bool>,
        a: Vec<f64>,
    }

    impl P {
        fn identity(n: usize) -> Self {
            P {
                b: vec![1.0; n],
                c: vec![1.0; n],
                s: vec![1.0; n],
                f: vec![false; n],
                a: vec![0.0; n],
            }
        }
        fn params(&self) -> Params<'_> {
            Params {
                brightness: &self.b,
                contrast: &self.c,
                saturation: &self.s,
                flip: &self.f,
                angle: &self.a,
            }
        }
    }

    fn run_u8(src: &[u8], n: usize, h: usize, w: usize, p: &P) -> Vec<u8> {
        let mut out = vec![7u8; src.len()];
        augment(
            batch(src, n, h, w),
            &p.params(),
            Output::Uint8(&mut out),
            Some(2),
        )
        .unwrap_or(());
        out
    }

    #[test]
    fn identity_parameters_copy_the_image() {
        let (n, h, w) = (3, 9, 13);
        let src = image(n, h, w, 1);
        assert_eq!(run_u8(&src, n, h, w, &P::identity(n)), src);
    }

    #[test]
    fn flip_mirrors_columns_and_quarter_turns_are_exact() {
        let (n, h, w) = (2, 8, 8);
        let src = image(n, h, w, 2);
        let mut p = P::identity(n);
        p.f = vec![true; n];
        let out = run_u8(&src, n, h, w, &p);
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    for k in 0..3 {
                        let o = out[((i * h + y) * w + x) * 3 + k];
                        let s = src[((i * h + y) * w + (w - 1 - x)) * 3 + k];
                        assert_eq!(o, s);
                    }
                }
            }
        }
        // +90 degrees (counter-clockwise): out[y][x] = src[x][w - 1 - y] on a square image
        let mut p = P::identity(n);
        p.a = vec![90.0; n];
        let out = run_u8(&src, n, h, w, &p);
        for y in 0..h {
            for x in 0..w {
                for k in 0..3 {
                    assert_eq!(out[(y * w + x) * 3 + k], src[(x * w + (w - 1 - y)) * 3 + k]);
                }
            }
        }
    }

    #[test]
    fn corners_are_black_at_45_degrees_and_normalised_fill_is_lut_zero() {
        let (n, h, w) = (1, 16, 16);
        let src = vec![200u8; n * h * w * 3];
        let mut p = P::identity(n);
        p.a = vec![45.0];
        let out = run_u8(&src, n, h, w, &p);
        assert_eq!(&out[0..3], &[0, 0, 0]);
        assert_eq!(&out[(8 * w + 8) * 3..(8 * w + 8) * 3 + 3], &[200, 200, 200]);
        let norm = ChannelNorm {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let mut t = vec![0f32; src.len()];
        let out_t = Output::Tensor { out: &mut t, norm };
        augment(batch(&src, n, h, w), &p.params(), out_t, Some(1)).unwrap_or(());
        let lut = norm.lut().unwrap_or([[f32::NAN; 256]; 3]);
        for k in 0..3 {
            assert_eq!(t[k * h * w], lut[k][0]);
            assert_eq!(t[k * h * w + 8 * w + 8], lut[k][200]);
        }
    }

    #[test]
    fn colour_follows_the_torchvision_formulas() {
        // grey image of level 100: saturation has no effect, contrast pulls towards the mean (100)
        let (n, h, w) = (1, 4, 4);
        let src = vec![100u8; n * h * w * 3];
        let mut p = P::identity(n);
        p.b = vec![1.5];
        p.c = vec![0.5];
        p.s = vec![1.3];
        let out = run_u8(&src, n, h, w, &p);
        // brightness 150 -> contrast 0.5 * 150 + 0.5 * 1.5 * 100 = 150 -> saturation: grey stays
        assert!(out.iter().all(|&v| v == 150), "{out:?}");
        let mut p = P::identity(n);
        p.b = vec![3.0];
        let out = run_u8(&src, n, h, w, &p);
        assert!(out.iter().all(|&v| v == 255));
    }

    #[test]
    fn rows_gather_sources_and_scatter_to_destinations() {
        let (h, w) = (5, 7);
        let src = image(4, h, w, 9);
        let per = h * w * 3;
        let p = P::identity(2);
        let mut out = vec![1u8; 3 * per];
        let jobs = |indices, out_rows| Jobs {
            indices,
            out_rows,
            params: p.params(),
        };
        let src_batch = batch(&src, 4, h, w);
        let r = augment_rows(
            src_batch,
            &jobs(&[3, 0], Some(&[2, 0])),
            Output::Uint8(&mut out),
            Some(2),
        );
        assert!(r.is_ok());
        assert_eq!(&out[2 * per..], &src[3 * per..]);
        assert_eq!(&out[..per], &src[..per]);
        assert!(out[per..2 * per].iter().all(|&v| v == 1)); // untouched
        let twice = augment_rows(
            src_batch,
            &jobs(&[3, 0], Some(&[1, 1])),
            Output::Uint8(&mut out),
            None,
        );
        assert!(matches!(
            twice,
            Err(Error::InvalidArgument {
                arg: "out_rows",
                ..
            })
        ));
        let far = augment_rows(
            src_batch,
            &jobs(&[4, 0], None),
            Output::Uint8(&mut out),
            None,
        );
        assert!(matches!(
            far,
            Err(Error::InvalidArgument { arg: "indices", .. })
        ));
    }

    #[test]
    fn bad_arguments_name_themselves() {
        let src = image(2, 4, 4, 3);
        let p = P::identity(2);
        let mut out = vec![0u8; src.len()];
        let shape = BatchShape {
            n: 2,
            height: 4,
            width: 4,
        };
        assert!(matches!(
            RgbBatch::new("patches", &src[1..], shape),
            Err(Error::InvalidArgument { arg: "patches", .. })
        ));
        let src = batch(&src, 2, 4, 4);
        let mut short = P::identity(2);
        short.a = vec![0.0];
        let err = augment(src, &short.params(), Output::Uint8(&mut out), None);
        assert!(matches!(
            err,
            Err(Error::InvalidArgument { arg: "angle", .. })
        ));
        let mut bad = P::identity(2);
        bad.c = vec![1.0, f64::NAN];
        let err = augment(src, &bad.params(), Output::Uint8(&mut out), None);
        assert!(matches!(
            err,
            Err(Error::InvalidArgument {
                arg: "contrast",
                ..
            })
        ));
        let mut small = vec![0u8; 3];
        let err = augment(src, &p.params(), Output::Uint8(&mut small), None);
        assert!(matches!(
            err,
            Err(Error::InvalidArgument { arg: "out", .. })
        ));
        let mut t = vec![0f32; out.len()];
        let norm = ChannelNorm {
            mean: [0.0; 3],
            std: [0.0, 1.0, 1.0],
        };
        let out_t = Output::Tensor { out: &mut t, norm };
        let err = augment(src, &p.params(), out_t, None);
        assert!(matches!(
            err,
            Err(Error::InvalidArgument { arg: "std", .. })
        ));
    }

    #[test]
    fn every_level_gives_the_portable_result_exactly() {
        let (n, h, w) = (3, 23, 17);
        let src = image(n, h, w, 11);
        let p = P {
            b: vec![0.7, 1.0, 1.3],
            c: vec![1.2, 0.8, 1.0],
            s: vec![0.5, 1.5, 1.0],
            f: vec![true, false, true],
            a: vec![-33.0, 90.0, 171.5],
        };
        let indices = [2, 0, 1];
        let jobs = Jobs {
            indices: &indices,
            out_rows: Some(&[1, 2, 0]),
            params: p.params(),
        };
        let norm = ChannelNorm {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let run = |isa: Isa| {
            let (mut u8s, mut t) = (vec![0u8; src.len()], vec![0f32; src.len()]);
            let batch = batch(&src, n, h, w);
            let a = augment_with(isa, batch, &jobs, Output::Uint8(&mut u8s), Some(2));
            let o = Output::Tensor { out: &mut t, norm };
            let b = augment_with(isa, batch, &jobs, o, Some(2));
            assert!(a.is_ok() && b.is_ok(), "{isa}");
            (u8s, t.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        let portable = run(Isa::Portable);
        for isa in simd::supported() {
            assert!(run(isa) == portable, "{isa} differs from the portable code");
        }
    }
}
