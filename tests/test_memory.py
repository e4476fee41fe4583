"""The memory helpers: large blocks freed go back to the OS once ``map_large_blocks`` is set;
a process without a GPU does not load Triton."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mclstexp._memory import map_large_blocks, trim_heap


def test_the_helpers_answer_whether_they_acted() -> None:
    assert isinstance(trim_heap(), bool)
    assert isinstance(map_large_blocks(), bool)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc behaviour")
def test_a_freed_block_of_a_few_mb_leaves_the_resident_set() -> None:
    """Without the fixed threshold, glibc raises it to 32 MiB after the first large free: a
    later 8 MB block is then carved from the heap and stays resident after it is freed."""
    script = textwrap.dedent(
        """
        import sys
        from mclstexp._memory import map_large_blocks, _glibc
        if _glibc() is None:
            print("skip"); raise SystemExit
        if sys.argv[1] == "fixed":
            assert map_large_blocks()
        import numpy as np
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        big = np.ones(30 << 20, np.uint8); del big  # glibc: threshold -> 30 MiB
        held = [np.ones(8 << 20, np.uint8) for _ in range(8)]
        keep = np.ones(1 << 10, np.uint8)  # something allocated after the blocks
        before = rss()
        del held
        print(before - rss())
        """
    )
    freed = {}
    for mode in ("fixed", "default"):
        out = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        if out == ["skip"]:
            pytest.skip("not glibc")
        freed[mode] = int(out[-1])
    assert freed["fixed"] > 60 << 20, freed  # the 64 MB went back
    assert freed["fixed"] > freed["default"], freed


def _in_child(code: str, **env: str) -> list[str]:
    import os

    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return run.stdout.split()


_TRITON_PROBE = """
    import sys, torch
    if torch.cuda.is_available():
        print("gpu"); raise SystemExit
    from mclstexp.models.image_encoder import build_backbone
    m = build_backbone("resnet18")  # marks Triton absent before timm is first imported
    m(torch.rand(2, 3, 64, 64)).sum().backward()  # torch works without it
    from torch.utils._triton import has_triton_package
    print("torch._dynamo" in sys.modules, sys.modules.get("triton", "absent"), has_triton_package())
"""


def test_a_cpu_process_does_not_load_triton() -> None:
    """timm -> torchvision.ops -> torch._dynamo -> Triton: ~75 MB resident for GPU kernels a
    CPU-only process cannot run; torch must still work and see Triton as not installed."""
    pytest.importorskip("timm")
    out = _in_child(_TRITON_PROBE)
    if out == ["gpu"]:
        pytest.skip("a GPU is visible: Triton is kept")
    assert out == ["True", "None", "False"], out


def test_triton_is_kept_on_request() -> None:
    pytest.importorskip("timm")
    out = _in_child(_TRITON_PROBE, MCLSTEXP_KEEP_TRITON="1")
    if out == ["gpu"]:
        pytest.skip("a GPU is visible: Triton is kept")
    assert out[1] != "None", out
