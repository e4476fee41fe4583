//! Tile and image decoders: none, LZW, Deflate, JPEG (with `JPEGTables`, RGB or YCbCr), PNG.
//!
//! Every decoder writes into a buffer whose size comes from the (validated) image geometry, never
//! from the compressed stream, and every failure is a message string the caller turns into
//! [`crate::Error::SlideFormat`].

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::tiff::{compression, photometric, TiffImage};

/// Largest expansion accepted from a compressed tile (bytes out per byte in), on top of a 1 MiB
/// allowance. Deflate cannot exceed ~1032:1; LZW stays below ~1400:1; baseline JPEG below ~770:1.
const MAX_RATIO: u64 = 2048;

/// Runs a third-party decoder, turning a panic inside it into an error (defence in depth: the
/// decoders are fuzzed upstream, but a hostile file must never take the process down).
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("the decoder failed on corrupt data".to_string()))
}

/// Decodes one tile/strip of `image` (`rows` rows of `image.tile_w` pixels) into packed RGB.
pub fn decode_tile(image: &TiffImage, raw: &[u8], rows: u64) -> Result<Vec<u8>, String> {
    guarded(|| decode_tile_inner(image, raw, rows))
}

fn decode_tile_inner(image: &TiffImage, raw: &[u8], rows: u64) -> Result<Vec<u8>, String> {
    let w = image.tile_w as usize;
    let h = rows as usize;
    let spp = usize::from(image.samples);
    let n_samples = w * h * spp;
    // No codec here packs more than ~1,000 output bytes into one input byte (JPEG needs at least
    // 2 bits per 8 x 8 block and component); a tile that claims more is corrupt, and refused
    // before its decoded size is allocated or decoded.
    let bound = (raw.len() as u64).saturating_mul(MAX_RATIO).max(1 << 20);
    if n_samples as u64 > bound && image.compression != compression::NONE {
        return Err(format!(
            "tile of {w} x {h} pixels from {} compressed bytes exceeds the maximum compression \
             ratio (corrupt byte counts?)",
            raw.len()
        ));
    }
    if image.compression == compression::JPEG {
        return decode_jpeg_tile(image, raw, w, h);
    }
    let mut samples = match image.compression {
        compression::NONE => {
            if raw.len() < n_samples {
                return Err(format!(
                    "uncompressed tile has {} bytes, {n_samples} expected (truncated)",
                    raw.len()
                ));
            }
            raw[..n_samples].to_vec()
        }
        compression::LZW => decode_lzw(raw, n_samples)?,
        compression::DEFLATE | compression::DEFLATE_OLD => decode_deflate(raw, n_samples)?,
        c => return Err(format!("unsupported compression {c}")),
    };
    if image.predictor == 2 {
        undo_horizontal_predictor(&mut samples, w, spp);
    }
    Ok(to_rgb(samples, spp, image.photometric))
}

fn decode_lzw(raw: &[u8], n: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; n];
    if raw.len() >= 2 && raw[0] == 0 && raw[1] & 1 != 0 {
        return Err("old-style (LSB-first) LZW is not supported".into());
    }
    let mut dec = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let (mut pos_in, mut pos_out) = (0usize, 0usize);
    while pos_out < n {
        let res = dec.decode_bytes(&raw[pos_in..], &mut out[pos_out..]);
        pos_in += res.consumed_in;
        pos_out += res.consumed_out;
        match res.status {
            Ok(weezl::LzwStatus::Ok) => {
                if res.consumed_in == 0 && res.consumed_out == 0 {
                    break;
                }
            }
            Ok(weezl::LzwStatus::Done) | Ok(weezl::LzwStatus::NoProgress) => break,
            Err(e) => return Err(format!("corrupt LZW data: {e}")),
        }
    }
    if pos_out < n {
        return Err(format!(
            "LZW data decodes to {pos_out} bytes, {n} expected (truncated)"
        ));
    }
    Ok(out)
}

