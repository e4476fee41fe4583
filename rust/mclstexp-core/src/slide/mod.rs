//! Whole-slide images: tiled/stripped TIFF, BigTIFF, Aperio SVS, OME-TIFF, and plain JPEG/PNG.
//!
//! [`Slide::open`] parses the file's structure once; reads then fetch only the tiles they touch,
//! decode them (JPEG with `JPEGTables`, LZW, Deflate, none) and keep them in a bounded,
//! thread-safe [`cache::TileCache`]. `&Slide` is `Sync`: many threads read one slide at once.
//! Plain JPEG/PNG images have no tiles: they are decoded once, on first read, and kept.
//!
//! Coordinates: a level's pixel grid; `(x, y)` = (column, row) of the region's top-left pixel,
//! which may lie outside the image (the outside is filled with white, 255).

pub mod cache;
pub mod decode;
pub mod source;
pub mod tiff;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cache::TileCache;
use source::FileSource;
use tiff::{TiffFile, TiffImage};

use crate::error::{Error, Result};

/// Default byte budget of a slide's tile cache.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;
/// Largest region one read may return, in bytes.
pub const MAX_REGION_BYTES: u64 = 1 << 32;
/// A plain PNG may decode to at most this many bytes per byte of file (64 MiB always; 8 GiB overall).
const MAX_RASTER_RATIO: u64 = 1024;
const MAX_RASTER_BYTES: u64 = 8 << 30;
/// A plain JPEG may decode to at most this many RGB bytes per byte of file.
const MAX_JPEG_RATIO: u64 = 4096;

/// One pyramid level: its size in pixels and its downsample from level 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub width: u64,
    pub height: u64,
    pub downsample: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RasterFormat {
    Jpeg,
    Png,
}

enum Backend {
    Tiff {
        src: FileSource,
        images: Vec<TiffImage>,
    },
    Raster {
        src: FileSource,
        format: RasterFormat,
        pixels: Mutex<Option<Arc<Vec<u8>>>>,
    },
}

/// An open slide. See the module documentation.
pub struct Slide {
    path: PathBuf,
    backend: Backend,
    levels: Vec<Level>,
    mpp: Option<(f64, f64)>,
    vendor: &'static str,
    description: Option<String>,
    file_len: u64,
    cache: TileCache,
    decodes: AtomicU64,
}

impl std::fmt::Debug for Slide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slide")
            .field("path", &self.path)
            .field("vendor", &self.vendor)
            .field("levels", &self.levels)
            .field("mpp", &self.mpp)
            .finish()
    }
}

fn fmt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::slide(path, msg)
}

impl Slide {
    /// Opens a slide with the default tile-cache budget.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens a slide whose tile cache holds at most `cache_bytes` of decoded tiles.
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self> {
        let path = path.as_ref();
        let src = FileSource::open(path)?;
        let mut head = [0u8; 8];
        let n = src.len().min(8) as usize;
        src.read_exact_at(0, &mut head[..n], "file header")?;
        let head = &head[..n];
        if TiffFile::sniff(head) {
            Self::open_tiff(src, cache_bytes)
        } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Self::open_raster(src, RasterFormat::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Self::open_raster(src, RasterFormat::Png)
        } else if src.is_empty() {
            Err(src.format_error("empty file, not a slide"))
        } else {
            Err(src.format_error(
                "unsupported: not a TIFF/SVS, JPEG or PNG file (the native reader cannot decode \
                 it; try backend='openslide')",
            ))
        }
    }

