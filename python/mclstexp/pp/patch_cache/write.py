"""The writer of the patch cache: :func:`tile_slide` and its resume bookkeeping."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import re
import shutil
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp._validate import check_n_threads, check_points
from mclstexp.exceptions import CacheMismatchError, DataWarning
from mclstexp.pp.patch_cache.layout import (
    CHUNK_BYTES,
    CHUNK_CRC32,
    FORMAT,
    FORMAT_VERSION,
    PatchCache,
    _check_arrays,
    _group_attrs,
    _named_metadata_errors,
    chunk_file,
    damaged_chunks,
    slide_checksum,
)

__all__ = ["tile_slide"]


def _version() -> str:
    import mclstexp

    return str(mclstexp.__version__)


def _sanitize_key(key: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in key).strip(".")
    if not out:
        raise ValueError(f"key: {key!r} is not usable as a cache group name")
    return out


def _coords_digest(centers: np.ndarray, ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(centers, dtype="<f8").tobytes())
    for s in ids:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()


def tile_slide(
    slide_path: str | Path,
    centers: np.ndarray,
    spot_ids: Sequence[str],
    *,
    store: str | Path,
    key: str | None = None,
    size: int = 224,
    mpp: float | None = None,
    level: int = 0,
    slide_mpp: float | None = None,
    stain_normalizer: Any = None,
    n_threads: int | None = None,
    chunk_patches: int = 32,
    batch_chunks: int = 4,
    overwrite: bool = False,
    backend: str = "auto",
    progress: bool | Callable[[int], None] = True,
) -> PatchCache:
    """Cut patches of one slide at ``centers`` into ``store`` (the engine of
    :func:`mclstexp.pp.extract_patches` and ``mclstexp-tile``; see there for the parameters).

    Examples
    --------
    >>> tile_slide("C2.jpg", xy, ids, store="p.zarr", key="C2")  # doctest: +SKIP
    """
    from mclstexp.io.slide import open_slide

    slide_path, store = Path(slide_path), Path(store)
    centers, ids = _check_spots(centers, spot_ids)
    _check_sizes(int(size), int(level), int(chunk_patches), int(batch_chunks))
    n_threads = check_n_threads(n_threads)
    if slide_mpp is not None and not (math.isfinite(slide_mpp) and slide_mpp > 0):
        raise ValueError(
            f"slide_mpp: must be a positive finite number of microns per pixel, got {slide_mpp}"
        )
    if store.exists() and not store.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the patch cache store is not a folder", str(store))
    slide = open_slide(slide_path, backend=backend)  # type: ignore[arg-type]
    if slide.mpp is None and slide_mpp is not None:
        slide = open_slide(slide_path, backend=backend, mpp=slide_mpp)  # type: ignore[arg-type]
    key = _sanitize_key(key if key is not None else slide_path.stem)
    stain = None
    if stain_normalizer is not None:
        stain = json.loads(json.dumps(stain_normalizer.to_dict(), default=_json_default))
    attrs: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source_path": str(slide_path.resolve()),
        "slide_size": slide_path.stat().st_size,
        "slide_checksum": slide_checksum(slide_path),
        "slide_mpp": slide.mpp,
        "mpp": mpp,
        "patch_size": int(size),
        "level": int(level) if mpp is None else None,
        "stain_normalization": stain,
        "n_patches": len(centers),
        "chunk_patches": int(chunk_patches),
        "spots_sha256": _coords_digest(centers, ids),
        "package_version": _version(),
    }
    group = _open_group(store, key, attrs, centers, ids, overwrite=overwrite)
    damaged = _damaged_done_chunks(group)
    if damaged or not group.attrs.get("complete", False):
        group.attrs["complete"] = False  # a kill during a repair leaves the cache incomplete
        # Resuming: a kill can land inside a chunk write. zarr writes "<chunk>.<hex>.partial"
        # and renames it, so the chunk itself is whole (or absent, and not marked done) but the
        # temp file stays behind; remove it so the resumed store equals a clean one.
        _remove_partial_writes(store / key)

        def read(idx: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            patches, inside = slide.read_patches(
                centers[idx],
                size=int(size),
                mpp=mpp,
                level=int(level),
                n_threads=n_threads,
                return_mask=True,
                out=out,
            )
            if stain_normalizer is not None:
                patches = np.asarray(stain_normalizer.transform(patches), dtype=np.uint8)
            return patches, inside

        _fill(group, read, int(batch_chunks), progress, key, redo=damaged)
        group.attrs["complete"] = True
    return PatchCache(group, key)


#: Largest patch side (the native reader's limit) and largest chunk of patches, in bytes.
MAX_PATCH_SIZE = 1 << 14
_MAX_CHUNK_BYTES = 1 << 30


def _check_sizes(size: int, level: int, chunk_patches: int, batch_chunks: int) -> None:
    """Refuse sizes the tiler cannot honour, before anything is allocated or written."""
    if not 1 <= size <= MAX_PATCH_SIZE:
        raise ValueError(f"size: must be in [1, {MAX_PATCH_SIZE}] pixels, got {size}")
    if level < 0:
        raise ValueError(f"level: must be >= 0, got {level}")
    if chunk_patches < 1 or batch_chunks < 1:
        raise ValueError("chunk_patches and batch_chunks must be >= 1")
    chunk_bytes = chunk_patches * size * size * 3
    if chunk_bytes > _MAX_CHUNK_BYTES:
        raise ValueError(
            f"chunk_patches: {chunk_patches} patches of {size} px make chunks of "
            f"{chunk_bytes / 2**30:.1f} GiB (at most 1 GiB); use fewer patches per chunk"
        )


def _check_spots(centers: Any, spot_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    centers = check_points(centers, "centers")
    ids = [str(s) for s in spot_ids]
    if len(ids) != len(centers):
        raise ValueError(f"spot_ids: {len(ids)} ids for {len(centers)} centres")
    if len(set(ids)) != len(ids):
        raise ValueError("spot_ids: must be unique")
    return centers, ids


def _open_group(
    store: Path,
    key: str,
    attrs: dict[str, Any],
    centers: np.ndarray,
    ids: list[str],
    *,
    overwrite: bool,
) -> Any:
    """The slide's group: reused when made with ``attrs``, else created (empty, not complete).

    The group carries the format's marker (:data:`_MARKER`) from the moment it is created, before
    anything is written into it; a group with the marker only was cut short while being created
    and starts afresh. Anything else at ``store/key`` that lacks the marker (another group, a
    folder) was not made by the tiler: it is refused, never deleted, unless ``overwrite``.
    """
    import zarr

    path = store / key
    if path.exists() or path.is_symlink():
        old, why = _ours(path)
        if old is not None and set(old) <= set(_MARKER):
            shutil.rmtree(path)  # ours, killed before its arrays were made
        elif old is not None:
            old = {k: v for k, v in old.items() if k != "complete"}
            if old == attrs:
                try:  # reused, unless an array was deleted (then re-cut with overwrite only)
                    with _named_metadata_errors(store):
                        group = zarr.open_group(str(store), mode="a")[key]
                        _check_arrays(group, str(path))
                    return group
                except CacheMismatchError:
                    if not overwrite:
                        raise
            elif not overwrite and old.get("format_version") != FORMAT_VERSION:
                raise CacheMismatchError(
                    f"{path}: a patch cache in format_version {old.get('format_version')} (this "
                    f"mclstexp writes {FORMAT_VERSION}); re-tile it: pass overwrite=True "
                    "(--overwrite) or another store"
                )
            elif not overwrite:
                diff = sorted(k for k in set(old) | set(attrs) if old.get(k) != attrs.get(k))
                raise CacheMismatchError(
                    f"{path}: a patch cache made with other parameters exists "
                    f"(differs in {diff}); pass overwrite=True (--overwrite) or another store"
                )
            shutil.rmtree(path)
        elif not overwrite:
            raise FileExistsError(
                f"{path}: exists and is not a patch cache written by mclstexp{why}, so the tiler "
                "leaves it alone; choose another store or key, or pass overwrite=True "
                "(--overwrite) to replace it"
            )
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    root = zarr.open_group(str(store), mode="a")
    n, side, chunk = len(centers), attrs["patch_size"], attrs["chunk_patches"]
    n_chunks = math.ceil(n / chunk) if n else 0
    group = root.create_group(key, attributes=dict(_MARKER))
    group.create_array(
        "patches",
        shape=(n, side, side, 3),
        dtype="uint8",
        chunks=(chunk, side, side, 3),
        config={"write_empty_chunks": True},  # every chunk has a file, whose size is recorded
    )
    group.create_array("coords", shape=(n, 2), dtype="float64", chunks=(max(n, 1), 2))
    ids_arr = group.create_array("spot_ids", shape=(n,), dtype=str, chunks=(max(n, 1),))
    group.create_array("in_bounds", shape=(n,), dtype="bool", chunks=(max(n, 1),))
    group.create_array("done", shape=(n_chunks,), dtype="bool", chunks=(max(n_chunks, 1),))
    for name, dtype in ((CHUNK_BYTES, "int64"), (CHUNK_CRC32, "uint32")):
        group.create_array(name, shape=(n_chunks,), dtype=dtype, chunks=(max(n_chunks, 1),))
    if n:
        group["coords"][:] = centers
        ids_arr[:] = np.array(ids, dtype=str)
    group.attrs.update({**attrs, "complete": False})
    return root[key]


#: The attributes a cache group is created with, before anything is written into it.
_MARKER = {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False}


def _ours(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The attributes of the group at ``path`` when it carries the cache's marker, else ``None``;
    and why it is not recognisably ours when its metadata cannot be read (else "")."""
    try:
        attrs = _group_attrs(path) if path.is_dir() else {}
    except (OSError, ValueError) as err:  # unreadable or not JSON: not recognisably ours
        return None, f" ({err})"
    return (attrs if attrs.get("format") == FORMAT else None), ""


