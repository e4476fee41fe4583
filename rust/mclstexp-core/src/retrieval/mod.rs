//! Exact top-k cosine retrieval.
//!
//! [`ExactIndex`] stores L2-normalised `f32` reference rows, packed once at build time into panels
//! of [`NR`] rows (see [`kernel`]); a search normalises the queries and scans every panel with a
//! register-tiled SIMD micro-kernel ([`MR`] queries x [`NR`] references per tile) fused with a
//! per-query bounded heap: a tile's scores are compared with each query's current k-th best score
//! in registers, and only the few that beat it touch the heap. The full queries x references score
//! matrix is never materialised: extra memory is one normalised copy of the queries plus `k` hits
//! per query and per parallel reference chunk.
//!
//! Parallelism (the project's pool, [`crate::pool::install`]): work is split into blocks of
//! queries; when there are too few blocks to keep every thread busy (few queries, e.g. interactive
//! use), the references are split into chunks as well and the per-chunk top-k are merged.
//!
//! Exactness: results are the top-k by the `f32` scores, best first, ties broken by the lower
//! reference index. Zero vectors have no direction: they are stored (or searched) as all-zero
//! rows, so their cosine with everything is exactly 0 (never NaN).
//!
//! File format of [`ExactIndex::save`] (little-endian), `32 + 4 * n_rows * dim` bytes:
//!
//! | offset | size | content                                              |
//! |--------|------|------------------------------------------------------|
//! | 0      | 8    | magic `b"MCLSTIDX"`                                  |
//! | 8      | 4    | `u32` format version, 1                              |
//! | 12     | 4    | `u32` metric, 0 = cosine                             |
//! | 16     | 8    | `u64` number of rows `n_rows`                        |
//! | 24     | 8    | `u64` dimension `dim`                                |
//! | 32     | ...  | `f32` normalised rows, row-major (`n_rows x dim`)    |
//!
//! The payload reads as a plain array, e.g. `numpy.fromfile(path, "<f4", offset=32)`.

pub mod kernel;
pub mod topk;

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rayon::prelude::*;

pub use kernel::{MR, NR, TILE};
pub use topk::{Hit, TopK};

use crate::error::{Error, Result};
use crate::pool;
use crate::simd::{self, Isa};
use crate::view::Matrix;

/// Query rows per block of work (a multiple of [`MR`]).
const MC: usize = MR * 16;
/// Magic bytes opening a saved index.
pub const MAGIC: &[u8; 8] = b"MCLSTIDX";
/// Current file format version.
pub const FORMAT_VERSION: u32 = 1;
/// Header size of a saved index, in bytes.
pub const HEADER_LEN: usize = 32;

/// The result of a search: `n_queries x k` scores and reference indices, row-major, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbours {
    /// Number of query rows.
    pub n_queries: usize,
    /// Neighbours per query.
    pub k: usize,
    /// Cosine similarities, `n_queries * k`.
    pub scores: Vec<f32>,
    /// Reference rows, `n_queries * k`.
    pub indices: Vec<i64>,
}

/// References added in one call, packed into panels.
#[derive(Clone, Debug)]
struct Segment {
    /// Global index of the first row.
    start: usize,
    /// Number of rows.
    len: usize,
    /// `ceil(len / NR)` panels of `dim * NR` values; the columns past `len` are zero padding.
    panels: Vec<f32>,
}

/// An exact cosine-similarity index over `f32` vectors (see the module docs).
#[derive(Clone, Debug)]
pub struct ExactIndex {
    dim: usize,
    len: usize,
    segments: Vec<Segment>,
    /// The level of the micro-kernel (always one the CPU supports).
    isa: Isa,
}

/// Checks that `rows` has at least one row and `dim` columns; errors name `arg`.
fn check_shape(arg: &'static str, rows: Matrix<'_>, dim: usize) -> Result<()> {
    if rows.rows() == 0 {
        return Err(Error::invalid(arg, "is empty: pass at least one row"));
    }
    if rows.cols() != dim {
        return Err(Error::invalid(
            arg,
            format!(
                "has {} columns, expected {dim} (the dimension of the reference vectors)",
                rows.cols()
            ),
        ));
    }
    Ok(())
}

/// Values per block of the finiteness scan: a block is checked with a branch-free (vectorised)
/// reduction, and only the first bad block is searched for the first bad value.
const FINITE_BLOCK: usize = 4096;

