"""The format's constants and the read-only view of a written cache (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.exceptions import CacheMismatchError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CacheGroup",
    "PatchCache",
    "cache_group",
    "cache_keys",
    "chunk_file",
    "damaged_chunks",
    "open_patch_cache",
    "slide_checksum",
]

#: The ``format`` attribute of a patch-cache group written by mclstexp.
FORMAT = "mclstexp-patch-cache"
#: Version of the layout, recorded as ``format_version`` in every group's attributes. 2: every
#: chunk file is written (even one equal to the fill value) and its size and CRC-32 are recorded.
FORMAT_VERSION = 2
#: The arrays that record each chunk file's size in bytes and CRC-32 as written.
CHUNK_BYTES, CHUNK_CRC32 = "chunk_bytes", "chunk_crc32"
#: The arrays of a cache group: one entry per patch, then one per chunk (resume bookkeeping).
_PER_PATCH_ARRAYS = ("patches", "coords", "spot_ids", "in_bounds")
_PER_CHUNK_ARRAYS = ("done", CHUNK_BYTES, CHUNK_CRC32)
_METADATA_FILES = ("zarr.json", ".zgroup", ".zattrs", ".zarray")
_FULL_HASH_LIMIT = 256 << 20  # hash whole slides up to this size; sample larger ones
_SAMPLE = 4 << 20


def slide_checksum(path: str | Path) -> dict[str, Any]:
    """A checksum of a slide file: sha256 of the whole file up to 256 MiB, else of its size and
    four 4 MiB samples (start, two interior points, end), which is fast on multi-GB slides.

    Examples
    --------
    >>> slide_checksum("slide.svs")["algorithm"]  # doctest: +SKIP
    'sha256'
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return {"algorithm": "sha256", "value": h.hexdigest()}
        h.update(str(size).encode())
        for off in (0, size // 3, 2 * size // 3, size - _SAMPLE):
            f.seek(off)
            h.update(f.read(_SAMPLE))
    return {"algorithm": "sha256-sampled-4x4MiB", "value": h.hexdigest()}


class PatchCache:
    """A slide's patches in a Zarr v3 store (see :func:`extract_patches`).

    Attributes
    ----------
    patches
        The ``zarr`` array uint8 ``[N, size, size, 3]``; index it like numpy.
    spot_ids
        ``(N,)`` array of str, aligned with ``patches``.
    coords
        float64 ``(N, 2)`` level-0 pixel centres (x, y).
    in_bounds
        bool ``(N,)``; False where the patch extends outside the slide (padded white).
    attrs
        Provenance and parameters (source, checksum, mpp, size, level, stain, version).

    Examples
    --------
    >>> cache = open_patch_cache("patches.zarr")  # doctest: +SKIP
    >>> cache.patches[:8].shape  # doctest: +SKIP
    (8, 224, 224, 3)
    """

    def __init__(self, group: Any, key: str) -> None:
        self._group = group
        self.key = key
        self.patches = group["patches"]

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def __repr__(self) -> str:
        return f"PatchCache(key={self.key!r}, n={len(self)}, size={self.attrs.get('patch_size')})"

    def __getitem__(self, index: Any) -> np.ndarray:
        """Patches ``index`` (an int, a slice or an array of ints); read through
        :class:`~mclstexp.pp.patch_cache.ChunkReader` (which checks every chunk against its
        recorded checksum and names a damaged chunk's file) where it can."""
        from mclstexp.pp.patch_cache.read import ChunkReader

        if not hasattr(self, "_reader"):
            self._reader = ChunkReader.maybe(self.patches)
        rows = np.arange(len(self))[index] if self._reader is not None else None
        if rows is None:
            return np.asarray(self.patches[index])
        return self._reader.take(np.atleast_1d(rows)).reshape(
            *np.shape(rows), *self.patches.shape[1:]
        )

    @property
    def spot_ids(self) -> np.ndarray:
        return np.array([str(s) for s in self._group["spot_ids"][:]], dtype=str)

    @property
    def coords(self) -> np.ndarray:
        return np.asarray(self._group["coords"][:], dtype=np.float64)

    @property
    def in_bounds(self) -> np.ndarray:
        return np.asarray(self._group["in_bounds"][:], dtype=bool)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @property
    def complete(self) -> bool:
        return bool(self._group.attrs.get("complete", False))

    def verify(self, *, checksum: bool = True) -> list[Path]:
        """The chunk files of ``patches`` that are missing or differ from what was written.

        Parameters
        ----------
        checksum
            Compare every file's CRC-32 (reads the whole cache); ``False`` compares existence and
            sizes only (what a rerun of the tiler checks before it reuses a cache).

        Examples
        --------
        >>> open_patch_cache("patches.zarr").verify()  # doctest: +SKIP
        []
        """
        folder = _array_folder(self.patches)
        try:
            sizes = np.asarray(self._group[CHUNK_BYTES][:], dtype=np.int64)
            crcs = np.asarray(self._group[CHUNK_CRC32][:], dtype=np.uint32) if checksum else None
        except KeyError:
            raise CacheMismatchError(
                f"{folder.parent}: the patch cache has no record of its chunk files "
                f"({CHUNK_BYTES}, {CHUNK_CRC32}); re-tile it (mclstexp-tile --overwrite)"
            ) from None
        bad = damaged_chunks(folder, self.patches.metadata.encode_chunk_key, sizes, crcs)
        return [chunk_file(folder, self.patches.metadata.encode_chunk_key, c) for c in bad]


def _array_folder(arr: Any) -> Path:
    root = Path(arr.store.root)
    return root / arr.path if arr.path else root


def chunk_file(folder: Path, encode_key: Callable[[tuple[int, ...]], str], c: int) -> Path:
    """The file of chunk ``c`` (over the first axis) of the 4-d array stored in ``folder``."""
    return folder / encode_key((c, 0, 0, 0))


def damaged_chunks(
    folder: Path,
    encode_key: Callable[[tuple[int, ...]], str],
    sizes: np.ndarray,
    crcs: np.ndarray | None = None,
    chunks: Iterable[int] | None = None,
) -> list[int]:
    """The chunks (of ``chunks``, default all) whose file is missing, or whose size (and, with
    ``crcs``, CRC-32) differs from the one recorded when it was written.

    Examples
    --------
    >>> import tempfile, zlib
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "c0").write_bytes(b"abc")
    >>> key = lambda idx: f"c{idx[0]}"
    >>> damaged_chunks(folder, key, np.array([3, 3]), np.array([zlib.crc32(b"abc"), 0]))
    [1]
    """
    bad = []
    for c in range(len(sizes)) if chunks is None else chunks:
        path = chunk_file(folder, encode_key, c)
        try:
            wrong = path.stat().st_size != sizes[c] or (
                crcs is not None and zlib.crc32(path.read_bytes()) != int(crcs[c])
            )
        except OSError:
            wrong = True
        if wrong:
            bad.append(c)
    return bad


def open_patch_cache(store: str | Path, key: str | None = None) -> PatchCache:
    """Open a complete patch cache written by :func:`extract_patches` or ``mclstexp-tile``.

    Parameters
    ----------
    store
        The Zarr store (a directory).
    key
        The slide's group; may be omitted when the store holds one slide.

    Raises
    ------
    FileNotFoundError
        No such store.
    ValueError
        ``key`` is not in the store (or is needed and missing).
    mclstexp.exceptions.CacheMismatchError
        The group is not a patch cache, is of another format version, is incomplete, lacks one
        of its arrays, a Zarr metadata file is not readable JSON, or some of its chunk files
        are missing or cut short (the message names them).

    Examples
    --------
    >>> cache = open_patch_cache("patches.zarr", "C2")  # doctest: +SKIP
    """
    import zarr

    store = Path(store)
    keys = cache_keys(store)
    if key is None:
        if len(keys) != 1:
            raise ValueError(f"key: the store holds {len(keys)} slides {keys}; pass one of them")
        key = keys[0]
    if key not in keys:
        raise ValueError(f"key: {store} has no slide {key!r} (it has {keys})")
    with _named_metadata_errors(store):
        group = zarr.open_group(str(store), mode="r")[key]
        _check_group(group, f"{store}/{key}")
    cache = PatchCache(group, key)
    damaged = cache.verify(checksum=False)
    if damaged:
        raise CacheMismatchError(
            f"{store}/{key}: {len(damaged)} chunk file(s) of the cache are missing or cut short "
            f"({', '.join(map(str, damaged[:3]))}{', ...' if len(damaged) > 3 else ''}); "
            "re-run the tiler to repair them"
        )
    return cache


def _check_group(group: Any, where: str) -> None:
    """Refuse a group that is not a complete cache of this format with all its arrays."""
    if group.attrs.get("format") != FORMAT:
        raise CacheMismatchError(
            f"{where}: not a patch cache written by mclstexp (no format attribute {FORMAT!r})"
        )
    version = group.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise CacheMismatchError(
            f"{where}: a patch cache in format_version {version} (this mclstexp reads "
            f"{FORMAT_VERSION}); re-tile it (mclstexp-tile --overwrite)"
        )
    if not group.attrs.get("complete", False):
        raise CacheMismatchError(
            f"{where}: the cache is incomplete (an interrupted run); re-run the tiler"
        )
    _check_arrays(group, where)


def _check_arrays(group: Any, where: str) -> None:
    """Raise :class:`~mclstexp.exceptions.CacheMismatchError` naming ``where`` when an array of
    the cache group is missing (deleted) or does not hold one entry per patch."""
    present = set(group.array_keys())
    missing = [a for a in (*_PER_PATCH_ARRAYS, *_PER_CHUNK_ARRAYS) if a not in present]
    if missing:
        raise CacheMismatchError(
            f"{where}: the cache lacks its {missing} array(s) (deleted or damaged); re-tile it "
            "(mclstexp-tile --overwrite, or overwrite=True)"
        )
    n = int(group.attrs.get("n_patches", -1))
    wrong = [a for a in _PER_PATCH_ARRAYS if group[a].shape[:1] != (n,)]
    if wrong:
        raise CacheMismatchError(
            f"{where}: the cache's {wrong} array(s) do not hold one entry per patch ({n}); "
            "re-tile it (mclstexp-tile --overwrite, or overwrite=True)"
        )


@dataclass(frozen=True)
class CacheGroup:
    """Where a patch array of a local mclstexp cache lives: its group folder and attributes."""

    path: Path
    attrs: dict[str, Any]


def _local_zarr_array(arr: Any) -> tuple[Any, Path] | None:
    """``(arr, folder of the array)`` for a zarr array in a local store, else ``None``."""
    if not type(arr).__module__.startswith("zarr"):
        return None
    import zarr
    from zarr.storage import LocalStore

    if not isinstance(arr, zarr.Array) or not isinstance(arr.store, LocalStore):
        return None
    root = Path(arr.store.root)
    return arr, (root / arr.path if arr.path else root)


def _group_attrs(folder: Path) -> dict[str, Any]:
    """Attributes of the zarr group stored in ``folder`` (v3 ``zarr.json`` or v2 ``.zattrs``);
    ``ValueError`` naming the file when it is not readable JSON."""
    v3, v2 = folder / "zarr.json", folder / ".zattrs"
    if v3.is_file():
        meta = _load_metadata(v3)
        if not isinstance(meta, dict) or meta.get("node_type") != "group":
            return {}
        attrs = meta.get("attributes", {})
    elif v2.is_file():
        attrs = _load_metadata(v2)
    else:
        return {}
    return attrs if isinstance(attrs, dict) else {}


def _load_metadata(file: Path) -> Any:
    """The JSON of a Zarr metadata file; ``ValueError`` naming the file when it is not JSON."""
    try:
        return json.loads(file.read_bytes())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        msg = " ".join(str(err).split())
        raise ValueError(
            f"{file}: not a readable Zarr metadata file ({type(err).__name__}: {msg})"
        ) from err


def cache_keys(store: str | Path) -> list[str]:
    """The slide groups (keys) of a patch-cache store, sorted.

    Raises
    ------
    FileNotFoundError
        No such store, or no Zarr group there.
    mclstexp.exceptions.CacheMismatchError
        A Zarr metadata file of the store is not readable JSON (the message names it).

    Examples
    --------
    >>> import tempfile, zarr
    >>> store = Path(tempfile.mkdtemp()) / "p.zarr"
    >>> _ = zarr.open_group(str(store), mode="w").create_group("C2")
    >>> cache_keys(store)
    ['C2']
    """
    import zarr

    store = Path(store)
    if not store.exists():
        raise FileNotFoundError(2, "patch cache not found", str(store))
    with _named_metadata_errors(store):
        return sorted(zarr.open_group(str(store), mode="r").group_keys())


@contextmanager
def _named_metadata_errors(store: Path) -> Iterator[None]:
    """Turn the bare ``JSONDecodeError`` zarr raises for a damaged metadata file of ``store``
    (its own, its groups' or their arrays') into a
    :class:`~mclstexp.exceptions.CacheMismatchError` naming the file."""
    try:
        yield
    except ValueError as err:
        if not isinstance(err, json.JSONDecodeError | UnicodeDecodeError):
            raise
        for pattern in ("", "*/", "*/*/"):
            for name in _METADATA_FILES:
                for file in sorted(store.glob(pattern + name)):
                    try:
                        _load_metadata(file)
                    except ValueError as bad:
                        raise CacheMismatchError(
                            f"{bad}; pass a patch cache written by mclstexp-tile, or re-tile "
                            "this one (--overwrite)"
                        ) from err
        raise CacheMismatchError(f"{store}: a damaged Zarr metadata file ({err})") from err


def cache_group(arr: Any) -> CacheGroup | None:
    """The group of a patch array written by mclstexp on a local disk, else ``None``.

    ``None`` for numpy arrays, zarr arrays in other stores, and arrays whose parent group has no
    ``format = "mclstexp-patch-cache"`` attribute.

    Examples
    --------
    >>> cache_group(np.zeros((2, 8, 8, 3), np.uint8)) is None
    True
    """
    local = _local_zarr_array(arr)
    if local is None:
        return None
    _, folder = local
    if not arr.path:  # an array at the root of its store has no group
        return None
    attrs = _group_attrs(folder.parent)
    if attrs.get("format") != FORMAT:
        return None
    return CacheGroup(folder.parent, attrs)