def _damaged_done_chunks(group: Any) -> list[int]:
    """The chunks marked done whose file is missing or not the size it was written with (a
    rerun repairs them; a warning names their files)."""
    n, chunk = int(group.attrs["n_patches"]), int(group.attrs["chunk_patches"])
    n_chunks = math.ceil(n / chunk) if n else 0
    done, _, sizes, _ = _read_bookkeeping(group, n, n_chunks)
    arr = group["patches"]
    folder = Path(arr.store.root) / arr.path
    bad = damaged_chunks(folder, arr.metadata.encode_chunk_key, sizes, None, np.flatnonzero(done))
    if bad:
        files = [str(chunk_file(folder, arr.metadata.encode_chunk_key, c)) for c in bad]
        warnings.warn(
            f"{folder.parent}: {len(bad)} damaged chunks of a patch cache (missing or cut short: "
            f"{', '.join(files[:3])}{', ...' if len(files) > 3 else ''}) are cut again",
            DataWarning,
            stacklevel=3,
        )
    return bad


def _fill(
    group: Any,
    read: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    batch_chunks: int,
    progress: bool | Callable[[int], None],
    desc: str,
    *,
    redo: Sequence[int] = (),
) -> None:
    """Write every chunk not marked done (and those in ``redo``), reading batch i+1 while batch
    i is written; record each chunk file's size and CRC-32 before marking it done."""
    n, chunk = int(group.attrs["n_patches"]), int(group.attrs["chunk_patches"])
    size = int(group.attrs["patch_size"])
    n_chunks = math.ceil(n / chunk) if n else 0
    done, in_bounds, sizes, crcs = _read_bookkeeping(group, n, n_chunks)
    done[list(redo)] = False
    todo = [c for c in range(n_chunks) if not done[c]]
    # write_empty_chunks is not stored with the array: an all-zero chunk (black patches) would
    # otherwise be skipped, leaving no file to record.
    arr = group["patches"].with_config({"write_empty_chunks": True})
    folder, encode_key = Path(arr.store.root) / arr.path, arr.metadata.encode_chunk_key
    bar = _progress_bar(progress, n, initial=n - _count(todo, chunk, n), desc=desc)
    batches = [todo[i : i + batch_chunks] for i in range(0, len(todo), batch_chunks)]

    # Two reusable batch buffers: one being filled while the other is written.
    batch_len = chunk * batch_chunks
    buffers = [np.empty((min(batch_len, n), size, size, 3), np.uint8) for _ in range(2)]

    def read_batch(i: int, batch: list[int]) -> tuple[list[int], np.ndarray, np.ndarray]:
        idx = np.concatenate([np.arange(c * chunk, min((c + 1) * chunk, n)) for c in batch])
        patches, inside = read(idx, buffers[i % 2][: len(idx)])
        return batch, patches, inside

    def write(batch: list[int], patches: np.ndarray, inside: np.ndarray) -> None:
        # Batches are runs of consecutive chunks, except after a resume skipped some.
        pos = 0
        for run in _runs(batch):
            a, b = run[0] * chunk, min((run[-1] + 1) * chunk, n)
            arr[a:b] = patches[pos : pos + (b - a)]
            in_bounds[a:b] = inside[pos : pos + (b - a)]
            pos += b - a
        group["in_bounds"][:] = in_bounds
        for c in batch:
            data = chunk_file(folder, encode_key, c).read_bytes()
            sizes[c], crcs[c] = len(data), zlib.crc32(data)
        group[CHUNK_BYTES][:], group[CHUNK_CRC32][:] = sizes, crcs
        # Mark the chunks done only after their data is written: a kill before this line
        # means they are rewritten on resume.
        done[batch] = True
        group["done"][:] = done
        _advance(bar, pos)

    # Read batch i+1 (GIL released in Rust) while batch i is compressed and written.
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_batch, 0, batches[0]) if batches else None
        for i in range(len(batches)):
            assert pending is not None
            batch, patches, inside = pending.result()
            nxt = i + 1
            pending = reader.submit(read_batch, nxt, batches[nxt]) if nxt < len(batches) else None
            write(batch, patches, inside)
    if bar is not None and hasattr(bar, "close"):
        bar.close()