fn decode_deflate(raw: &[u8], n: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; n];
    let mut dec = flate2::Decompress::new(true);
    loop {
        let before_out = dec.total_out();
        let before_in = dec.total_in();
        let pos_in = before_in as usize;
        let pos_out = before_out as usize;
        if pos_out >= n {
            break;
        }
        let status = dec
            .decompress(
                &raw[pos_in.min(raw.len())..],
                &mut out[pos_out..],
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| format!("corrupt Deflate data: {e}"))?;
        if status == flate2::Status::StreamEnd
            || (dec.total_out() == before_out && dec.total_in() == before_in)
        {
            break;
        }
    }
    let got = dec.total_out() as usize;
    if got < n {
        return Err(format!(
            "Deflate data decodes to {got} bytes, {n} expected (truncated)"
        ));
    }
    Ok(out)
}

fn undo_horizontal_predictor(samples: &mut [u8], w: usize, spp: usize) {
    let row_len = w * spp;
    if row_len == 0 {
        return;
    }
    for row in samples.chunks_exact_mut(row_len) {
        for i in spp..row_len {
            row[i] = row[i].wrapping_add(row[i - spp]);
        }
    }
}

/// Packs `spp`-sample pixels as RGB (grey is replicated, a 4th sample is dropped).
fn to_rgb(samples: Vec<u8>, spp: usize, photometric: u16) -> Vec<u8> {
    match spp {
        3 => samples,
        1 => {
            let invert = photometric == photometric::MIN_IS_WHITE;
            let mut out = Vec::with_capacity(samples.len() * 3);
            for &v in &samples {
                let v = if invert { 255 - v } else { v };
                out.extend_from_slice(&[v, v, v]);
            }
            out
        }
        _ => {
            let mut out = Vec::with_capacity(samples.len() / spp * 3);
            for px in samples.chunks_exact(spp) {
                out.extend_from_slice(&px[..3]);
            }
            out
        }
    }
}

/// Joins an abbreviated JPEG stream with the `JPEGTables` stream: tables without their EOI,
/// then the tile without its SOI.
fn merge_tables(tables: Option<&[u8]>, data: &[u8]) -> Option<Vec<u8>> {
    let t = tables?;
    if t.len() < 4 || t[..2] != [0xFF, 0xD8] || data.len() < 2 || data[..2] != [0xFF, 0xD8] {
        return None;
    }
    let t_end = if t[t.len() - 2..] == [0xFF, 0xD9] {
        t.len() - 2
    } else {
        t.len()
    };
    let mut merged = Vec::with_capacity(t_end + data.len());
    merged.extend_from_slice(&t[..t_end]);
    merged.extend_from_slice(&data[2..]);
    Some(merged)
}

fn decode_jpeg_tile(image: &TiffImage, raw: &[u8], w: usize, h: usize) -> Result<Vec<u8>, String> {
    let merged = merge_tables(image.jpeg_tables.as_deref(), raw);
    let stream = merged.as_deref().unwrap_or(raw);
    // TIFF photometric RGB means the JPEG's components are R, G, B (no colour transform), which is
    // how Aperio writes most SVS files; YCbCr means the usual transform.
    let raw_rgb = image.photometric == photometric::RGB;
    // The frame must be the tile (or strip), at most padded to whole 16-px MCUs: a header that
    // claims more is corrupt, and is refused before anything of its claimed size is allocated.
    let max_w = image.tile_w.saturating_add(15) / 16 * 16;
    let max_h = image.tile_h.saturating_add(15) / 16 * 16;
    let (pixels, jw, jh) = decode_jpeg(
        stream,
        raw_rgb,
        usize::try_from(max_w).unwrap_or(usize::MAX),
        usize::try_from(max_h).unwrap_or(usize::MAX),
    )?;
    if jw < w || jh < h {
        return Err(format!(
            "JPEG tile is {jw} x {jh} pixels, the image declares {w} x {h}"
        ));
    }
    if jw == w && jh == h {
        return Ok(pixels);
    }
    let mut out = Vec::with_capacity(w * h * 3);
    for row in pixels.chunks_exact(jw * 3).take(h) {
        out.extend_from_slice(&row[..w * 3]);
    }
    Ok(out)
}

