"""The tiler with the real stain normaliser: cache attributes, patches, and the CLI flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mclstexp.cli.tile import main as tile_main
from mclstexp.datasets import synthetic
from mclstexp.pp import StainNormalizer, extract_patches, open_patch_cache


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    return synthetic(tmp_path_factory.mktemp("syn"), n_sections=1, n_patients=1, n_spots=40)[0]


@pytest.fixture(scope="module")
def target(shared_data: Path) -> np.ndarray:
    with Image.open(shared_data / "images" / "tiatoolbox_target_image.png") as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_cache_holds_normalised_patches(section, target, method, tmp_path) -> None:
    raw = extract_patches(section, store=tmp_path / "raw.zarr", size=64, progress=False)
    normalizer = StainNormalizer(method=method).fit(target)
    normed = extract_patches(
        section,
        store=tmp_path / "norm.zarr",
        size=64,
        stain_normalizer=normalizer,
        progress=False,
    )
    expected = normalizer.transform(np.asarray(raw.patches[:]))
    np.testing.assert_array_equal(np.asarray(normed.patches[:]), expected)
    assert not np.array_equal(np.asarray(raw.patches[:]), expected)
    assert method in str(normed.attrs)
    # A cache made without normalisation is never silently reused for a normalised request.
    from mclstexp.exceptions import CacheMismatchError

    with pytest.raises(CacheMismatchError):
        extract_patches(
            section,
            store=tmp_path / "raw.zarr",
            size=64,
            stain_normalizer=normalizer,
            progress=False,
        )


def test_cli_stain_flags(section, shared_data: Path, tmp_path) -> None:
    xy = np.asarray(section.obsm["spatial"])
    csv = tmp_path / "spots.csv"
    csv.write_text("id,x,y\n" + "".join(f"s{i},{x},{y}\n" for i, (x, y) in enumerate(xy)))
    store = tmp_path / "cli.zarr"
    slide = section.uns["mclstexp"]["slide_path"]
    rc = tile_main(
        [
            slide,
            "--spots",
            str(csv),
            "--out",
            str(store),
            "--patch-size",
            "64",
            "--stain-normalize",
            "macenko",
            "--stain-target",
            str(shared_data / "images" / "tiatoolbox_target_image.png"),
        ]
    )
    assert rc == 0
    cache = open_patch_cache(store)
    assert len(cache) == len(xy) and "macenko" in str(cache.attrs)