_PARTIAL = re.compile(r".*\.[0-9a-f]{32}\.partial")


def _remove_partial_writes(group_dir: Path) -> int:
    """Delete the temp files of zarr writes that a killed run left in ``group_dir``."""
    removed = 0
    for p in group_dir.rglob("*.partial"):
        if _PARTIAL.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def _read_bookkeeping(
    group: Any, n: int, n_chunks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``done`` flags, ``in_bounds`` mask and recorded chunk sizes and CRC-32s of a (possibly
    interrupted) cache group.

    A store that writes in place can be killed half-way through one of these small arrays; then
    nothing is known to be written and every chunk is redone.
    """
    fresh = (np.zeros(n_chunks, bool), np.zeros(n, bool))
    fresh += (np.zeros(n_chunks, np.int64), np.zeros(n_chunks, np.uint32))
    try:
        arrays = (
            np.asarray(group["done"][:], dtype=bool) if n_chunks else fresh[0],
            np.asarray(group["in_bounds"][:], dtype=bool),
            np.asarray(group[CHUNK_BYTES][:], dtype=np.int64) if n_chunks else fresh[2],
            np.asarray(group[CHUNK_CRC32][:], dtype=np.uint32) if n_chunks else fresh[3],
        )
    except (RuntimeError, ValueError, OSError):  # zarr/numcodecs decode errors are RuntimeError
        return fresh
    if any(a.shape != f.shape for a, f in zip(arrays, fresh, strict=True)):
        return fresh
    return arrays


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"stain_normalizer.to_dict(): {type(o).__name__} is not JSON-serialisable")


def _runs(chunks: list[int]) -> list[list[int]]:
    """Split sorted chunk indices into runs of consecutive ones."""
    runs: list[list[int]] = []
    for c in chunks:
        if runs and runs[-1][-1] + 1 == c:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def _count(todo: list[int], chunk: int, n: int) -> int:
    return sum(min((c + 1) * chunk, n) - c * chunk for c in todo)


def _progress_bar(progress: bool | Callable[[int], None], total: int, initial: int, desc: str):
    if callable(progress):
        return progress
    if not progress:
        return None
    from mclstexp._progress import progress_bar

    return progress_bar(total=total, initial=initial, desc=desc, unit="patch", leave=False)


def _advance(bar: Any, k: int) -> None:
    if bar is None:
        return
    if hasattr(bar, "update"):
        bar.update(k)
    else:
        bar(k)
