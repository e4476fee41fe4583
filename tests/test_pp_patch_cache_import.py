"""store_patches: ready-made patches copied into the patch cache's layout, resumable, checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mclstexp.exceptions import CacheMismatchError
from mclstexp.pp.patch_cache import open_patch_cache, read_all, store_patches


def _source(tmp_path: Path, n: int = 70) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    src = tmp_path / "patches.bin"
    src.write_bytes(x.tobytes())
    return src, x


def _store(src: Path, x: np.ndarray, store: Path, read=None, **kw):
    n = len(x)
    return store_patches(
        src,
        read or (lambda rows: x[rows]),
        np.arange(2 * n, dtype=float).reshape(n, 2),
        [f"s{i}" for i in range(n)],
        store=store,
        key="S1",
        size=16,
        source_format="test",
        mpp=0.5,
        chunk_patches=8,
        **kw,
    )


def test_stored_patches_read_back_with_provenance(tmp_path: Path) -> None:
    src, x = _source(tmp_path)
    cache = _store(src, x, tmp_path / "c.zarr")
    again = open_patch_cache(tmp_path / "c.zarr", "S1")
    assert np.array_equal(read_all(again.patches), x)
    assert list(again.spot_ids[:2]) == ["s0", "s1"] and again.in_bounds.all()
    assert again.attrs["source_format"] == "test" and again.attrs["level"] is None
    assert cache.attrs["source_path"] == str(src.resolve())
    calls = []
    _store(src, x, tmp_path / "c.zarr", read=lambda rows: calls.append(rows) or x[rows])
    assert calls == []  # complete: reused, nothing read
    src.write_bytes(b"changed")
    with pytest.raises(CacheMismatchError, match="slide_checksum"):
        _store(src, x, tmp_path / "c.zarr")
    assert len(_store(src, x, tmp_path / "c.zarr", overwrite=True)) == len(x)


def test_an_interrupted_copy_resumes_and_ends_identical(tmp_path: Path) -> None:
    src, x = _source(tmp_path)
    seen: list[int] = []

    def dies(rows: np.ndarray) -> np.ndarray:
        if seen:
            raise KeyboardInterrupt("killed")
        seen.append(len(rows))
        return x[rows]

    with pytest.raises(KeyboardInterrupt):
        _store(src, x, tmp_path / "c.zarr", read=dies)
    rows_read: list[np.ndarray] = []
    cache = _store(src, x, tmp_path / "c.zarr", read=lambda r: rows_read.append(r) or x[r])
    assert cache.complete and np.array_equal(read_all(cache.patches), x)
    assert sum(len(r) for r in rows_read) == len(x) - seen[0]  # the first batch was kept
    with pytest.raises(ValueError, match="expected"):
        _store(src, x, tmp_path / "d.zarr", read=lambda rows: x[rows][:, :8])


def test_all_black_chunks_are_written_and_recorded(tmp_path: Path) -> None:
    """Regression: a chunk whose patches are all zero (black, or out of the slide) equals zarr's
    fill value; a reopened array skipped writing it (``write_empty_chunks`` is not stored), and
    recording its size and CRC-32 then failed with FileNotFoundError."""
    src, x = _source(tmp_path, n=20)
    x[:8] = 0  # the first chunk (8 patches) is all black
    cache = _store(src, x, tmp_path / "c.zarr")
    assert cache.complete
    np.testing.assert_array_equal(read_all(cache.patches), x)
    assert cache.verify() == []