/// Whether every value of `block` is finite (no early exit, so the loop vectorises).
fn all_finite(block: &[f32]) -> bool {
    block.iter().fold(true, |ok, x| ok & x.is_finite())
}

/// Checks that every value of the `dim`-column matrix `data` is finite; the error names the first
/// bad value in row-major order. A parallel scan: call it inside [`pool::install`] (on rayon's
/// global pool it would hang a forked child).
fn check_finite(arg: &'static str, data: &[f32], dim: usize) -> Result<()> {
    let bad_block = data
        .par_chunks(FINITE_BLOCK)
        .position_first(|block| !all_finite(block));
    let first_bad = bad_block.and_then(|b| {
        let start = b * FINITE_BLOCK;
        data[start..]
            .iter()
            .position(|x| !x.is_finite())
            .map(|i| start + i)
    });
    if let Some(pos) = first_bad {
        return Err(Error::invalid(
            arg,
            format!(
                "contains a non-finite value ({}) at row {}, column {}; remove or replace NaN/inf",
                data[pos],
                pos / dim,
                pos % dim
            ),
        ));
    }
    Ok(())
}

/// `1 / ||row||` computed in f64, or 0 for a zero row (which then stays all-zero).
#[inline]
fn inverse_norm(row: &[f32]) -> f64 {
    let sq: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if sq > 0.0 {
        1.0 / sq.sqrt()
    } else {
        0.0
    }
}

/// Writes `rows` (row-major, `dim` columns, at most `NR` rows) into one panel.
fn pack_panel(panel: &mut [f32], rows: &[f32], dim: usize, normalise: bool) {
    for (j, row) in rows.chunks_exact(dim).enumerate() {
        let inv = if normalise { inverse_norm(row) } else { 1.0 };
        for (p, &x) in row.iter().enumerate() {
            panel[p * NR + j] = if normalise {
                ((x as f64) * inv) as f32
            } else {
                x
            };
        }
    }
}

/// Normalises up to `MR` query rows (row-major) into one packed tile.
fn pack_query_tile(tile: &mut [f32], rows: &[f32], dim: usize) {
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        let inv = inverse_norm(row);
        for (p, &x) in row.iter().enumerate() {
            tile[p * MR + i] = ((x as f64) * inv) as f32;
        }
    }
}

impl Segment {
    /// Packs `rows` (row-major, `dim` columns), normalised or as they are, into panels. The
    /// packing is parallel: call it inside [`pool::install`].
    fn pack(start: usize, rows: &[f32], dim: usize, normalise: bool) -> Result<Segment> {
        let len = rows.len() / dim;
        let n_panels = len.div_ceil(NR);
        let size = n_panels
            .checked_mul(NR * dim)
            .ok_or_else(|| Error::invalid("reference", "is too large"))?;
        let mut panels = vec![0.0f32; size];
        panels
            .par_chunks_mut(NR * dim)
            .zip(rows.par_chunks(NR * dim))
            .for_each(|(panel, block)| pack_panel(panel, block, dim, normalise));
        Ok(Segment { start, len, panels })
    }

    /// Row `r` (local) into `out`.
    fn row_into(&self, r: usize, dim: usize, out: &mut [f32]) {
        let panel = &self.panels[(r / NR) * NR * dim..(r / NR + 1) * NR * dim];
        let j = r % NR;
        for (p, o) in out.iter_mut().enumerate() {
            *o = panel[p * NR + j];
        }
    }
}

/// One panel as the scan sees it.
#[derive(Clone, Copy)]
struct PanelRef<'a> {
    data: &'a [f32],
    base: u64,
    valid_mask: u32,
}

