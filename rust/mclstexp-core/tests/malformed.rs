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