    fn open_tiff(src: FileSource, cache_bytes: usize) -> Result<Self> {
        let tiff = TiffFile::parse(&src)?;
        let base = TiffImage::from_ifd(&tiff, &src, &tiff.chain[0])?;
        let mut images = vec![base];
        let base = &images[0];
        let (w0, h0) = (base.width as f64, base.height as f64);
        if base.tiled {
            let mut extra: Vec<TiffImage> = Vec::new();
            for ifd in tiff.chain[1..].iter().chain(tiff.sub_ifds.iter()) {
                let Ok(img) = TiffImage::from_ifd(&tiff, &src, ifd) else {
                    continue;
                };
                if !img.tiled || img.width >= base.width || img.height > base.height {
                    continue;
                }
                let ds = (w0 / img.width as f64 + h0 / img.height as f64) / 2.0;
                let fits =
                    |full: f64, got: u64| (full / ds - got as f64).abs() <= 1.0 + 0.01 * got as f64;
                if fits(w0, img.width) && fits(h0, img.height) {
                    extra.push(img);
                }
            }
            extra.sort_by_key(|im| std::cmp::Reverse(im.width));
            extra.dedup_by(|a, b| a.width == b.width);
            images.extend(extra);
        }
        let levels = images
            .iter()
            .map(|im| Level {
                width: im.width,
                height: im.height,
                downsample: (w0 / im.width as f64 + h0 / im.height as f64) / 2.0,
            })
            .collect();
        let description = images[0].description.clone();
        let desc = description.as_deref().unwrap_or("");
        let vendor = if desc.starts_with("Aperio") {
            "aperio"
        } else if desc.contains("<OME") {
            "ome-tiff"
        } else {
            "generic-tiff"
        };
        let mpp = match vendor {
            "aperio" => aperio_mpp(desc),
            "ome-tiff" => ome_mpp(desc),
            _ => None,
        }
        .or_else(|| images[0].mpp_from_resolution());
        Ok(Slide {
            path: src.path().to_path_buf(),
            file_len: src.len(),
            backend: Backend::Tiff { src, images },
            levels,
            mpp,
            vendor,
            description,
            cache: TileCache::new(cache_bytes),
            decodes: AtomicU64::new(0),
        })
    }

    fn open_raster(src: FileSource, format: RasterFormat) -> Result<Self> {
        let bytes = read_all(&src)?;
        let dims = decode::guarded(|| match format {
            RasterFormat::Jpeg => decode::jpeg_dimensions(&bytes),
            RasterFormat::Png => decode::png_dimensions(&bytes),
        })
        .map_err(|m| src.format_error(m))?;
        let (w, h) = (dims.0 as u64, dims.1 as u64);
        if w == 0 || h == 0 {
            return Err(src.format_error(format!("invalid image size {w} x {h}")));
        }
        raster_bound(&src, format, w, h)?;
        Ok(Slide {
            path: src.path().to_path_buf(),
            file_len: src.len(),
            backend: Backend::Raster {
                src,
                format,
                pixels: Mutex::new(None),
            },
            levels: vec![Level {
                width: w,
                height: h,
                downsample: 1.0,
            }],
            mpp: None,
            vendor: match format {
                RasterFormat::Jpeg => "jpeg",
                RasterFormat::Png => "png",
            },
            description: None,
            cache: TileCache::new(0),
            decodes: AtomicU64::new(0),
        })
    }

    /// The slide's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The pyramid levels, level 0 (full resolution) first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Microns per pixel (x, y) of level 0 from the file's metadata, when present.
    pub fn mpp(&self) -> Option<(f64, f64)> {
        self.mpp
    }

    /// The mean of the x and y microns per pixel of level 0, when the file declares them (what
    /// patch reads at a target resolution use unless the caller gives the slide's mpp).
    pub fn mean_mpp(&self) -> Option<f64> {
        self.mpp.map(|(x, y)| (x + y) / 2.0)
    }