/// Scans `panels` for every query of `queries` (whole packed tiles of `MR` rows).
fn scan(isa: Isa, queries: &[f32], dim: usize, panels: &[PanelRef<'_>], k: usize) -> Vec<TopK> {
    let n_rows = queries.len() / dim;
    let mut heaps = vec![TopK::new(k); n_rows];
    let mut tile = [0.0f32; TILE];
    let mut masks = [0u32; MR];
    let mut thresholds = [0.0f32; MR];
    // Panels per chunk: about 1 MiB, so a chunk stays in L2 while every query tile sweeps it;
    // each tile (MR x dim) stays in L1 across the chunk, where the kernel's broadcasts read it.
    // Per query, references are still visited in increasing index order.
    let per_chunk = ((1usize << 20) / (NR * dim * 4)).max(1);
    for chunk in panels.chunks(per_chunk) {
        for (rows, heaps) in queries
            .chunks_exact(MR * dim)
            .zip(heaps.chunks_exact_mut(MR))
        {
            for panel in chunk {
                for (th, h) in thresholds.iter_mut().zip(heaps.iter()) {
                    *th = h.threshold();
                }
                kernel::tile(
                    isa,
                    rows,
                    panel.data,
                    dim,
                    &thresholds,
                    &mut tile,
                    &mut masks,
                );
                for (i, h) in heaps.iter_mut().enumerate() {
                    let mut m = masks[i] & panel.valid_mask;
                    while m != 0 {
                        let j = m.trailing_zeros() as usize;
                        m &= m - 1;
                        h.push(Hit {
                            score: tile[i * NR + j],
                            index: panel.base + j as u64,
                        });
                    }
                }
            }
        }
    }
    heaps
}

/// The search result from the per-task heaps: tasks come query block by query block, each block
/// as `n_rchunks` reference chunks whose heaps are merged; best first per query.
fn merge_blocks(
    results: Vec<Vec<TopK>>,
    n_rchunks: usize,
    n_queries: usize,
    k: usize,
) -> Result<Neighbours> {
    let mut scores = Vec::with_capacity(n_queries * k);
    let mut indices = Vec::with_capacity(n_queries * k);
    let mut results = results.into_iter();
    let mut done = 0;
    while done < n_queries {
        let mut heaps = results.next().unwrap_or_default();
        for _ in 1..n_rchunks {
            if let Some(other) = results.next() {
                for (h, o) in heaps.iter_mut().zip(&other) {
                    h.merge(o);
                }
            }
        }
        for h in heaps.into_iter().take(n_queries - done) {
            for hit in h.into_sorted() {
                scores.push(hit.score);
                indices.push(hit.index as i64);
            }
            done += 1;
        }
        if scores.len() != done * k {
            return Err(Error::Numerical(
                "internal error: a query got fewer than k neighbours".into(),
            ));
        }
    }
    Ok(Neighbours {
        n_queries,
        k,
        scores,
        indices,
    })
}

impl ExactIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid(
                "reference",
                "has 0 columns: vectors need dim >= 1",
            ));
        }
        Ok(ExactIndex {
            dim,
            len: 0,
            segments: Vec::new(),
            isa: simd::isa(),
        })
    }

    /// An index over the `reference` rows, normalised on the way in.
    pub fn from_rows(reference: Matrix<'_>, n_threads: Option<usize>) -> Result<Self> {
        let mut index = ExactIndex::new(reference.cols())?;
        index.add(reference, n_threads)?;
        Ok(index)
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of stored rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no row is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The instruction-set level of the micro-kernel this index searches with.
    pub fn kernel(&self) -> Isa {
        self.isa
    }

    /// The name of that kernel (`"avx512f"`, `"avx2+fma"` or `"portable"`).
    pub fn kernel_name(&self) -> &'static str {
        kernel::name(self.isa)
    }

    /// The same index searching with the kernel of `isa` (for comparisons and tests; a level the
    /// CPU lacks runs as the best one below it, see [`Isa::supported_or_below`]).
    pub fn with_kernel(mut self, isa: Isa) -> Self {
        self.isa = isa.supported_or_below();
        self
    }

    /// Bytes held by the packed rows (including the panel padding).
    pub fn nbytes(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.panels.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Appends `rows` (`dim` columns); they get the indices `len()..len() + rows.rows()`.
    /// Adding never copies the rows already stored.
    pub fn add(&mut self, rows: Matrix<'_>, n_threads: Option<usize>) -> Result<()> {
        self.add_impl(rows, n_threads, true)
    }

    fn add_impl(
        &mut self,
        rows: Matrix<'_>,
        n_threads: Option<usize>,
        normalise: bool,
    ) -> Result<()> {
        let dim = self.dim;
        check_shape("reference", rows, dim)?;
        let (n_rows, rows) = (rows.rows(), rows.data());
        let start = self.len;
        let segment = pool::install(n_threads, || {
            check_finite("reference", rows, dim)?;
            Segment::pack(start, rows, dim, normalise)
        })??;
        self.len += n_rows;
        self.segments.push(segment);
        Ok(())
    }

    /// Row `i` as stored (normalised), or `None` past the end.
    pub fn row(&self, i: usize) -> Option<Vec<f32>> {
        let seg = self
            .segments
            .iter()
            .find(|s| i >= s.start && i < s.start + s.len)?;
        let mut out = vec![0.0; self.dim];
        seg.row_into(i - seg.start, self.dim, &mut out);
        Some(out)
    }

    /// The `k` most cosine-similar stored rows of each query row (`dim` columns).
    pub fn search(
        &self,
        queries: Matrix<'_>,
        k: usize,
        n_threads: Option<usize>,
    ) -> Result<Neighbours> {
        let dim = self.dim;
        check_shape("queries", queries, dim)?;
        let (n_queries, queries) = (queries.rows(), queries.data());
        pool::install(n_threads, || check_finite("queries", queries, dim))??;
        self.check_k(k)?;
        let threads = pool::resolve_size(n_threads)?;
        let isa = self.isa;
        let panels = self.panel_refs();

        let n_pad = n_queries.div_ceil(MR) * MR;
        let n_qblocks = n_pad.div_ceil(MC);
        let n_rchunks = if n_qblocks >= 2 * threads {
            1
        } else {
            (4 * threads).div_ceil(n_qblocks).clamp(1, panels.len())
        };
        let chunk_len = panels.len().div_ceil(n_rchunks);
        let n_rchunks = panels.len().div_ceil(chunk_len);

        let results = pool::install(n_threads, || {
            // Normalised queries, zero-padded to a multiple of MR rows, packed in tiles of MR
            // rows (component-major, see `kernel`).
            let mut qn = vec![0.0f32; n_pad * dim];
            qn.par_chunks_mut(MR * dim)
                .zip(queries.par_chunks(MR * dim))
                .for_each(|(out, rows)| pack_query_tile(out, rows, dim));
            let qn = &qn;
            let panels = &panels;
            (0..n_qblocks * n_rchunks)
                .into_par_iter()
                .map(|task| {
                    let (qb, rc) = (task / n_rchunks, task % n_rchunks);
                    let rows = &qn[qb * MC * dim..((qb + 1) * MC).min(n_pad) * dim];
                    let chunk = &panels[rc * chunk_len..((rc + 1) * chunk_len).min(panels.len())];
                    scan(isa, rows, dim, chunk, k)
                })
                .collect::<Vec<Vec<TopK>>>()
        })?;

        merge_blocks(results, n_rchunks, n_queries, k)
    }

    /// Checks the number of neighbours asked for.
    fn check_k(&self, k: usize) -> Result<()> {
        if k == 0 {
            return Err(Error::invalid("k", "must be >= 1, got 0"));
        }
        if k > self.len {
            return Err(Error::invalid(
                "k",
                format!(
                    "must be <= the number of reference rows ({}), got {k}",
                    self.len
                ),
            ));
        }
        Ok(())
    }

    /// Every panel of every segment, in reference order, with its first index and the mask of
    /// its valid (non-padding) columns.
    fn panel_refs(&self) -> Vec<PanelRef<'_>> {
        let dim = self.dim;
        self.segments
            .iter()
            .flat_map(|seg| {
                seg.panels
                    .chunks_exact(NR * dim)
                    .enumerate()
                    .map(move |(p, data)| {
                        let valid = (seg.len - p * NR).min(NR);
                        PanelRef {
                            data,
                            base: (seg.start + p * NR) as u64,
                            valid_mask: if valid >= 32 {
                                u32::MAX
                            } else {
                                (1u32 << valid) - 1
                            },
                        }
                    })
            })
            .collect()
    }

    /// Writes the index to `path` in the format of the module docs.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = BufWriter::new(file);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(self.len as u64).to_le_bytes());
        header.extend_from_slice(&(self.dim as u64).to_le_bytes());
        w.write_all(&header).map_err(|e| Error::io(path, e))?;
        let mut row = vec![0.0f32; self.dim];
        let mut bytes = Vec::with_capacity(self.dim * 4);
        for seg in &self.segments {
            for r in 0..seg.len {
                seg.row_into(r, self.dim, &mut row);
                bytes.clear();
                for x in &row {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                w.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            }
        }
        w.flush().map_err(|e| Error::io(path, e))
    }

    /// Reads an index written by [`ExactIndex::save`]. The header is checked against the file
    /// size before anything is allocated; the rows are used as stored (not renormalised), so a
    /// save/load round trip gives bit-identical results.
    pub fn load(path: &Path, n_threads: Option<usize>) -> Result<Self> {
        let bad = |msg: String| {
            Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
            )
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut r = BufReader::new(file);
        let mut header = [0u8; HEADER_LEN];
        r.read_exact(&mut header).map_err(|_| {
            bad("not an mclstexp index (file shorter than the 32-byte header)".into())
        })?;
        let u32_at =
            |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if &header[..8] != MAGIC {
            return Err(bad("not an mclstexp index (bad magic bytes)".into()));
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "index format version {version} is not supported (expected {FORMAT_VERSION})"
            )));
        }
        if u32_at(12) != 0 {
            return Err(bad(format!("unknown metric code {}", u32_at(12))));
        }
        let (n_rows, dim) = (u64_at(16), u64_at(24));
        let expected = n_rows
            .checked_mul(dim)
            .and_then(|v| v.checked_mul(4))
            .and_then(|v| v.checked_add(HEADER_LEN as u64));
        if dim == 0 || expected != Some(size) {
            return Err(bad(format!(
                "header says {n_rows} rows x {dim} columns but the file has {size} bytes (truncated or corrupt)"
            )));
        }
        let dim = usize::try_from(dim).map_err(|_| bad("dimension too large".into()))?;
        let n_rows = usize::try_from(n_rows).map_err(|_| bad("too many rows".into()))?;
        let mut index = ExactIndex::new(dim)?;
        // Read in chunks of whole panels to bound the staging buffer.
        let rows_per_chunk = (NR * 4096).max(1);
        let mut buf = vec![0u8; rows_per_chunk.min(n_rows.max(1)) * dim * 4];
        let mut done = 0;
        while done < n_rows {
            let n = rows_per_chunk.min(n_rows - done);
            let bytes = &mut buf[..n * dim * 4];
            r.read_exact(bytes).map_err(|e| Error::io(path, e))?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Matrix::new("reference", &values, n, dim)
                .and_then(|rows| index.add_impl(rows, n_threads, false))
                .map_err(|e| bad(format!("corrupt rows: {e}")))?;
            done += n;
        }
        Ok(index)
    }
}

