"""The native kernels' instruction-set level (``mclstexp._native.simd_level``)."""

from __future__ import annotations

import os
import subprocess
import sys

from mclstexp import _native

LEVELS = ("portable", "avx2+fma", "avx512")


def _level_in_subprocess(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "MCLSTEXP_NO_AVX512"}
    result = subprocess.run(
        [sys.executable, "-c", "from mclstexp import _native; print(_native.simd_level())"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_level_is_one_of_the_known_names() -> None:
    assert _native.simd_level() in LEVELS


def test_no_avx512_variable_caps_the_level_at_avx2() -> None:
    best = _level_in_subprocess()
    capped = _level_in_subprocess(MCLSTEXP_NO_AVX512="1")
    # On an AVX-512 machine the variable selects the AVX2 kernels; elsewhere it changes nothing.
    expected = "avx2+fma" if best == "avx512" else best
    assert capped == expected


def test_retrieval_kernel_follows_the_level() -> None:
    # The index reports its kernel by its own names ("avx512f" for the AVX-512F tile).
    names = {"portable": "portable", "avx2+fma": "avx2+fma", "avx512": "avx512f"}
    index = _native._ExactIndex(4)
    assert index.kernel == names[_native.simd_level()]
