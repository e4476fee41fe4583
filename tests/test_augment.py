"""The fused native augmentation kernel against the torch implementation (its oracle)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mclstexp import _native  # noqa: E402
from mclstexp.train.augment import (  # noqa: E402
    augment_batch,
    augment_torch,
    draw_augment_params,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def gen(seed: int):
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, h: int = 224, w: int = 224, seed: int = 0) -> np.ndarray:
    """Tissue-like test images: smooth colour waves plus noise (like the benchmark's)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        base = 150 + 60 * np.sin(xx / (7 + i % 13) + yy / (5 + i % 7))
        out[i] = np.clip(base[..., None] + rng.normal(0, 12, (h, w, 3)), 0, 255)
    return out


def native(x: np.ndarray, **kw) -> np.ndarray:
    n = len(x)
    p = {
        "brightness": np.ones(n),
        "contrast": np.ones(n),
        "saturation": np.ones(n),
        "flip": np.zeros(n, bool),
        "angle": np.zeros(n),
    }
    p.update(kw)
    return _native.augment_patches_uint8(
        x, p["brightness"], p["contrast"], p["saturation"], p["flip"], p["angle"]
    )


def test_augmentation_geometry_colour_and_determinism() -> None:
    tv = pytest.importorskip("torchvision.transforms.functional")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(60, 190, size=(6, 20, 20, 3), dtype=np.uint8))
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    assert torch.equal(augment_batch(x, g(0)), augment_batch(x, g(0)))
    assert not torch.equal(augment_batch(x, g(0)), augment_batch(x, g(1)))
    # nothing enabled: identity
    assert torch.equal(augment_batch(x, g(0), jitter=0, flip=False, rotation=0), x)
    # flips only: each image is itself or its mirror, both occur
    out = augment_batch(x, g(3), jitter=0, rotation=0)
    mirrored = [torch.equal(o, i.flip(1)) for o, i in zip(out, x, strict=True)]
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and any(mirrored) and any(same)
    # rotation keeps the centre pixel and makes black corners for a 45-degree-ish angle
    rot = augment_batch(x, g(5), jitter=0, flip=False)
    assert torch.equal(rot[:, 10, 10], x[:, 10, 10]) or (rot[:, 0, 0] == 0).any()
    # colour: the fused map equals torchvision's brightness -> contrast -> saturation
    img = torch.from_numpy(rng.integers(90, 160, size=(1, 32, 32, 3), dtype=np.uint8))
    gen = g(7)
    out = augment_batch(img, gen, flip=False, rotation=0, jitter=0.2)
    gen = g(7)
    bf, cf, sf = (
        float(torch.rand(1, generator=gen, dtype=torch.float64) * 0.4 + 0.8) for _ in range(3)
    )
    ref = img[0].permute(2, 0, 1).double() / 255  # float reference (uint8 torchvision truncates)
    ref = tv.adjust_saturation(tv.adjust_contrast(tv.adjust_brightness(ref, bf), cf), sf) * 255
    diff = (out[0].permute(2, 0, 1).double() - ref).abs()
    assert diff.mean() < 0.6 and diff.max() <= 1.5


@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_native_equals_torch_implementation_up_to_rare_rounding(kind) -> None:
    # Measured on 6 x 32 patches of 224 x 224 (smooth and noise images): 65 of 28.9 M values
    # (2.2e-6) differ, each by exactly one grey level (the torch version sums its 4 x 3 colour
    # matrix product in BLAS order); the geometry is identical (both use fused multiply-adds).
    rng = np.random.default_rng(1)
    if kind == "smooth":
        x = smooth_images(32, seed=2)
    else:
        x = rng.integers(0, 256, size=(32, 224, 224, 3), dtype=np.uint8)
    t = torch.from_numpy(x)
    ref = augment_torch(t, draw_augment_params(32, gen(5)))
    out = augment_batch(t, gen(5))
    d = (ref.int() - out.int()).abs()
    assert d.max().item() <= 1
    assert (d > 0).float().mean().item() <= 1e-5


@pytest.mark.parametrize("shape", [(8, 20, 20), (8, 33, 47), (8, 50, 9), (3, 1, 1)])
def test_native_equals_torch_on_small_and_non_square_images(shape) -> None:
    x = torch.from_numpy(
        np.random.default_rng(3).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    )
    ref = augment_torch(x, draw_augment_params(shape[0], gen(9)))
    out = augment_batch(x, gen(9))
    assert (ref.int() - out.int()).abs().max().item() <= 1


def test_non_square_rotation_stays_in_bounds_regression() -> None:
    # the torch version's padding was sized from max(H, W) only: a 33 x 47 batch rotated by
    # ~90 degrees indexed outside its buffer (RuntimeError); both paths now handle it
    x = torch.full((4, 33, 47, 3), 100, dtype=torch.uint8)
    p = draw_augment_params(4, gen(0), jitter=0)
    p.angle[:] = [90.0, -90.0, 45.0, 135.0]
    ref = augment_torch(x, p)
    got = native(x.numpy(), angle=p.angle, flip=p.flip)
    assert np.array_equal(ref.numpy(), got)
    assert (got == 0).any() and (got == 100).any()