/// Checks that a JPEG stream is whole: walks its markers from SOI, skipping each segment by its
/// length and each scan by its entropy-coded data, and requires the EOI marker. A stream cut
/// anywhere (even inside the last MCU row, where the decoder would pad silently) ends before it.
/// Extraneous bytes between segments are skipped, as libjpeg does.
fn check_complete(stream: &[u8]) -> Result<(), String> {
    let truncated = || {
        format!(
            "truncated JPEG data: the stream ends after {} bytes, before its end-of-image marker",
            stream.len()
        )
    };
    if !stream.starts_with(&[0xFF, 0xD8]) {
        return Err("corrupt JPEG data: no start-of-image marker".into());
    }
    let mut i = 2;
    loop {
        // The next marker: 0xFF (any fill bytes) then a code other than 0x00 and 0xFF.
        let at = next_marker(stream, i).ok_or_else(truncated)?;
        let code = stream[at + 1];
        i = at + 2;
        match code {
            0xD9 => return Ok(()),
            0xD0..=0xD7 | 0x01 => {} // RSTn and TEM carry no segment
            _ => {
                let len = stream
                    .get(i..i + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or_else(truncated)?;
                if len < 2 {
                    return Err(format!(
                        "corrupt JPEG data: marker 0xFF{code:02X} has length {len}"
                    ));
                }
                i += len;
                if i > stream.len() {
                    return Err(truncated());
                }
                if code == 0xDA {
                    // The entropy-coded data of the scan: up to the next marker that is not a
                    // stuffed 0xFF00 or a restart marker.
                    loop {
                        let at = next_marker(stream, i).ok_or_else(truncated)?;
                        if (0xD0..=0xD7).contains(&stream[at + 1]) {
                            i = at + 2;
                        } else {
                            i = at;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The position of the next marker at or after `from`: a 0xFF (after any fill 0xFF bytes)
/// followed by a byte other than 0x00 (a stuffed data byte) and 0xFF.
fn next_marker(stream: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i += stream.get(i..)?.iter().position(|&b| b == 0xFF)?;
        match *stream.get(i + 1)? {
            0x00 => i += 2,
            0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

/// Decodes a JPEG stream to packed RGB; returns `(pixels, width, height)`.
///
/// `raw_rgb`: the three components are already R, G, B (no YCbCr transform), unless the stream
/// itself says otherwise. A frame wider than `max_w` or taller than `max_h` is an error, raised
/// from the header before decoding. A truncated stream (see [`check_complete`]) or corrupt
/// entropy-coded data is an error too: the decoder runs in strict mode, where it would otherwise
/// fill what it cannot decode with grey.
pub fn decode_jpeg(
    stream: &[u8],
    raw_rgb: bool,
    max_w: usize,
    max_h: usize,
) -> Result<(Vec<u8>, usize, usize), String> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(max_w)
        .set_max_height(max_h);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(stream), options);
    dec.decode_headers()
        .map_err(|e| format!("corrupt JPEG data: {e:?}"))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| "corrupt JPEG data: no frame header".to_string())?;
    check_complete(stream)?;
    // Headers are parsed leniently (as libjpeg does); the pixel data is decoded strictly.
    let options = options.set_strict_mode(true);
    dec.set_options(options);
    let input = dec.input_colorspace().unwrap_or(ColorSpace::YCbCr);
    let grey = input == ColorSpace::Luma;
    if grey {
        dec.set_options(options.jpeg_set_out_colorspace(ColorSpace::Luma));
    } else if raw_rgb && input == ColorSpace::YCbCr {
        // Same in and out colour space: zune-jpeg copies the components without conversion.
        dec.set_options(options.jpeg_set_out_colorspace(ColorSpace::YCbCr));
    } else if !matches!(input, ColorSpace::YCbCr | ColorSpace::RGB) {
        return Err(format!("unsupported JPEG colour space {input:?}"));
    }
    let size = dec
        .output_buffer_size()
        .ok_or_else(|| "corrupt JPEG data: no size".to_string())?;
    let expected = w * h * if grey { 1 } else { 3 };
    if size != expected {
        return Err(format!("unexpected JPEG output size {size} for {w} x {h}"));
    }
    let mut out = vec![0u8; size];
    dec.decode_into(&mut out)
        .map_err(|e| format!("corrupt JPEG data: {e:?}"))?;
    if grey {
        let mut rgb = Vec::with_capacity(w * h * 3);
        for &v in &out {
            rgb.extend_from_slice(&[v, v, v]);
        }
        return Ok((rgb, w, h));
    }
    Ok((out, w, h))
}

/// Reads a JPEG's dimensions without decoding it.
pub fn jpeg_dimensions(stream: &[u8]) -> Result<(usize, usize), String> {
    let options = DecoderOptions::default()
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(stream), options);
    dec.decode_headers()
        .map_err(|e| format!("corrupt JPEG data: {e:?}"))?;
    dec.dimensions()
        .ok_or_else(|| "corrupt JPEG data: no frame header".to_string())
}

/// Reads a PNG's dimensions without decoding it.
pub fn png_dimensions(stream: &[u8]) -> Result<(usize, usize), String> {
    let dec = png::Decoder::new(std::io::Cursor::new(stream));
    let reader = dec
        .read_info()
        .map_err(|e| format!("corrupt PNG data: {e}"))?;
    let info = reader.info();
    Ok((info.width as usize, info.height as usize))
}

/// Decodes a PNG stream to packed 8-bit RGB; returns `(pixels, width, height)`.
pub fn decode_png(stream: &[u8], max_bytes: u64) -> Result<(Vec<u8>, usize, usize), String> {
    let mut dec = png::Decoder::new_with_limits(
        std::io::Cursor::new(stream),
        png::Limits {
            bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
        },
    );
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| format!("corrupt PNG data: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "PNG too large".to_string())?;
    if size as u64 > max_bytes {
        return Err("PNG too large".into());
    }
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("corrupt PNG data: {e}"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let spp = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("indexed PNG after expansion".into()),
    };
    buf.truncate(info.buffer_size());
    let mut out = Vec::with_capacity(w * h * 3);
    for row in buf.chunks_exact(info.line_size).take(h) {
        for px in row[..w * spp].chunks_exact(spp) {
            match spp {
                1 | 2 => out.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => out.extend_from_slice(&px[..3]),
            }
        }
    }
    if out.len() != w * h * 3 {
        return Err("truncated PNG data".into());
    }
    Ok((out, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_is_undone_per_row() {
        let mut s = vec![1, 2, 3, 1, 1, 1, 10, 20, 30, 0, 0, 1];
        undo_horizontal_predictor(&mut s, 2, 3);
        assert_eq!(s, vec![1, 2, 3, 2, 3, 4, 10, 20, 30, 10, 20, 31]);
    }

    #[test]
    fn deflate_round_trip_and_truncation() {
        use std::io::Write;
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap_or_default();
        let z = enc.finish().unwrap_or_default();
        assert_eq!(decode_deflate(&z, data.len()).ok(), Some(data.clone()));
        assert!(decode_deflate(&z[..z.len() / 2], data.len()).is_err());
        assert!(decode_deflate(b"garbage!", 10).is_err());
    }

    #[test]
    fn lzw_round_trip_and_garbage() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        let mut enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let z = enc.encode(&data).unwrap_or_default();
        assert_eq!(decode_lzw(&z, data.len()).ok(), Some(data.clone()));
        assert!(decode_lzw(&z[..z.len() / 3], data.len()).is_err());
    }

    /// The marker structure of a JPEG (not decodable, but whole): SOI, an APP0 segment holding
    /// bytes that look like markers, a scan whose data has a stuffed 0xFF00, fill bytes and a
    /// restart marker, extraneous bytes, then EOI.
    fn skeleton() -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xDA];
        s.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]); // SOS header
        s.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xFF, 0xD0, 0x56, 0x78]);
        s.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x02, 0xAA, 0xBB, 0xFF, 0xD9]);
        s
    }

    #[test]
    fn a_whole_stream_is_complete_and_every_prefix_is_truncated() {
        let s = skeleton();
        assert_eq!(check_complete(&s), Ok(()));
        for cut in 0..s.len() {
            let err = check_complete(&s[..cut]).err().unwrap_or_default();
            assert!(
                err.contains("truncated") || (cut < 2 && err.contains("start-of-image")),
                "cut at {cut}: {err:?}"
            );
        }
        // A segment length below 2 is corrupt, not an endless loop.
        assert!(check_complete(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0xFF, 0xD9]).is_err());
    }

    #[test]
    fn garbage_jpeg_is_an_error() {
        assert!(decode_jpeg(b"\xFF\xD8\xFF\xC0garbage", false, 1 << 16, 1 << 16).is_err());
        assert!(decode_jpeg(b"", false, 1 << 16, 1 << 16).is_err());
    }
}
