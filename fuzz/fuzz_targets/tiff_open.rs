//! Fuzz the TIFF/JPEG/PNG slide reader: open arbitrary bytes as a slide and read every level.
//! Any outcome but a panic, abort, hang or huge allocation is fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mclstexp_core::slide::Slide;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("mclstexp-fuzz-{}.bin", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(slide) = Slide::open_with_cache(&path, 1 << 20) {
        for level in 0..slide.levels().len() {
            let lv = slide.levels()[level];
            let (w, h) = (lv.width.min(512) as usize, lv.height.min(512) as usize);
            let _ = slide.read_region(level, 0, 0, w, h, Some(1));
        }
        let centers = [[8.0, 8.0], [-100.0, 5.0]];
        let spec = mclstexp_core::tiling::PatchSpec { size: 16, level: 0, mpp: None, slide_mpp: None };
        let _ = mclstexp_core::tiling::read_patches(&slide, &centers, &spec, Some(1));
    }
});
