//! Every file of the malformed-slide corpus (`tests/data/malformed/`) must be rejected with
//! `Error::SlideFormat`, at open or when reading all of its pixels, without panicking.

use std::path::PathBuf;

use mclstexp_core::slide::Slide;
use mclstexp_core::Error;

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/malformed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn open_and_read_everything(path: &PathBuf) -> Result<(), Error> {
    let slide = Slide::open(path)?;
    for level in 0..slide.levels().len() {
        let lv = slide.levels()[level];
        let (w, h) = (lv.width.min(4096) as usize, lv.height.min(4096) as usize);
        slide.read_region(level, 0, 0, w, h, Some(1))?;
    }
    Ok(())
}

#[test]
fn malformed_files_are_slide_format_errors() {
    let files = corpus();
    assert!(files.len() >= 15, "corpus missing: {} files", files.len());
    for path in &files {
        let result = std::panic::catch_unwind(|| open_and_read_everything(path));
        match result {
            Ok(Err(Error::SlideFormat { .. })) => {}
            Ok(other) => panic!("{}: expected SlideFormat, got {other:?}", path.display()),
            Err(_) => panic!("{}: the reader panicked", path.display()),
        }
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let err = Slide::open("/no/such/dir/slide.svs").err();
    assert!(matches!(err, Some(Error::Io { .. })));
}

/// Reads a slide the way the tiler (and `fuzz/fuzz_targets/slide_open_read.rs`) does; errors are
/// fine, panics are not.
fn exercise(path: &PathBuf) {
    use mclstexp_core::tiling::{self, PatchSpec};
    let Ok(slide) = Slide::open_with_cache(path, 4 << 20) else {
        return;
    };
    let levels = slide.levels().to_vec();
    for (i, lv) in levels.iter().enumerate().take(4) {
        let (w, h) = (lv.width as i64, lv.height as i64);
        for (x, y) in [
            (0, 0),
            (-7, -5),
            (w / 2 - 8, h / 2 - 8),
            (w - 9, h - 9),
            (w + 3, h + 3),
        ] {
            let _ = slide.read_region(i, x, y, 17, 17, Some(1));
        }
    }
    let (w0, h0) = (levels[0].width as f64, levels[0].height as f64);
    let centers = [[8.0, 8.0], [w0 / 2.0, h0 / 2.0], [w0 - 1.0, h0 - 1.0]];
    for (level, mpp) in [(levels.len() - 1, None), (0, Some(0.7))] {
        let spec = PatchSpec {
            size: 12,
            level,
            mpp,
            slide_mpp: Some(0.25),
        };
        let _ = tiling::read_patches(&slide, &centers, &spec, Some(1));
    }
    if levels
        .last()
        .map(|l| l.width * l.height)
        .unwrap_or(u64::MAX)
        <= 1 << 22
    {
        let _ = tiling::thumbnail(&slide, 32, Some(1));
    }
}

/// A small deterministic PRNG (xorshift64*), so the mutation test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Byte flips, interesting values, truncation and block copies, as a fuzzer's first mutations.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if data.is_empty() {
            break;
        }
        let i = rng.below(data.len());
        match rng.below(6) {
            0 => data[i] ^= 1 << rng.below(8),
            1 => data[i] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE][rng.below(6)],
            2 => {
                let v = (rng.next() as u32).to_le_bytes();
                let end = (i + 4).min(data.len());
                data[i..end].copy_from_slice(&v[..end - i]);
            }
            3 => data.truncate(i.max(8)),
            4 => {
                let (a, n) = (rng.below(data.len()), 1 + rng.below(64));
                let block: Vec<u8> = data[a..(a + n).min(data.len())].to_vec();
                let end = (i + block.len()).min(data.len());
                data[i..end].copy_from_slice(&block[..end - i]);
            }
            _ => data[i] = data[i].wrapping_add(rng.below(16) as u8).wrapping_sub(8),
        }
    }
    data
}

/// Mutations of the malformed corpus. The valid slides of every format are mutated by
/// `tests/test_slide_mutations.py`, which generates them with `fuzz/make_seeds.py` (no binary
/// seeds are tracked).
#[test]
fn mutated_slides_never_panic() {
    let seeds = corpus();
    assert!(seeds.len() >= 15, "corpus missing: {} files", seeds.len());
    let scratch = std::env::temp_dir().join(format!("mclstexp-mutate-{}.bin", std::process::id()));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for seed_path in &seeds {
        let seed = std::fs::read(seed_path).unwrap_or_default();
        for k in 0..60 {
            let data = mutate(&mut rng, &seed);
            std::fs::write(&scratch, &data).unwrap_or_default();
            if std::panic::catch_unwind(|| exercise(&scratch)).is_err() {
                let keep = std::env::temp_dir().join(format!(
                    "mclstexp-panic-{}-{k}.bin",
                    seed_path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("seed")
                ));
                std::fs::write(&keep, &data).unwrap_or_default();
                panic!(
                    "{}: mutation {k} panicked (input saved to {})",
                    seed_path.display(),
                    keep.display()
                );
            }
        }
    }
    let _ = std::fs::remove_file(&scratch);
}