def test_flip_and_quarter_turns_are_exact() -> None:
    x = smooth_images(4, 24, 24, seed=4)
    # flip: mirrored columns
    assert np.array_equal(native(x, flip=np.ones(4, bool)), x[:, :, ::-1])
    # +90 degrees is counter-clockwise (numpy's rot90), -90 clockwise, 180 both flips
    assert np.array_equal(native(x, angle=np.full(4, 90.0)), np.rot90(x, 1, axes=(1, 2)))
    assert np.array_equal(native(x, angle=np.full(4, -90.0)), np.rot90(x, -1, axes=(1, 2)))
    assert np.array_equal(native(x, angle=np.full(4, 180.0)), x[:, ::-1, ::-1])
    # flip first, then rotate
    both = native(x, angle=np.full(4, 90.0), flip=np.ones(4, bool))
    assert np.array_equal(both, np.rot90(x[:, :, ::-1], 1, axes=(1, 2)))
    # the torch version agrees exactly on these
    p = draw_augment_params(4, gen(0), jitter=0)
    p.angle[:] = 90.0
    p.flip[:] = True
    assert np.array_equal(augment_torch(torch.from_numpy(x), p).numpy(), both)


def test_fill_is_black_and_normalises_like_a_black_pixel() -> None:
    x = np.full((2, 16, 16, 3), 200, np.uint8)
    kw = {
        "brightness": np.array([1.5, 0.5]),
        "contrast": np.array([0.5, 1.5]),
        "saturation": np.array([1.2, 0.7]),
        "angle": np.array([45.0, -45.0]),
    }
    out = native(x, **kw)
    assert (out[:, 0, 0] == 0).all() and (out[:, -1, -1] == 0).all()  # corners: fill
    assert (out[:, 8, 8] > 0).all()  # centre: image
    args = [x] + [kw[k] for k in ("brightness", "contrast", "saturation")]
    t = _native.augment_patches_tensor(*args, np.zeros(2, bool), kw["angle"], MEAN, STD)
    assert t.shape == (2, 3, 16, 16) and t.dtype == np.float32
    # bit-identical to normalising the uint8 result in float32 (as the model does)
    ref = (out.astype(np.float32) / np.float32(255) - np.float32(MEAN)) / np.float32(STD)
    assert np.array_equal(t, ref.transpose(0, 3, 1, 2))
    assert np.array_equal(
        t[:, :, 0, 0], np.broadcast_to((0 - np.float32(MEAN)) / np.float32(STD), (2, 3))
    )


def test_augment_batch_outputs_and_threads() -> None:
    x = torch.from_numpy(smooth_images(6, 32, 32, seed=5))
    u8 = augment_batch(x, gen(1))
    assert u8.dtype == torch.uint8 and u8.shape == x.shape
    assert torch.equal(augment_batch(x, gen(1), n_threads=1), augment_batch(x, gen(1), n_threads=2))
    assert torch.equal(augment_batch(x.numpy(), gen(1)), u8)  # numpy input
    f = augment_batch(x, gen(1), normalize=(MEAN, STD))
    assert f.dtype == torch.float32 and f.shape == (6, 3, 32, 32)
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(f, (u8.permute(0, 3, 1, 2).float().div(255.0) - m) / s)
    unit = augment_batch(x, gen(1), normalize=((0, 0, 0), (1, 1, 1)))
    assert torch.equal(unit, u8.permute(0, 3, 1, 2).float().div(255.0))
    buf = torch.empty(6, 3, 32, 32)
    assert augment_batch(x, gen(1), normalize=(MEAN, STD), out=buf) is buf
    assert torch.equal(buf, f)
    buf8 = torch.empty_like(x)
    assert torch.equal(augment_batch(x, gen(1), out=buf8), u8)
    # parameters are drawn in the documented order from the generator
    g = gen(1)
    draws = [torch.rand(6, generator=g, dtype=torch.float64) for _ in range(5)]
    p = draw_augment_params(6, gen(1))
    np.testing.assert_array_equal(p.brightness, (draws[0] * 1.0 + 0.5).numpy())
    np.testing.assert_array_equal(p.flip, (draws[3] < 0.5).numpy())
    np.testing.assert_array_equal(p.angle, (draws[4] * 360 - 180).numpy())


