"""pp.layout: tensor layout conversion against numpy references (exact)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mclstexp.pp import from_tensor_layout, to_tensor_layout
from mclstexp.pp.layout import IMAGENET_MEAN, IMAGENET_STD


def ref_forward(patches: np.ndarray, mean: object, std: object) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    return np.moveaxis((patches.astype(np.float32) / 255 - m) / s, -1, -3)


def ref_inverse(tensors: np.ndarray, mean: object, std: object) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    x = (np.moveaxis(tensors.astype(np.float32), -3, -1) * s + m) * np.float32(255)
    x = np.nan_to_num(x, nan=0.0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_forward_is_bit_identical_to_numpy_float32() -> None:
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (5, 17, 23, 3), dtype=np.uint8)
    out = to_tensor_layout(patches, IMAGENET_MEAN, IMAGENET_STD, n_threads=2)
    assert out.shape == (5, 3, 17, 23) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, ref_forward(patches, IMAGENET_MEAN, IMAGENET_STD))


def test_every_byte_value_per_channel() -> None:
    values = np.arange(256, dtype=np.uint8)
    patches = np.stack([values, values[::-1], np.roll(values, 7)], axis=-1).reshape(1, 16, 16, 3)
    mean, std = (0.1, 0.5, 0.9), (0.3, 0.01, 2.0)
    np.testing.assert_array_equal(
        to_tensor_layout(patches, mean, std), ref_forward(patches, mean, std)
    )


def test_single_patch_and_scalar_mean_std() -> None:
    patch = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = to_tensor_layout(patch, 0.5, 0.25)
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, ref_forward(patch, 0.5, 0.25))
    np.testing.assert_array_equal(from_tensor_layout(out, 0.5, 0.25), patch)


def test_non_contiguous_input() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    view = big[::2, 1::2, ::3]
    np.testing.assert_array_equal(
        to_tensor_layout(view), ref_forward(view, IMAGENET_MEAN, IMAGENET_STD)
    )


@settings(max_examples=60, deadline=None)
@given(
    patches=arrays(
        np.uint8, st.tuples(st.integers(0, 3), st.integers(1, 9), st.integers(1, 9), st.just(3))
    ),
    mean=st.tuples(*[st.floats(-2, 2, width=32)] * 3),
    std=st.tuples(*[st.floats(0.0009765625, 10, width=32)] * 3),
)
def test_forward_and_round_trip_property(
    patches: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    out = to_tensor_layout(patches, mean, std, n_threads=2)
    np.testing.assert_array_equal(out, ref_forward(patches, mean, std))
    back = from_tensor_layout(out, mean, std, n_threads=2)
    np.testing.assert_array_equal(back, ref_inverse(out, mean, std))
    if all(s <= 1 for s in std):  # no float32 rounding beyond half a grey level
        np.testing.assert_array_equal(back, patches)


@settings(max_examples=40, deadline=None)
@given(
    tensors=arrays(
        np.float32,
        st.tuples(st.integers(1, 2), st.just(3), st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
)
def test_inverse_of_arbitrary_floats_is_clipped_like_numpy(tensors: np.ndarray) -> None:
    with np.errstate(invalid="ignore", over="ignore"):
        want = ref_inverse(tensors, IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_array_equal(from_tensor_layout(tensors), want)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: to_tensor_layout(np.zeros((2, 4, 4, 3), np.float32)),
            "patches: expected dtype uint8",
        ),
        (lambda: to_tensor_layout(np.zeros((2, 4, 4, 4), np.uint8)), r"patches: expected shape"),
        (lambda: to_tensor_layout(np.zeros((4, 4), np.uint8)), r"patches: expected shape"),
        (lambda: to_tensor_layout(np.zeros((1, 4, 4, 3), np.uint8), std=(1, 0, 1)), "std"),
        (lambda: to_tensor_layout(np.zeros((1, 4, 4, 3), np.uint8), mean=(1, 2)), "mean"),
        (lambda: to_tensor_layout(np.zeros((1, 4, 4, 3), np.uint8), mean=np.nan), "mean"),
        (lambda: to_tensor_layout(np.zeros((1, 4, 4, 3), np.uint8), n_threads=0), "n_threads"),
        (
            lambda: from_tensor_layout(np.zeros((1, 4, 4, 3), np.float32)),
            r"tensors: expected shape",
        ),
        (lambda: from_tensor_layout(np.zeros((3, 4), np.float32)), r"tensors: expected shape"),
        (lambda: from_tensor_layout(np.zeros((3, 4, 4), np.complex64)), "tensors"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_gil_is_released_during_conversion() -> None:
    patches = np.zeros((256, 224, 224, 3), np.uint8)
    done = threading.Event()
    progress = 0

    def work() -> None:
        for _ in range(3):
            to_tensor_layout(patches, n_threads=1)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        progress += 1
    worker.join()
    assert progress > 1000