/// One-off exact top-k cosine search of `queries` in `reference` (the same number of columns);
/// builds a temporary [`ExactIndex`].
pub fn topk_cosine(
    queries: Matrix<'_>,
    reference: Matrix<'_>,
    k: usize,
    n_threads: Option<usize>,
) -> Result<Neighbours> {
    let (dq, dr) = (queries.cols(), reference.cols());
    if dq == 0 {
        return Err(Error::invalid(
            "queries",
            "has 0 columns: vectors need dim >= 1",
        ));
    }
    if dq != dr {
        return Err(Error::invalid(
            "queries",
            format!("has {dq} columns but reference has {dr}; both need the same dimension"),
        ));
    }
    let index = ExactIndex::from_rows(reference, n_threads)?;
    index.search(queries, k, n_threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_non_finite_value_is_named_across_blocks() {
        let dim = 7;
        let mut data = vec![0.5f32; 3 * FINITE_BLOCK + 11];
        let check = |data: &[f32]| {
            pool::install(Some(2), || check_finite("queries", data, dim))
                .and_then(|r| r)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(check(&data), None);
        data[2 * FINITE_BLOCK + 3] = f32::INFINITY;
        data[FINITE_BLOCK + 5] = f32::NAN;
        data[3 * FINITE_BLOCK + 10] = f32::NEG_INFINITY;
        let pos = FINITE_BLOCK + 5;
        let want = format!(
            "queries: contains a non-finite value (NaN) at row {}, column {}; remove or replace \
             NaN/inf",
            pos / dim,
            pos % dim
        );
        assert_eq!(check(&data).as_deref(), Some(want.as_str()));
        data[FINITE_BLOCK - 1] = f32::NEG_INFINITY;
        assert!(check(&data).is_some_and(|m| m.contains("(-inf)")));
    }
}