def test_bad_arguments_raise_value_errors_naming_them() -> None:
    x = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="images"):
        augment_batch(x.float(), gen(0))
    with pytest.raises(ValueError, match="images"):
        augment_batch(x[..., :2], gen(0))
    with pytest.raises(ValueError, match="images"):
        augment_batch(x[0], gen(0))
    with pytest.raises(ValueError, match="normalize"):
        augment_batch(x, gen(0), normalize=((0, 0), (1, 1)))
    with pytest.raises(ValueError, match="out"):
        augment_batch(x, gen(0), out=torch.empty(2, 8, 8, 3))  # float for uint8 output
    with pytest.raises(ValueError, match="out"):
        augment_batch(x, gen(0), normalize=(MEAN, STD), out=torch.empty(2, 8, 8, 3))
    a = x.numpy()
    one, no = np.ones(2), np.zeros(2, bool)
    with pytest.raises(ValueError, match="brightness"):
        _native.augment_patches_uint8(a, np.ones(3), one, one, no, one)
    with pytest.raises(ValueError, match="contrast"):
        _native.augment_patches_uint8(a, one, np.array([1.0, -1.0]), one, no, one)
    with pytest.raises(ValueError, match="angle"):
        _native.augment_patches_uint8(a, one, one, one, no, np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="patches"):
        _native.augment_patches_uint8(a[:, ::2], one, one, one, no, one)  # not contiguous
    with pytest.raises(ValueError, match="patches"):
        _native.augment_patches_uint8(np.zeros((2, 8, 8, 4), np.uint8), one, one, one, no, one)
    with pytest.raises(ValueError, match="std"):
        _native.augment_patches_tensor(a, one, one, one, no, one, MEAN, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="out"):
        _native.augment_patches_tensor(
            a, one, one, one, no, one, MEAN, STD, out=np.empty((2, 8, 8, 3), np.float32)
        )


# ----------------------------------------------------------------------------- batch pipeline


def _zarr_patches(path, patches: np.ndarray, chunk: int, **kw):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        str(path), shape=patches.shape, chunks=(chunk, *patches.shape[1:]), dtype="uint8", **kw
    )
    z[:] = patches
    return zarr.open_array(str(path), mode="r")


def _sections(tmp_path):
    import anndata as ad
    import pandas as pd

    from mclstexp.train.sections import TrainingSection

    secs = []
    for k, lazy in enumerate((False, True)):
        n = 7 + k
        x = smooth_images(n, 16, 16, seed=10 + k)
        obs = pd.DataFrame(
            {"array_row": np.arange(n), "array_col": np.zeros(n, int)},
            index=[f"{k}_{i}" for i in range(n)],
        )
        adata = ad.AnnData(np.ones((n, 2), np.float32), obs=obs)
        patches = _zarr_patches(tmp_path / f"{k}.zarr", x, chunk=2) if lazy else x
        secs.append(TrainingSection(adata, patches, name=f"s{k}", in_memory=False))
    return secs


@pytest.mark.parametrize("image_format", ["uint8", "unit"])
def test_batch_dataset_gathers_and_augments_like_augment_batch(tmp_path, image_format) -> None:
    from mclstexp.train.loader import BatchDataset

    secs = _sections(tmp_path)
    assert isinstance(secs[0].patches, np.ndarray) and not isinstance(secs[1].patches, np.ndarray)
    every = np.concatenate([secs[0].patches, np.asarray(secs[1].patches)])
    seqs = [np.array([8, 2, 14]), np.array([0, 9, 3, 13])]  # both sections, interleaved
    ids = np.concatenate(seqs)
    plain = BatchDataset(secs, augment=False, features=None, image_format=image_format)
    got = plain[(0, seqs)]["images"]
    assert got.dtype == torch.uint8  # without augmentation the loader always sends uint8
    np.testing.assert_array_equal(got.numpy(), every[ids])
    aug = BatchDataset(secs, augment=True, features=None, image_format=image_format)
    norm = ((0, 0, 0), (1, 1, 1)) if image_format == "unit" else None
    want = augment_batch(torch.from_numpy(every[ids]), gen(42), normalize=norm)
    assert torch.equal(aug[(42, seqs)]["images"], want)
    # a worker's augmented uint8 batch becomes exactly the main process's unit batch
    u8 = BatchDataset(secs, augment=True, features=None, image_format="uint8")[(42, seqs)]
    assert torch.equal(aug.model_images(u8["images"]), aug[(42, seqs)]["images"])
    assert aug.model_images(want) is want
    # a ring of reused buffers gives the same batches (and does reuse them)
    ring = BatchDataset(
        secs, augment=True, features=None, image_format=image_format, reuse_buffers=2
    )
    small = [np.array([1, 2])]
    first = ring[(42, seqs)]["images"]
    assert torch.equal(first, want)
    second = ring[(7, small)]["images"]
    assert torch.equal(second, aug[(7, small)]["images"])
    third = ring[(42, seqs)]["images"]
    assert third.data_ptr() == first.data_ptr() and torch.equal(third, want)
    with pytest.raises(ValueError, match="image_format"):
        BatchDataset(secs, augment=True, features=None, image_format="float16")
