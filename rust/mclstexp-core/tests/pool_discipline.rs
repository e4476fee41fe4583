//! Every parallel loop of the core runs on the process-local pool (`pool::install`), never on
//! rayon's global pool: the global pool does not survive `fork()`, so one loop on it hangs a
//! forked child (issue #18, item 1: the retrieval input check did).
//!
//! A source scan, not a type check: every rayon entry point (`par_iter`, `par_chunks_mut`,
//! `into_par_iter`, `rayon::join`, ...) in `src/` must sit lexically inside the parentheses of an
//! `install(...)` call, or inside a function whose every call in its file does. Comments and
//! string literals are ignored.

use std::path::{Path, PathBuf};

/// Identifiers that start parallel work on whatever pool the current thread belongs to.
const PARALLEL: &[&str] = &[
    "into_par_iter",
    "par_bridge",
    "par_chunks",
    "par_chunks_exact",
    "par_chunks_exact_mut",
    "par_chunks_mut",
    "par_drain",
    "par_extend",
    "par_iter",
    "par_iter_mut",
    "par_sort",
    "par_sort_by",
    "par_sort_by_key",
    "par_sort_unstable",
    "par_sort_unstable_by",
    "par_split",
    "par_windows",
    "rayon::broadcast",
    "rayon::in_place_scope",
    "rayon::join",
    "rayon::scope",
    "rayon::spawn",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src` with comments and string/char literals blanked out (same length, same line breaks).
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('x', '\n', '\'', '\u{..}'); lifetimes ('a) are left alone.
            let mut j = i + if b[i + 1] == b'\\' { 3 } else { 2 };
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Index of the bracket closing the one opened at `open` (`(`/`)` or `{`/`}`).
fn closing(code: &[u8], open: usize) -> usize {
    let (o, c) = (code[open], if code[open] == b'(' { b')' } else { b'}' });
    let mut depth = 0usize;
    for (i, &ch) in code.iter().enumerate().skip(open) {
        if ch == o {
            depth += 1;
        } else if ch == c {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    code.len()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Start positions of the whole-word occurrences of `word` in `code`.
fn find_word(code: &[u8], word: &str) -> Vec<usize> {
    let w = word.as_bytes();
    (0..code.len().saturating_sub(w.len() - 1))
        .filter(|&i| {
            code[i..].starts_with(w)
                && (i == 0 || !is_ident(code[i - 1]))
                && code.get(i + w.len()).is_none_or(|&c| !is_ident(c))
        })
        .collect()
}

/// The argument spans `(open, close)` of every `install(...)` call.
fn install_spans(code: &[u8]) -> Vec<(usize, usize)> {
    find_word(code, "install")
        .into_iter()
        .filter_map(|i| {
            let open = i + "install".len();
            (code.get(open) == Some(&b'(')).then(|| (open, closing(code, open)))
        })
        .collect()
}

/// `(name, body start, body end)` of every `fn` with a body.
fn functions(code: &[u8]) -> Vec<(String, usize, usize)> {
    find_word(code, "fn")
        .into_iter()
        .filter_map(|i| {
            let name: String = code[i + 2..]
                .iter()
                .skip_while(|c| c.is_ascii_whitespace())
                .take_while(|&&c| is_ident(c))
                .map(|&c| c as char)
                .collect();
            let rest = &code[i..];
            let body = rest.iter().position(|&c| c == b'{' || c == b';')?;
            (rest[body] == b'{').then(|| (name, i + body, closing(code, i + body)))
        })
        .collect()
}

fn line_of(code: &[u8], pos: usize) -> usize {
    code[..pos].iter().filter(|&&c| c == b'\n').count() + 1
}

/// The parallel call sites of one file that are neither inside an `install(...)` nor inside a
/// function only ever called inside one.
fn stray_sites(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![format!("{}: unreadable", path.display())];
    };
    let code = code_only(&text);
    let spans = install_spans(&code);
    let inside = |pos: usize| spans.iter().any(|&(a, b)| a < pos && pos < b);
    let fns = functions(&code);
    // A function whose every call (by name, in this file, outside its own body) is inside an
    // `install(...)`: its loops run on the pool too.
    let pooled = |pos: usize| {
        fns.iter()
            .filter(|(_, a, b)| *a < pos && pos < *b)
            .any(|(name, a, b)| {
                let calls: Vec<usize> = find_word(&code, name)
                    .into_iter()
                    .filter(|&c| code.get(c + name.len()) == Some(&b'('))
                    .filter(|&c| !(*a..=*b).contains(&c))
                    .filter(|&c| !code[..c].ends_with(b"fn "))
                    .collect();
                !calls.is_empty() && calls.iter().all(|&c| inside(c))
            })
    };
    let mut stray = Vec::new();
    for word in PARALLEL {
        for pos in find_word(&code, word) {
            if !inside(pos) && !pooled(pos) {
                stray.push(format!(
                    "{}:{}: `{word}` outside pool::install",
                    path.display(),
                    line_of(&code, pos)
                ));
            }
        }
    }
    stray
}

#[test]
fn every_parallel_loop_runs_inside_pool_install() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "no sources found under {}", src.display());
    let stray: Vec<String> = files.iter().flat_map(|f| stray_sites(f)).collect();
    assert!(stray.is_empty(), "{}", stray.join("\n"));
}

#[test]
fn the_scan_catches_a_loop_outside_the_pool() {
    let dir = std::env::temp_dir().join(format!("mclstexp-pool-scan-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("bad.rs");
    let bad = "fn ok(v: &[f32]) -> f32 { pool::install(None, || v.par_iter().sum()) }\n\
               fn helper(v: &[f32]) -> f32 { v.par_iter().sum() }\n\
               fn inside(v: &[f32]) -> f32 { pool::install(None, || helper(v)) }\n\
               fn check(v: &[f32]) -> bool { v.par_iter().any(|x| x.is_nan()) }\n\
               fn caller(v: &[f32]) -> bool { check(v) } // \"par_iter()\" in a comment\n";
    let written = std::fs::write(&file, bad).is_ok();
    let stray = stray_sites(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(written);
    assert_eq!(stray.len(), 1, "{stray:?}");
    assert!(stray[0].contains(":4:"), "{stray:?}");
}
