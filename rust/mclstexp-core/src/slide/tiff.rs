//! A small, defensive TIFF / BigTIFF structure parser.
//!
//! It reads the header and the IFD chain (plus `SubIFDs` of the first IFD, where OME-TIFF keeps its
//! pyramid), and turns each IFD into a [`TiffImage`]: geometry, tile or strip index and the
//! decoding parameters. Everything a header declares is bounded before it is used: tag arrays and
//! tile offsets must lie inside the file, IFD chains may not loop, tile sizes are capped, so a
//! corrupt or hostile file yields [`Error::SlideFormat`] quickly and never a huge allocation.

use std::collections::{HashMap, HashSet};

use super::source::FileSource;
use crate::error::{Error, Result};

/// At most this many IFDs are followed in a chain (real slides have fewer than 20).
pub const MAX_IFDS: usize = 1024;
/// At most this many entries in one IFD (the TIFF tags in use are about 40).
const MAX_ENTRIES: u64 = 4096;
/// Largest decoded tile or strip accepted, in bytes (RGB).
pub const MAX_TILE_BYTES: u64 = 1 << 30;

/// Tag numbers used here.
pub mod tag {
    pub const NEW_SUBFILE_TYPE: u16 = 254;
    pub const IMAGE_WIDTH: u16 = 256;
    pub const IMAGE_LENGTH: u16 = 257;
    pub const BITS_PER_SAMPLE: u16 = 258;
    pub const COMPRESSION: u16 = 259;
    pub const PHOTOMETRIC: u16 = 262;
    pub const IMAGE_DESCRIPTION: u16 = 270;
    pub const STRIP_OFFSETS: u16 = 273;
    pub const SAMPLES_PER_PIXEL: u16 = 277;
    pub const ROWS_PER_STRIP: u16 = 278;
    pub const STRIP_BYTE_COUNTS: u16 = 279;
    pub const X_RESOLUTION: u16 = 282;
    pub const Y_RESOLUTION: u16 = 283;
    pub const PLANAR_CONFIG: u16 = 284;
    pub const RESOLUTION_UNIT: u16 = 296;
    pub const PREDICTOR: u16 = 317;
    pub const TILE_WIDTH: u16 = 322;
    pub const TILE_LENGTH: u16 = 323;
    pub const TILE_OFFSETS: u16 = 324;
    pub const TILE_BYTE_COUNTS: u16 = 325;
    pub const SUB_IFDS: u16 = 330;
    pub const SAMPLE_FORMAT: u16 = 339;
    pub const JPEG_TABLES: u16 = 347;
}

/// Compression schemes the native decoder handles.
pub mod compression {
    pub const NONE: u16 = 1;
    pub const LZW: u16 = 5;
    pub const OLD_JPEG: u16 = 6;
    pub const JPEG: u16 = 7;
    pub const DEFLATE: u16 = 8;
    pub const DEFLATE_OLD: u16 = 32946;
}

/// Photometric interpretations the native decoder handles.
pub mod photometric {
    pub const MIN_IS_WHITE: u16 = 0;
    pub const MIN_IS_BLACK: u16 = 1;
    pub const RGB: u16 = 2;
    pub const YCBCR: u16 = 6;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

/// One raw IFD entry: type, count and the 4 or 8 inline bytes (value or offset).
#[derive(Clone, Copy, Debug)]
struct Entry {
    typ: u16,
    count: u64,
    inline: [u8; 8],
}

/// One IFD: its entries by tag.
#[derive(Debug)]
pub struct Ifd {
    entries: HashMap<u16, Entry>,
}

/// The parsed file structure: every IFD of the main chain and the `SubIFDs` of the first.
#[derive(Debug)]
pub struct TiffFile {
    endian: Endian,
    big: bool,
    /// IFDs of the main chain, in file order.
    pub chain: Vec<Ifd>,
    /// IFDs listed in the first IFD's `SubIFDs` tag (OME-TIFF pyramids).
    pub sub_ifds: Vec<Ifd>,
}

fn type_size(typ: u16) -> Option<u64> {
    Some(match typ {
        1 | 2 | 6 | 7 => 1,   // BYTE ASCII SBYTE UNDEFINED
        3 | 8 => 2,           // SHORT SSHORT
        4 | 9 | 11 | 13 => 4, // LONG SLONG FLOAT IFD
        5 | 10 | 12 => 8,     // RATIONAL SRATIONAL DOUBLE
        16..=18 => 8,         // LONG8 SLONG8 IFD8
        _ => return None,
    })
}

impl TiffFile {
    /// Whether the first bytes look like a TIFF or BigTIFF header.
    pub fn sniff(head: &[u8]) -> bool {
        matches!(
            head.get(0..4),
            Some([b'I', b'I', 42, 0])
                | Some([b'M', b'M', 0, 42])
                | Some([b'I', b'I', 43, 0])
                | Some([b'M', b'M', 0, 43])
        )
    }

