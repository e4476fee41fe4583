//! Opens arbitrary bytes as a slide (TIFF/BigTIFF/SVS, JPEG, PNG) and reads from it the way the
//! tiler does: regions at every level (inside, across the edges, outside), patches at level 0
//! and resampled, and a thumbnail. Any panic, abort, sanitizer report, timeout or allocation over
//! libFuzzer's limit is a bug: malformed input must end in an `Err`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mclstexp_core::slide::Slide;
use mclstexp_core::tiling::{self, PatchSpec};

/// One scratch file per fuzzing process (the reader opens paths, as in production).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("mclstexp-fuzz-{}.bin", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    // A small tile cache, so repeated reads also exercise eviction.
    let Ok(slide) = Slide::open_with_cache(path, 4 << 20) else {
        return;
    };
    let levels = slide.levels().to_vec();
    for (i, lv) in levels.iter().enumerate().take(4) {
        let (w, h) = (lv.width as i64, lv.height as i64);
        for (x, y) in [(0, 0), (-7, -5), (w / 2 - 8, h / 2 - 8), (w - 9, h - 9), (w + 3, h + 3)] {
            let _ = slide.read_region(i, x, y, 17, 17, Some(1));
        }
        let _ = slide.tile_size(i);
        let (rw, rh) = (lv.width.min(512) as usize, lv.height.min(512) as usize);
        let _ = slide.read_region(i, 0, 0, rw, rh, Some(1));
    }
    let (w0, h0) = (levels[0].width as f64, levels[0].height as f64);
    let centers = [[8.0, 8.0], [w0 / 2.0, h0 / 2.0], [w0 - 1.0, h0 - 1.0], [-3.0, h0 + 2.0]];
    let plain = PatchSpec {
        size: 16,
        level: levels.len() - 1,
        mpp: None,
        slide_mpp: None,
    };
    let _ = tiling::read_patches(&slide, &centers, &plain, Some(1));
    let resampled = PatchSpec {
        size: 12,
        level: 0,
        mpp: Some(0.7),
        slide_mpp: Some(0.25),
    };
    let _ = tiling::read_patches(&slide, &centers, &resampled, Some(1));
    // The thumbnail reads a whole level: only where that is small, to keep executions fast.
    let smallest = levels.last().map(|l| l.width * l.height).unwrap_or(u64::MAX);
    if smallest <= 1 << 22 {
        let _ = tiling::thumbnail(&slide, 32, Some(1));
    }
});
