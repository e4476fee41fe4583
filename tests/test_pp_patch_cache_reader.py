"""The patch cache's fast reader (pp/patch_cache.py): direct chunk reads equal zarr's, and a
cache written by mclstexp in another format is an error, never a silent slow or wrong read."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from _cache_fixtures import mclstexp_cache  # noqa: E402
from mclstexp.exceptions import CacheMismatchError  # noqa: E402
from mclstexp.pp.patch_cache import FORMAT_VERSION, ChunkReader, cache_group  # noqa: E402


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        base = 150 + 60 * np.sin(xx / (7 + i % 13) + yy / (5 + i % 7))
        out[i] = np.clip(base[..., None] + rng.normal(0, 12, (h, w, 3)), 0, 255)
    return out


def _zarr_patches(path, patches: np.ndarray, chunk: int, **kw):
    z = zarr.create_array(
        str(path), shape=patches.shape, chunks=(chunk, *patches.shape[1:]), dtype="uint8", **kw
    )
    z[:] = patches
    return zarr.open_array(str(path), mode="r")


def test_chunk_reader_reads_like_zarr(tmp_path) -> None:
    import shutil

    x = smooth_images(10, 8, 8, seed=6)
    z = _zarr_patches(tmp_path / "p.zarr", x, chunk=3)
    reader = ChunkReader.maybe(z)
    assert reader is not None
    idx = np.array([9, 0, 4, 4, 2, 7, 9])
    np.testing.assert_array_equal(reader.take(idx), x[idx])
    np.testing.assert_array_equal(reader.take(np.arange(10)), x)
    np.testing.assert_array_equal(reader.take(idx, n_threads=3), x[idx])  # threaded decode
    assert reader.take(np.array([], np.int64)).shape == (0, 8, 8, 3)
    with pytest.raises(IndexError):
        reader.take(np.array([10]))
    # one patch per chunk: decoded straight into the result
    one = ChunkReader.maybe(_zarr_patches(tmp_path / "one.zarr", x, chunk=1))
    assert one is not None
    np.testing.assert_array_equal(one.take(idx), x[idx])
    # a chunk never written reads as the fill value (as zarr does)
    shutil.rmtree(tmp_path / "p.zarr" / "c" / "1")
    np.testing.assert_array_equal(reader.take(idx), np.asarray(z)[idx])
    assert (reader.take(np.array([3, 5])) == 0).all()
    # a corrupt chunk is an error naming the file, never a crash or a wrong image
    (tmp_path / "p.zarr" / "c" / "2" / "0" / "0" / "0").write_bytes(b"not zstd")
    with pytest.raises(ValueError, match="corrupt patch cache chunk"):
        reader.take(np.array([6]))
    # an array inside a group, as the patch cache stores it (<store>/<key>/patches)
    group = zarr.open_group(str(tmp_path / "store.zarr"), mode="w").create_group("slide1")
    arr = group.create_array("patches", shape=x.shape, chunks=(4, 8, 8, 3), dtype="uint8")
    arr[:] = x
    nested = ChunkReader.maybe(zarr.open_group(str(tmp_path / "store.zarr"))["slide1/patches"])
    assert nested is not None
    np.testing.assert_array_equal(nested.take(idx), x[idx])
    # other layouts go through zarr
    assert ChunkReader.maybe(x) is None
    raw = _zarr_patches(tmp_path / "raw.zarr", x, chunk=3, compressors=None)
    assert ChunkReader.maybe(raw) is None
    blosc = _zarr_patches(tmp_path / "blosc.zarr", x, chunk=3, compressors=zarr.codecs.BloscCodec())
    assert ChunkReader.maybe(blosc) is None


def _mclstexp_cache(tmp_path, x, *, version=FORMAT_VERSION, record=True, **kw):
    """A group laid out like extract_patches writes it: <store>/<key>/patches + format attrs +
    the record of each chunk file's size and CRC-32."""
    attrs = {"format_version": version, "patch_size": x.shape[1]}
    return mclstexp_cache(tmp_path / "cache.zarr", x, record=record, attrs=attrs, **kw)


def test_an_mclstexp_cache_in_the_supported_layout_is_read_directly(tmp_path) -> None:
    x = smooth_images(5, 8, 8, seed=1)
    arr = _mclstexp_cache(tmp_path, x)
    group = cache_group(arr)
    assert group is not None and group.path == tmp_path / "cache.zarr" / "A1"
    assert group.attrs["format_version"] == FORMAT_VERSION
    reader = ChunkReader.maybe(arr)
    assert reader is not None
    np.testing.assert_array_equal(reader.take(np.array([4, 0, 2])), x[[4, 0, 2]])


def test_an_mclstexp_cache_in_another_layout_raises_regression(tmp_path) -> None:
    # regression: maybe() used to swallow every difference in a bare `except Exception` and
    # return None, so a format change silently fell back to zarr's (5x slower) reads
    x = smooth_images(4, 8, 8, seed=2)
    arr = _mclstexp_cache(tmp_path, x, compressors=zarr.codecs.BloscCodec())
    with pytest.raises(CacheMismatchError, match=r"cache\.zarr/A1/patches.*codecs"):
        ChunkReader.maybe(arr)


def test_an_mclstexp_cache_without_its_chunk_record_raises(tmp_path) -> None:
    arr = _mclstexp_cache(tmp_path, smooth_images(4, 8, 8), record=False)
    with pytest.raises(CacheMismatchError, match="no record of the chunk files"):
        ChunkReader.maybe(arr)


def test_an_mclstexp_cache_of_another_format_version_raises(tmp_path) -> None:
    arr = _mclstexp_cache(tmp_path, smooth_images(4, 8, 8), version=FORMAT_VERSION + 1)
    with pytest.raises(CacheMismatchError, match=f"format_version {FORMAT_VERSION + 1}"):
        ChunkReader.maybe(arr)


def test_arrays_not_written_by_mclstexp_are_left_to_zarr(tmp_path) -> None:
    x = smooth_images(4, 8, 8)
    # a group without the cache's attributes, in another layout: zarr reads it
    group = zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_group("A1")
    group.attrs["format"] = "something-else"
    arr = group.create_array(
        "patches", shape=x.shape, chunks=(2, 8, 8, 3), dtype="uint8", compressors=None
    )
    arr[:] = x
    assert cache_group(arr) is None and ChunkReader.maybe(arr) is None
    # an in-memory store, and numpy
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=x.shape, dtype="uint8")
    assert ChunkReader.maybe(mem) is None and cache_group(mem) is None
    assert ChunkReader.maybe(x) is None