    /// Parses the header and the IFD structure of `src`.
    pub fn parse(src: &FileSource) -> Result<Self> {
        if src.len() < 8 {
            return Err(src.format_error("not a TIFF file (shorter than a TIFF header)"));
        }
        let mut head = [0u8; 16];
        let n = src.len().min(16) as usize;
        src.read_exact_at(0, &mut head[..n], "TIFF header")?;
        let endian = match &head[0..2] {
            b"II" => Endian::Little,
            b"MM" => Endian::Big,
            _ => return Err(src.format_error("not a TIFF file (bad byte-order mark)")),
        };
        let mut tiff = TiffFile {
            endian,
            big: false,
            chain: Vec::new(),
            sub_ifds: Vec::new(),
        };
        let version = tiff.u16(&head[2..4]);
        let first = match version {
            42 => u64::from(tiff.u32(&head[4..8])),
            43 => {
                if n < 16 {
                    return Err(src.format_error("truncated BigTIFF header"));
                }
                if tiff.u16(&head[4..6]) != 8 || tiff.u16(&head[6..8]) != 0 {
                    return Err(src.format_error("BigTIFF header with unsupported offset size"));
                }
                tiff.big = true;
                tiff.u64(&head[8..16])
            }
            _ => return Err(src.format_error(format!("not a TIFF file (version {version})"))),
        };
        let mut seen = HashSet::new();
        let mut next = first;
        while next != 0 {
            if !seen.insert(next) {
                return Err(src.format_error(format!("IFD chain loops back to offset {next}")));
            }
            if tiff.chain.len() >= MAX_IFDS {
                return Err(src.format_error(format!("more than {MAX_IFDS} IFDs")));
            }
            let (ifd, after) = tiff.read_ifd(src, next)?;
            tiff.chain.push(ifd);
            next = after;
        }
        if tiff.chain.is_empty() {
            return Err(src.format_error("TIFF file without any image (no IFD)"));
        }
        // OME-TIFF pyramid levels live in SubIFDs of the first image. A broken sub-IFD only loses
        // that level, it does not make the whole file unreadable.
        if let Some(offsets) = tiff.uints_opt(src, &tiff.chain[0], tag::SUB_IFDS)? {
            for off in offsets.into_iter().take(MAX_IFDS) {
                if seen.insert(off) {
                    if let Ok((ifd, _)) = tiff.read_ifd(src, off) {
                        tiff.sub_ifds.push(ifd);
                    }
                }
            }
        }
        Ok(tiff)
    }

    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        match self.endian {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self.endian {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        match self.endian {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        }
    }

    /// Reads the IFD at `offset`; returns it and the offset of the next one.
    fn read_ifd(&self, src: &FileSource, offset: u64) -> Result<(Ifd, u64)> {
        let (count_size, entry_size, next_size) = if self.big { (8, 20, 8) } else { (2, 12, 4) };
        let mut cbuf = [0u8; 8];
        src.read_exact_at(offset, &mut cbuf[..count_size], "IFD entry count")?;
        let n = if self.big {
            self.u64(&cbuf)
        } else {
            u64::from(self.u16(&cbuf))
        };
        if n == 0 || n > MAX_ENTRIES {
            return Err(src.format_error(format!(
                "IFD at offset {offset} declares {n} entries (corrupt)"
            )));
        }
        let body_len = n * entry_size + next_size;
        let body = src.read_vec(offset + count_size as u64, body_len, "IFD entries")?;
        let mut entries = HashMap::with_capacity(n as usize);
        let es = entry_size as usize;
        for i in 0..n as usize {
            let e = &body[i * es..(i + 1) * es];
            let tag = self.u16(&e[0..2]);
            let typ = self.u16(&e[2..4]);
            let (count, raw) = if self.big {
                (self.u64(&e[4..12]), &e[12..20])
            } else {
                (u64::from(self.u32(&e[4..8])), &e[8..12])
            };
            let mut inline = [0u8; 8];
            inline[..raw.len()].copy_from_slice(raw);
            entries.entry(tag).or_insert(Entry { typ, count, inline });
        }
        let tail = &body[n as usize * es..];
        let next = if self.big {
            self.u64(tail)
        } else {
            u64::from(self.u32(tail))
        };
        Ok((Ifd { entries }, next))
    }

    /// The raw bytes of an entry's value (inline or at its offset), bounded by the file size.
    fn value_bytes(&self, src: &FileSource, e: &Entry) -> Result<Vec<u8>> {
        let size = type_size(e.typ)
            .ok_or_else(|| src.format_error(format!("unknown TIFF field type {}", e.typ)))?;
        let total = e
            .count
            .checked_mul(size)
            .ok_or_else(|| src.format_error("TIFF tag value size overflows"))?;
        let inline_cap = if self.big { 8 } else { 4 };
        if total <= inline_cap {
            return Ok(e.inline[..total as usize].to_vec());
        }
        let off = if self.big {
            self.u64(&e.inline)
        } else {
            u64::from(self.u32(&e.inline))
        };
        src.read_vec(off, total, "TIFF tag value")
    }

    /// An unsigned integer array tag, or `None` when absent.
    pub fn uints_opt(&self, src: &FileSource, ifd: &Ifd, t: u16) -> Result<Option<Vec<u64>>> {
        let Some(e) = ifd.entries.get(&t) else {
            return Ok(None);
        };
        let bytes = self.value_bytes(src, e)?;
        let v: Vec<u64> = match e.typ {
            1 | 7 => bytes.iter().map(|&b| u64::from(b)).collect(),
            3 => bytes
                .chunks_exact(2)
                .map(|c| u64::from(self.u16(c)))
                .collect(),
            4 | 13 => bytes
                .chunks_exact(4)
                .map(|c| u64::from(self.u32(c)))
                .collect(),
            16 | 18 => bytes.chunks_exact(8).map(|c| self.u64(c)).collect(),
            typ => {
                return Err(src.format_error(format!(
                    "TIFF tag {t} has type {typ}, expected an unsigned integer"
                )))
            }
        };
        Ok(Some(v))
    }

    /// The first value of an unsigned integer tag, or `None` when absent or empty.
    pub fn uint_opt(&self, src: &FileSource, ifd: &Ifd, t: u16) -> Result<Option<u64>> {
        Ok(self
            .uints_opt(src, ifd, t)?
            .and_then(|v| v.first().copied()))
    }

    /// A rational tag as `f64`, or `None` when absent or invalid.
    fn rational_opt(&self, src: &FileSource, ifd: &Ifd, t: u16) -> Result<Option<f64>> {
        let Some(e) = ifd.entries.get(&t) else {
            return Ok(None);
        };
        if e.typ != 5 || e.count < 1 {
            return Ok(None);
        }
        let b = self.value_bytes(src, &Entry { count: 1, ..*e })?;
        let num = f64::from(self.u32(&b[0..4]));
        let den = f64::from(self.u32(&b[4..8]));
        Ok((den > 0.0 && num > 0.0).then(|| num / den))
    }

    /// Raw bytes of a BYTE/UNDEFINED/ASCII tag, or `None` when absent.
    fn bytes_opt(&self, src: &FileSource, ifd: &Ifd, t: u16) -> Result<Option<Vec<u8>>> {
        match ifd.entries.get(&t) {
            Some(e) if matches!(e.typ, 1 | 2 | 7) => Ok(Some(self.value_bytes(src, e)?)),
            Some(_) => Err(src.format_error(format!("TIFF tag {t} has an unexpected type"))),
            None => Ok(None),
        }
    }
}

/// Resolution metadata of an image: pixels per unit along x and y and the unit (2 inch, 3 cm).
#[derive(Clone, Copy, Debug)]
pub struct Resolution {
    pub x: f64,
    pub y: f64,
    pub unit: u16,
}

/// One image (IFD) ready for tile reads. Strips are treated as tiles `width x rows_per_strip`.
#[derive(Debug, Clone)]
pub struct TiffImage {
    pub width: u64,
    pub height: u64,
    pub tile_w: u64,
    pub tile_h: u64,
    pub tiled: bool,
    pub tiles_across: u64,
    pub tiles_down: u64,
    pub offsets: Vec<u64>,
    pub counts: Vec<u64>,
    pub compression: u16,
    pub photometric: u16,
    pub samples: u16,
    pub predictor: u16,
    pub jpeg_tables: Option<Vec<u8>>,
    pub description: Option<String>,
    pub subfile_type: u64,
    pub resolution: Option<Resolution>,
}

fn unsupported(src: &FileSource, what: String) -> Error {
    src.format_error(format!(
        "unsupported: {what} (the native reader cannot decode it; try backend='openslide')"
    ))
}

impl TiffImage {
    /// Builds an image from an IFD, validating everything against the file.
    pub fn from_ifd(tiff: &TiffFile, src: &FileSource, ifd: &Ifd) -> Result<Self> {
        let req = |t: u16, name: &str| -> Result<u64> {
            tiff.uint_opt(src, ifd, t)?
                .ok_or_else(|| src.format_error(format!("TIFF image without {name}")))
        };
        let width = req(tag::IMAGE_WIDTH, "ImageWidth")?;
        let height = req(tag::IMAGE_LENGTH, "ImageLength")?;
        if width == 0 || height == 0 || width > u64::from(u32::MAX) || height > u64::from(u32::MAX)
        {
            return Err(src.format_error(format!("invalid image size {width} x {height}")));
        }
        let compression = tiff
            .uint_opt(src, ifd, tag::COMPRESSION)?
            .unwrap_or(1)
            .min(u64::from(u16::MAX)) as u16;
        let samples = tiff
            .uint_opt(src, ifd, tag::SAMPLES_PER_PIXEL)?
            .unwrap_or(1);
        let photometric = match tiff.uint_opt(src, ifd, tag::PHOTOMETRIC)? {
            Some(p) => p.min(u64::from(u16::MAX)) as u16,
            None if samples >= 3 => photometric::RGB,
            None => photometric::MIN_IS_BLACK,
        };
        let bits = tiff
            .uints_opt(src, ifd, tag::BITS_PER_SAMPLE)?
            .unwrap_or_else(|| vec![1]);
        let planar = tiff.uint_opt(src, ifd, tag::PLANAR_CONFIG)?.unwrap_or(1);
        let predictor = tiff.uint_opt(src, ifd, tag::PREDICTOR)?.unwrap_or(1);
        let sample_format = tiff.uint_opt(src, ifd, tag::SAMPLE_FORMAT)?.unwrap_or(1);

        match compression {
            compression::NONE
            | compression::LZW
            | compression::JPEG
            | compression::DEFLATE
            | compression::DEFLATE_OLD => {}
            compression::OLD_JPEG => {
                return Err(unsupported(src, "old-style JPEG compression (6)".into()))
            }
            33003 | 33005 => {
                return Err(unsupported(
                    src,
                    format!("JPEG 2000 compression ({compression})"),
                ))
            }
            c => return Err(unsupported(src, format!("compression {c}"))),
        }
        if !matches!(samples, 1 | 3 | 4) {
            return Err(unsupported(src, format!("{samples} samples per pixel")));
        }
        if bits.iter().any(|&b| b != 8) || sample_format != 1 {
            return Err(unsupported(
                src,
                format!("{bits:?} bits per sample (format {sample_format}); only 8-bit unsigned"),
            ));
        }
        if planar != 1 && samples > 1 {
            return Err(unsupported(src, "planar (separate) sample layout".into()));
        }
        let photometric_ok = match photometric {
            photometric::MIN_IS_WHITE | photometric::MIN_IS_BLACK => samples == 1,
            photometric::RGB => samples >= 3,
            photometric::YCBCR => samples == 3 && compression == compression::JPEG,
            _ => false,
        };
        if !photometric_ok {
            return Err(unsupported(
                src,
                format!("photometric interpretation {photometric} with {samples} samples"),
            ));
        }
        if !matches!(predictor, 1 | 2) || (predictor == 2 && compression == compression::JPEG) {
            return Err(unsupported(src, format!("predictor {predictor}")));
        }

        let tile_w_tag = tiff.uint_opt(src, ifd, tag::TILE_WIDTH)?;
        let tile_h_tag = tiff.uint_opt(src, ifd, tag::TILE_LENGTH)?;
        let tiled = tile_w_tag.is_some() || tile_h_tag.is_some();
        let (tile_w, tile_h, offsets, counts) = if tiled {
            let (Some(tw), Some(th)) = (tile_w_tag, tile_h_tag) else {
                return Err(src.format_error("tiled image with only one of TileWidth/TileLength"));
            };
            let offsets = tiff
                .uints_opt(src, ifd, tag::TILE_OFFSETS)?
                .ok_or_else(|| src.format_error("tiled image without TileOffsets"))?;
            let counts = tiff
                .uints_opt(src, ifd, tag::TILE_BYTE_COUNTS)?
                .ok_or_else(|| src.format_error("tiled image without TileByteCounts"))?;
            (tw, th, offsets, counts)
        } else {
            let rps = tiff
                .uint_opt(src, ifd, tag::ROWS_PER_STRIP)?
                .unwrap_or(height)
                .clamp(1, height);
            let offsets = tiff
                .uints_opt(src, ifd, tag::STRIP_OFFSETS)?
                .ok_or_else(|| src.format_error("image without StripOffsets or TileOffsets"))?;
            let counts = tiff
                .uints_opt(src, ifd, tag::STRIP_BYTE_COUNTS)?
                .ok_or_else(|| src.format_error("stripped image without StripByteCounts"))?;
            (width, rps, offsets, counts)
        };
        if tile_w == 0 || tile_h == 0 || tile_w > 1 << 20 || tile_h > 1 << 20 {
            return Err(src.format_error(format!("invalid tile size {tile_w} x {tile_h}")));
        }
        let tile_bytes = tile_w * tile_h * 3;
        if tile_bytes > MAX_TILE_BYTES {
            return Err(unsupported(
                src,
                format!("tiles/strips of {tile_w} x {tile_h} pixels (over 1 GiB decoded)"),
            ));
        }
        let tiles_across = width.div_ceil(tile_w);
        let tiles_down = height.div_ceil(tile_h);
        let n_tiles = tiles_across * tiles_down;
        if (offsets.len() as u64) < n_tiles || (counts.len() as u64) < n_tiles {
            return Err(src.format_error(format!(
                "image of {width} x {height} in {tile_w} x {tile_h} tiles needs {n_tiles} tile \
                 offsets and byte counts, the file has {} and {}",
                offsets.len(),
                counts.len()
            )));
        }
        let mut offsets = offsets;
        let mut counts = counts;
        offsets.truncate(n_tiles as usize);
        counts.truncate(n_tiles as usize);
        for (i, (&o, &c)) in offsets.iter().zip(&counts).enumerate() {
            if c > 0 {
                src.check_range(o, c, &format!("tile {i}"))?;
            }
        }
        let jpeg_tables = if compression == compression::JPEG {
            tiff.bytes_opt(src, ifd, tag::JPEG_TABLES)?
        } else {
            None
        };
        let description = tiff
            .bytes_opt(src, ifd, tag::IMAGE_DESCRIPTION)
            .ok()
            .flatten()
            .map(|b| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).into_owned()
            });
        let subfile_type = tiff
            .uint_opt(src, ifd, tag::NEW_SUBFILE_TYPE)
            .ok()
            .flatten()
            .unwrap_or(0);
        let resolution = match (
            tiff.rational_opt(src, ifd, tag::X_RESOLUTION)
                .ok()
                .flatten(),
            tiff.rational_opt(src, ifd, tag::Y_RESOLUTION)
                .ok()
                .flatten(),
        ) {
            (Some(x), Some(y)) => Some(Resolution {
                x,
                y,
                unit: tiff
                    .uint_opt(src, ifd, tag::RESOLUTION_UNIT)
                    .ok()
                    .flatten()
                    .unwrap_or(2)
                    .min(u64::from(u16::MAX)) as u16,
            }),
            _ => None,
        };
        Ok(TiffImage {
            width,
            height,
            tile_w,
            tile_h,
            tiled,
            tiles_across,
            tiles_down,
            offsets,
            counts,
            compression,
            photometric,
            samples: samples as u16,
            predictor: predictor as u16,
            jpeg_tables,
            description,
            subfile_type,
            resolution,
        })
    }

    /// Rows of pixel data in tile/strip `row` of the grid (strips at the bottom may be shorter).
    pub fn rows_in(&self, tile_row: u64) -> u64 {
        if self.tiled {
            self.tile_h
        } else {
            self.tile_h.min(self.height - tile_row * self.tile_h)
        }
    }

    /// Microns per pixel (x, y) from the resolution tags, when the unit is physical.
    pub fn mpp_from_resolution(&self) -> Option<(f64, f64)> {
        let r = self.resolution?;
        let um_per_unit = match r.unit {
            2 => 25_400.0,
            3 => 10_000.0,
            _ => return None,
        };
        let (x, y) = (um_per_unit / r.x, um_per_unit / r.y);
        (x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0).then_some((x, y))
    }
}
