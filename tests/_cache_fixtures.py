"""A patch-cache group built by hand the way the tiler lays it out (for tests of its readers)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mclstexp.pp.patch_cache import FORMAT, FORMAT_VERSION


def mclstexp_cache(
    store: Path,
    x: np.ndarray,
    *,
    key: str = "A1",
    chunk: int = 2,
    record: bool = True,
    attrs: dict[str, Any] | None = None,
    **array_kw: Any,
) -> Any:
    """``<store>/<key>/patches`` holding ``x`` with the format's attributes (``attrs`` added), the
    per-patch arrays (``coords``, ``spot_ids``, ``in_bounds``) and, with ``record``, ``done`` and
    the size and CRC-32 of every chunk file; returns the read-only array."""
    group = zarr.open_group(str(store), mode="w").create_group(key)
    base = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_patches": len(x)}
    group.attrs.update({**base, **(attrs or {})})
    group.create_array("coords", data=np.zeros((len(x), 2)))
    group.create_array("spot_ids", data=np.array([f"s{i}" for i in range(len(x))]))
    group.create_array("in_bounds", data=np.ones(len(x), dtype=bool))
    arr = group.create_array(
        "patches", shape=x.shape, chunks=(chunk, *x.shape[1:]), dtype="uint8", **array_kw
    )
    arr[:] = x
    if record:
        folder = store / key / "patches"
        files = [
            folder / arr.metadata.encode_chunk_key((c, 0, 0, 0)) for c in range(-(-len(x) // chunk))
        ]
        group.create_array("done", data=np.ones(len(files), dtype=bool))
        group.create_array("chunk_bytes", data=np.array([f.stat().st_size for f in files]))
        crcs = np.array([zlib.crc32(f.read_bytes()) for f in files], dtype=np.uint32)
        group.create_array("chunk_crc32", data=crcs)
    return zarr.open_group(str(store), mode="r")[f"{key}/patches"]