    /// The detected format: `aperio`, `ome-tiff`, `generic-tiff`, `jpeg` or `png`.
    pub fn vendor(&self) -> &'static str {
        self.vendor
    }

    /// Level 0's ImageDescription, when the file has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Tile size (w, h) of a level (the whole image for plain JPEG/PNG).
    pub fn tile_size(&self, level: usize) -> Result<(u64, u64)> {
        let lv = self.level(level)?;
        Ok(match &self.backend {
            Backend::Tiff { images, .. } => (images[level].tile_w, images[level].tile_h),
            Backend::Raster { .. } => (lv.width, lv.height),
        })
    }

    /// The tile cache.
    pub fn cache(&self) -> &TileCache {
        &self.cache
    }

    /// How many tiles (or whole plain images) this slide has decoded since it was opened: the
    /// work a read did, independent of timing noise.
    pub fn tile_decodes(&self) -> u64 {
        self.decodes.load(Ordering::Relaxed)
    }

    fn level(&self, level: usize) -> Result<&Level> {
        self.levels.get(level).ok_or_else(|| {
            Error::invalid(
                "level",
                format!("must be in [0, {}), got {level}", self.levels.len()),
            )
        })
    }

    /// Reads the `w x h` region of `level` whose top-left pixel is `(x, y)` (level coordinates)
    /// into `out` (packed RGB, `h * w * 3` bytes). Pixels outside the image are white.
    pub fn read_into(
        &self,
        level: usize,
        x: i64,
        y: i64,
        w: usize,
        h: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let lv = *self.level(level)?;
        if out.len() != w * h * 3 {
            return Err(Error::invalid("out", "buffer size must be h * w * 3"));
        }
        // Clip to the image.
        let (iw, ih) = (lv.width as i64, lv.height as i64);
        let x0 = x.max(0);
        let y0 = y.max(0);
        let x1 = (x + w as i64).min(iw);
        let y1 = (y + h as i64).min(ih);
        if x0 != x || y0 != y || x1 - x != w as i64 || y1 - y != h as i64 {
            out.fill(255); // part of the request lies outside the image
        }
        if x1 <= x0 || y1 <= y0 {
            return Ok(());
        }
        match &self.backend {
            Backend::Raster { .. } => {
                let pixels = self.raster_pixels()?;
                let stride = lv.width as usize * 3;
                for yy in y0..y1 {
                    let src_row = &pixels[yy as usize * stride..][x0 as usize * 3..x1 as usize * 3];
                    let o = ((yy - y) as usize * w + (x0 - x) as usize) * 3;
                    out[o..o + src_row.len()].copy_from_slice(src_row);
                }
            }
            Backend::Tiff { images, .. } => {
                let im = &images[level];
                let (tw, th) = (im.tile_w as i64, im.tile_h as i64);
                for ty in (y0 / th)..=((y1 - 1) / th) {
                    for tx in (x0 / tw)..=((x1 - 1) / tw) {
                        let tile = self.tile(level, tx as u64, ty as u64)?;
                        let rows = im.rows_in(ty as u64) as i64;
                        // Intersection of the tile, the image and the request.
                        let ax = (tx * tw).max(x0);
                        let bx = ((tx + 1) * tw).min(x1);
                        let ay = (ty * th).max(y0);
                        let by = (ty * th + rows).min(y1);
                        if bx <= ax || by <= ay {
                            continue;
                        }
                        let n = (bx - ax) as usize * 3;
                        for yy in ay..by {
                            let s = (((yy - ty * th) * tw + (ax - tx * tw)) * 3) as usize;
                            let o = ((yy - y) as usize * w + (ax - x) as usize) * 3;
                            out[o..o + n].copy_from_slice(&tile[s..s + n]);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads a region like [`Slide::read_into`] into a new buffer, in parallel over bands of tile
    /// rows on the process pool (`n_threads`).
    pub fn read_region(
        &self,
        level: usize,
        x: i64,
        y: i64,
        w: usize,
        h: usize,
        n_threads: Option<usize>,
    ) -> Result<Vec<u8>> {
        self.level(level)?;
        let bytes = (w as u64).saturating_mul(h as u64).saturating_mul(3);
        if w == 0 || h == 0 || bytes > MAX_REGION_BYTES {
            return Err(Error::invalid(
                "size",
                format!("region of {w} x {h} pixels: both sides must be >= 1 and the region at most 4 GiB"),
            ));
        }
        let mut out = vec![255u8; bytes as usize];
        let (_, th) = self.tile_size(level)?;
        let th = th.max(1) as i64;
        // Bands aligned on the tile grid: each band touches one row of tiles.
        let mut bands: Vec<(i64, &mut [u8])> = Vec::new();
        let mut rest: &mut [u8] = &mut out;
        let mut row = y;
        while row < y + h as i64 {
            let next = ((row.div_euclid(th) + 1) * th).min(y + h as i64);
            let (band, tail) = rest.split_at_mut((next - row) as usize * w * 3);
            bands.push((row, band));
            rest = tail;
            row = next;
        }
        if bands.len() == 1 {
            self.read_into(level, x, y, w, h, bands[0].1)?;
        } else {
            use rayon::prelude::*;
            crate::pool::install(n_threads, || {
                bands.into_par_iter().try_for_each(|(row, band)| {
                    let bh = band.len() / (w * 3);
                    self.read_into(level, x, row, w, bh, band)
                })
            })??;
        }
        Ok(out)
    }

    /// Reads a region given OpenSlide-style: `(x0, y0)` in level-0 coordinates, `w x h` pixels of
    /// `level` (the level coordinate is `floor(x0 / downsample)`).
    pub fn read_region_l0(
        &self,
        x0: i64,
        y0: i64,
        level: usize,
        w: usize,
        h: usize,
        n_threads: Option<usize>,
    ) -> Result<Vec<u8>> {
        let ds = self.level(level)?.downsample;
        let x = (x0 as f64 / ds).floor() as i64;
        let y = (y0 as f64 / ds).floor() as i64;
        self.read_region(level, x, y, w, h, n_threads)
    }

    fn tile(&self, level: usize, tx: u64, ty: u64) -> Result<Arc<Vec<u8>>> {
        let Backend::Tiff { src, images } = &self.backend else {
            return Err(fmt_err(&self.path, "internal: tile read on a raster image"));
        };
        let im = &images[level];
        let idx = ty * im.tiles_across + tx;
        let key = cache::key(level, idx);
        if let Some(t) = self.cache.get(key) {
            return Ok(t);
        }
        let rows = im.rows_in(ty);
        let (off, count) = (im.offsets[idx as usize], im.counts[idx as usize]);
        let decoded = if count == 0 {
            // A sparse (missing) tile: white, as OpenSlide paints nothing there.
            vec![255u8; (im.tile_w * rows * 3) as usize]
        } else {
            let raw = src.read_vec(off, count, "tile data")?;
            self.decodes.fetch_add(1, Ordering::Relaxed);
            decode::decode_tile(im, &raw, rows)
                .map_err(|m| src.format_error(format!("level {level}, tile {idx}: {m}")))?
        };
        let tile: Arc<Vec<u8>> = Arc::new(decoded);
        self.cache.insert(key, Arc::clone(&tile));
        Ok(tile)
    }

    fn raster_pixels(&self) -> Result<Arc<Vec<u8>>> {
        let Backend::Raster {
            src,
            format,
            pixels,
        } = &self.backend
        else {
            return Err(fmt_err(&self.path, "internal: raster read on a TIFF"));
        };
        let mut guard = pixels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = guard.as_ref() {
            return Ok(Arc::clone(p));
        }
        let bytes = read_all(src)?;
        self.decodes.fetch_add(1, Ordering::Relaxed);
        let lv = self.levels[0];
        let limit = raster_bound(src, *format, lv.width, lv.height)?;
        let (px, w, h) = decode::guarded(|| match format {
            RasterFormat::Jpeg => decode::decode_jpeg(&bytes, false, 1 << 16, 1 << 16),
            RasterFormat::Png => decode::decode_png(&bytes, limit),
        })
        .map_err(|m| src.format_error(m))?;
        if (w as u64, h as u64) != (lv.width, lv.height) {
            return Err(src.format_error("image size changed between header and decode"));
        }
        let px = Arc::new(px);
        *guard = Some(Arc::clone(&px));
        Ok(px)
    }
}

fn read_all(src: &FileSource) -> Result<Vec<u8>> {
    if src.len() > 4 << 30 {
        return Err(src.format_error("a plain JPEG/PNG over 4 GiB is not supported"));
    }
    src.read_vec(0, src.len(), "image data")
}

fn raster_bound(src: &FileSource, format: RasterFormat, w: u64, h: u64) -> Result<u64> {
    let need = w.saturating_mul(h).saturating_mul(3);
    let limit = match format {
        // Baseline or progressive, a JPEG spends at least one bit per 8 x 8 block and component,
        // at most ~1,540 RGB bytes per input byte; a frame claiming more than 4,096 is truncated
        // or forged (zune-jpeg would decode it as padding, slowly and into a huge buffer).
        RasterFormat::Jpeg => src
            .len()
            .saturating_mul(MAX_JPEG_RATIO)
            .clamp(1 << 20, MAX_RASTER_BYTES),
        RasterFormat::Png => src
            .len()
            .saturating_mul(MAX_RASTER_RATIO)
            .clamp(64 << 20, MAX_RASTER_BYTES),
    };
    if need > limit {
        return Err(src.format_error(format!(
            "image declares {w} x {h} pixels, implausibly large for a file of {} bytes \
             (corrupt, or a decompression bomb)",
            src.len()
        )));
    }
    Ok(limit.max(need))
}

/// `MPP = 0.4990` in an Aperio ImageDescription (`|`-separated `key = value` fields).
fn aperio_mpp(desc: &str) -> Option<(f64, f64)> {
    desc.split('|').find_map(|field| {
        let (k, v) = field.split_once('=')?;
        if k.trim() != "MPP" {
            return None;
        }
        let m: f64 = v.trim().parse().ok()?;
        (m.is_finite() && m > 0.0).then_some((m, m))
    })
}

/// `PhysicalSizeX="0.25"` (and Y) of the first `<Pixels>` element of an OME-XML description.
fn ome_mpp(desc: &str) -> Option<(f64, f64)> {
    let pixels = &desc[desc.find("<Pixels")?..];
    let pixels = &pixels[..pixels.find('>').unwrap_or(pixels.len())];
    let attr = |name: &str| -> Option<f64> {
        let key = format!("{name}=\"");
        let start = pixels.find(&key)? + key.len();
        let end = start + pixels[start..].find('"')?;
        let v: f64 = pixels[start..end].trim().parse().ok()?;
        let unit_key = format!("{name}Unit=\"");
        let scale = match pixels.find(&unit_key) {
            None => 1.0,
            Some(i) => {
                let s = i + unit_key.len();
                let e = s + pixels[s..].find('"')?;
                match &pixels[s..e] {
                    "µm" | "um" | "micron" => 1.0,
                    "nm" => 1e-3,
                    "mm" => 1e3,
                    "cm" => 1e4,
                    _ => return None,
                }
            }
        };
        let m = v * scale;
        (m.is_finite() && m > 0.0).then_some(m)
    };
    Some((attr("PhysicalSizeX")?, attr("PhysicalSizeY")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aperio_description_gives_mpp() {
        let d = "Aperio Image Library v11.2.1\n46000x32914 (240x240) JPEG/RGB Q=30|AppMag = 20|MPP = 0.4990|Left = 25.0";
        assert_eq!(aperio_mpp(d), Some((0.499, 0.499)));
        assert_eq!(aperio_mpp("Aperio|MPP = nan"), None);
        assert_eq!(aperio_mpp("Aperio|AppMag = 20"), None);
    }

    #[test]
    fn ome_description_gives_mpp() {
        let d = r#"<OME><Image><Pixels DimensionOrder="XYCZT" PhysicalSizeX="0.25" PhysicalSizeY="0.5" PhysicalSizeYUnit="µm" SizeX="10"></Pixels></Image></OME>"#;
        assert_eq!(ome_mpp(d), Some((0.25, 0.5)));
        let d = r#"<OME><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" PhysicalSizeY="250" PhysicalSizeYUnit="nm"></Pixels></OME>"#;
        assert_eq!(ome_mpp(d), Some((0.25, 0.25)));
        assert_eq!(ome_mpp("<OME><Pixels SizeX=\"3\"></Pixels></OME>"), None);
    }
}
