//! Regions and patches from the tiled reader equal the same boxes cut from the known image
//! (white outside), for tiled and stripped layouts, uncompressed and Deflate, many random boxes.

use std::io::Write;

use mclstexp_core::slide::Slide;
use mclstexp_core::tiling::{read_patches, PatchSpec};

const W: usize = 53;
const H: usize = 41;

fn pixel(x: usize, y: usize) -> [u8; 3] {
    [
        (x * 7 + y * 3) as u8,
        (x * 13 + 5 * y + 1) as u8,
        (x ^ (y * 11)) as u8,
    ]
}

/// A little-endian classic TIFF: blocks of `bw x bh` (tiles, or strips when `tiled` is false).
fn write_tiff(tiled: bool, bw: usize, bh: usize, deflate: bool) -> Vec<u8> {
    let across = if tiled { W.div_ceil(bw) } else { 1 };
    let down = H.div_ceil(bh);
    let mut blocks = Vec::new();
    for ty in 0..down {
        for tx in 0..across {
            let rows = if tiled { bh } else { bh.min(H - ty * bh) };
            let mut raw = Vec::new();
            for r in 0..rows {
                for c in 0..bw {
                    let (x, y) = (tx * bw + c, ty * bh + r);
                    raw.extend_from_slice(&if x < W && y < H {
                        pixel(x, y)
                    } else {
                        [0, 0, 0]
                    });
                }
            }
            if deflate {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&raw).unwrap_or_default();
                raw = e.finish().unwrap_or_default();
            }
            blocks.push(raw);
        }
    }
    let n = blocks.len();
    let mut data = b"II*\0".to_vec();
    data.extend_from_slice(&0u32.to_le_bytes()); // IFD offset, patched below
    let mut offsets = Vec::new();
    for b in &blocks {
        offsets.push(data.len() as u32);
        data.extend_from_slice(b);
    }
    let off_array = data.len() as u32;
    for o in &offsets {
        data.extend_from_slice(&o.to_le_bytes());
    }
    let cnt_array = data.len() as u32;
    for b in &blocks {
        data.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }
    let bps = data.len() as u32;
    for _ in 0..3 {
        data.extend_from_slice(&8u16.to_le_bytes());
    }
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let ifd = data.len() as u32;
    data[4..8].copy_from_slice(&ifd.to_le_bytes());
    let (off_tag, cnt_tag) = if tiled { (324u16, 325u16) } else { (273, 279) };
    let mut entries: Vec<(u16, u16, u32, u32)> = vec![
        (256, 4, 1, W as u32),
        (257, 4, 1, H as u32),
        (258, 3, 3, bps),
        (259, 3, 1, if deflate { 8 } else { 1 }),
        (262, 3, 1, 2),
        (277, 3, 1, 3),
        (off_tag, 4, n as u32, off_array),
        (cnt_tag, 4, n as u32, cnt_array),
    ];
    if tiled {
        entries.push((322, 3, 1, bw as u32));
        entries.push((323, 3, 1, bh as u32));
    } else {
        entries.push((278, 4, 1, bh as u32));
    }
    entries.sort();
    data.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, count, value) in entries {
        data.extend_from_slice(&tag.to_le_bytes());
        data.extend_from_slice(&typ.to_le_bytes());
        data.extend_from_slice(&count.to_le_bytes());
        if n == 1 && (tag == off_tag || tag == cnt_tag) {
            // A single offset/count is stored inline.
            let v = if tag == off_tag {
                offsets[0]
            } else {
                blocks[0].len() as u32
            };
            data.extend_from_slice(&v.to_le_bytes());
        } else {
            data.extend_from_slice(&value.to_le_bytes());
        }
    }
    data.extend_from_slice(&0u32.to_le_bytes());
    data
}

fn oracle(x: i64, y: i64, w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 3);
    for r in 0..h as i64 {
        for c in 0..w as i64 {
            let (px, py) = (x + c, y + r);
            if px >= 0 && py >= 0 && (px as usize) < W && (py as usize) < H {
                out.extend_from_slice(&pixel(px as usize, py as usize));
            } else {
                out.extend_from_slice(&[255, 255, 255]);
            }
        }
    }
    out
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn regions_and_patches_match_the_oracle() {
    let dir = std::env::temp_dir().join(format!("mclstexp-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_default();
    let layouts = [
        (true, 16, 16, false),
        (true, 16, 32, true),
        (false, W, 5, false),
        (false, W, 7, true),
        (false, W, H, true),
    ];
    for (i, &(tiled, bw, bh, deflate)) in layouts.iter().enumerate() {
        let path = dir.join(format!("t{i}.tif"));
        std::fs::write(&path, write_tiff(tiled, bw, bh, deflate)).unwrap_or_default();
        let slide = match Slide::open_with_cache(&path, if i % 2 == 0 { 1 << 20 } else { 0 }) {
            Ok(s) => s,
            Err(e) => panic!("layout {i}: {e}"),
        };
        assert_eq!(
            (slide.levels()[0].width, slide.levels()[0].height),
            (W as u64, H as u64)
        );
        let mut rng = Lcg(i as u64 + 1);
        for _ in 0..200 {
            let x = rng.next(W as u64 + 20) as i64 - 10;
            let y = rng.next(H as u64 + 20) as i64 - 10;
            let w = rng.next(40) as usize + 1;
            let h = rng.next(40) as usize + 1;
            let got = slide
                .read_region(0, x, y, w, h, Some(2))
                .unwrap_or_default();
            assert_eq!(got, oracle(x, y, w, h), "layout {i}: box {x},{y} {w}x{h}");
        }
        let centers: Vec<[f64; 2]> = (0..50)
            .map(|_| {
                [
                    rng.next(W as u64 + 10) as f64 - 5.0 + 0.7,
                    rng.next(H as u64) as f64 + 0.2,
                ]
            })
            .collect();
        let spec = PatchSpec {
            size: 9,
            level: 0,
            mpp: None,
            slide_mpp: None,
        };
        let (patches, inside) = read_patches(&slide, &centers, &spec, Some(2)).unwrap_or_default();
        for (k, c) in centers.iter().enumerate() {
            let (left, top) = (c[0].floor() as i64 - 4, c[1].floor() as i64 - 4);
            assert_eq!(
                &patches[k * 243..(k + 1) * 243],
                oracle(left, top, 9, 9).as_slice()
            );
            let ins = left >= 0 && top >= 0 && left + 9 <= W as i64 && top + 9 <= H as i64;
            assert_eq!(inside[k], ins);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
