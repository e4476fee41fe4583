"""The patch cache: its on-disk format (this docstring is the contract), writer and reader.

Layout, format version :data:`FORMAT_VERSION` (one group per slide, inside the store ``store``)::

    <store>/<key>/patches    uint8   [N, size, size, 3]  chunked by ``chunk_patches``, zstd
    <store>/<key>/coords     float64 [N, 2]              level-0 pixel centres (x, y)
    <store>/<key>/spot_ids   string  [N]
    <store>/<key>/in_bounds  bool    [N]                 False where the patch leaves the slide
    <store>/<key>/done       bool    [n_chunks]          chunks written (resume bookkeeping)
    <store>/<key>/chunk_bytes int64  [n_chunks]          size of each chunk file as written
    <store>/<key>/chunk_crc32 uint32 [n_chunks]          CRC-32 of each chunk file as written
    <store>/<key>.attrs      source path, size and checksum of the slide, mpp, patch size,
                             level, stain normalisation, package version, ``complete``

A run on identical inputs reuses a complete cache; an interrupted run resumes at the first chunk
not marked done and ends identical to an uninterrupted run; a cache made with other parameters
raises :class:`mclstexp.exceptions.CacheMismatchError` unless ``overwrite=True``. Every chunk file
is written (even one equal to the fill value), and its size and CRC-32 are recorded before it is
marked done: a rerun checks that every chunk marked done still exists with its size and cuts the
damaged ones again (with a :class:`~mclstexp.exceptions.DataWarning` naming them);
:func:`open_patch_cache` refuses such a cache; :class:`ChunkReader` (and ``PatchCache[...]``)
checks each chunk's CRC-32 on its first read and names a damaged chunk's file;
:meth:`PatchCache.verify` checks them all.

Every group carries ``format = "mclstexp-patch-cache"`` (:data:`FORMAT`) and ``format_version``
in its attributes, from the moment the writer creates it (before anything is written into it);
the writer never deletes a group or folder without that marker unless told to overwrite.
The ``patches`` array is chunked over the first axis only (whole patches),
codecs ``bytes`` + ``zstd``, no sharding: the layout :class:`ChunkReader` decodes itself (about 5x
less CPU per patch than zarr's per-chunk machinery). A cache of mclstexp in another version or
layout raises :class:`~mclstexp.exceptions.CacheMismatchError` instead of being read some slower or
wrong way; other array-likes (numpy, zarr arrays not written by mclstexp) are read through their
own indexing.

One package owns the format: :mod:`~mclstexp.pp.patch_cache.layout` (constants, provenance,
:class:`PatchCache`, :func:`open_patch_cache`, :func:`cache_keys`, :func:`cache_group`),
:mod:`~mclstexp.pp.patch_cache.write` (:func:`tile_slide`, the engine of
:func:`mclstexp.pp.extract_patches` and ``mclstexp-tile``) and
:mod:`~mclstexp.pp.patch_cache.read` (:class:`ChunkReader`, :func:`read_all`, :func:`take_rows`);
:mod:`~mclstexp.pp.patch_cache.imported` (:func:`store_patches`: patches another tool cut, e.g.
HEST's, copied into the same layout instead of re-tiling).
No torch import here.
"""

from mclstexp.pp.patch_cache.imported import store_patches
from mclstexp.pp.patch_cache.layout import (
    FORMAT,
    FORMAT_VERSION,
    CacheGroup,
    PatchCache,
    cache_group,
    cache_keys,
    open_patch_cache,
    slide_checksum,
)
from mclstexp.pp.patch_cache.read import ChunkReader, read_all, take_rows
from mclstexp.pp.patch_cache.write import tile_slide

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CacheGroup",
    "ChunkReader",
    "PatchCache",
    "cache_group",
    "cache_keys",
    "open_patch_cache",
    "read_all",
    "slide_checksum",
    "store_patches",
    "take_rows",
    "tile_slide",
]
