"""Regenerate ``tests/data/malformed/``: tiny malformed slide files that the reader must reject
with ``SlideFormatError`` (never a crash, never a huge allocation).

Run from the repository root: ``python tests/data/make_malformed.py``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import tifffile

OUT = Path(__file__).resolve().parent / "malformed"


def ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    """A classic little-endian IFD: (tag, type, count, value) entries, values inline."""
    out = struct.pack("<H", len(entries))
    for tag, typ, count, value in sorted(entries):
        out += struct.pack("<HHII", tag, typ, count, value)
    return out + struct.pack("<I", next_ifd)


def tiled(width: int, height: int, offset: int, count: int, **extra: int) -> list:
    e = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, extra.get("compression", 1)),
        (262, 3, 1, 1),
        (277, 3, 1, 1),
        (322, 3, 1, 16),
        (323, 3, 1, 16),
        (324, 4, 1, offset),
        (325, 4, 1, count),
    ]
    return e


def valid_tiff(compression: str | None, shape=(40, 48, 3), tile=(16, 16)) -> bytes:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=shape, dtype=np.uint8)
    buf = io.BytesIO()
    tifffile.imwrite(buf, img, tile=tile, compression=compression, photometric="rgb")
    return buf.getvalue()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    files: dict[str, bytes] = {}
    files["empty.tif"] = b""
    files["not_a_tiff.tif"] = b"hello, this is not a slide\n" * 4
    files["truncated_header.tif"] = b"II*\x00"
    files["bad_version.tif"] = b"II\x2b\x00\x04\x00\x00\x00" + b"\x00" * 16
    files["ifd_past_eof.tif"] = b"II*\x00" + struct.pack("<I", 1_000_000) + b"\x00" * 8
    # IFD at 8 whose next-IFD offset points back to itself.
    loop = ifd(tiled(16, 16, 8 + 2 + 12 * 10 + 4, 256), next_ifd=8)
    files["ifd_loop.tif"] = b"II*\x00" + struct.pack("<I", 8) + loop + b"\x00" * 256
    # 4 billion x 4 billion pixels declared with one tile.
    files["absurd_dimensions.tif"] = (
        b"II*\x00" + struct.pack("<I", 8) + ifd(tiled(0xFFFFFFFF, 0xFFFFFFFF, 200, 256))
    ) + b"\x00" * 300
    # A tile offset far past the end of the file.
    files["tile_offset_past_eof.tif"] = (
        b"II*\x00" + struct.pack("<I", 8) + ifd(tiled(16, 16, 0x7FFFFFF0, 256)) + b"\x00" * 64
    )
    # An IFD that declares 65535 entries in a 100-byte file.
    files["huge_entry_count.tif"] = b"II*\x00" + struct.pack("<IH", 8, 65535) + b"\x00" * 90
    # A tag array (TileOffsets with a billion entries) stored past the end of the file.
    e = tiled(16, 16, 0, 0)
    e = [x for x in e if x[0] not in (324, 325)] + [
        (324, 4, 1_000_000_000, 500),
        (325, 4, 1_000_000_000, 600),
    ]
    files["tag_array_past_eof.tif"] = b"II*\x00" + struct.pack("<I", 8) + ifd(e) + b"\x00" * 32
    # A BigTIFF header with an unsupported offset size.
    files["bigtiff_bad_header.tif"] = (
        b"II\x2b\x00\x04\x00\x00\x00" + struct.pack("<Q", 16) + b"\0" * 8
    )
    # Real tiled files, then damaged.
    deflate = valid_tiff("zlib")
    files["truncated_deflate.tif"] = deflate[: len(deflate) // 2]
    jpeg = valid_tiff("jpeg")
    # Overwrite the compressed data of every tile with garbage (keeps the structure valid).
    t = tifffile.TiffFile(io.BytesIO(jpeg))
    page = t.pages[0]
    bad = bytearray(jpeg)
    for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=True):
        bad[off + 2 : off + cnt] = bytes((i * 37) % 256 for i in range(cnt - 2))
    files["garbage_jpeg_tiles.tif"] = bytes(bad)
    t = tifffile.TiffFile(io.BytesIO(deflate))
    page = t.pages[0]
    bad = bytearray(deflate)
    for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=True):
        bad[off : off + cnt] = b"\x78\x9c" + bytes(cnt - 2)
    files["garbage_deflate_tiles.tif"] = bytes(bad)
    lzw = valid_tiff("lzw")
    t = tifffile.TiffFile(io.BytesIO(lzw))
    page = t.pages[0]
    bad = bytearray(lzw)
    for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=True):
        bad[off : off + cnt] = bytes([0x80]) * cnt
    files["garbage_lzw_tiles.tif"] = bytes(bad)
    # A JPEG whose frame header declares 65000 x 65000 pixels in a few bytes.
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65000, 65000, 3) + b"\x01\x11\x00" * 3
    files["jpeg_bomb.jpg"] = b"\xff\xd8" + sof + b"\xff\xd9"
    files["garbage.jpg"] = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2
    from PIL import Image

    # Whole JPEG streams cut short (issue #18, item 2: the decoder padded them with grey).
    yy, xx = np.mgrid[0:48, 0:64]
    texture = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="JPEG", quality=95)
    files["truncated_70pct.jpg"] = buf.getvalue()[: len(buf.getvalue()) * 7 // 10]
    tif = bytearray(valid_tiff("jpeg"))
    page = tifffile.TiffFile(io.BytesIO(bytes(tif))).pages[0]
    counts = list(page.databytecounts)
    counts[-1] = counts[-1] * 7 // 10  # the last tile's byte count cuts its stream
    where = page.tags["TileByteCounts"].valueoffset
    tif[where : where + 4 * len(counts)] = np.asarray(counts, "<u4").tobytes()
    files["truncated_jpeg_tile.tif"] = bytes(tif)
    png = io.BytesIO()

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png, format="PNG")
    files["truncated.png"] = png.getvalue()[:60]
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()
