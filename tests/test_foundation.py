"""The package foundation: lazy imports, GIL release, fork safety, the error funnel, stubs, CLIs."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import subprocess
import sys
import threading
import time

import pytest

import mclstexp
from mclstexp import _native


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_import_does_not_import_torch_and_is_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import mclstexp, mclstexp._native; "
        "dt = time.perf_counter() - t; print(int('torch' in sys.modules), dt)"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    has_torch, seconds = result.stdout.split()
    assert has_torch == "0", "import mclstexp imported torch"
    assert float(seconds) < 1.0


def test_native_version_matches_the_package() -> None:
    assert _native.__version__ == mclstexp.__version__


def test_gil_is_released_during_a_native_call() -> None:
    # One pool thread sleeps 4 x 150 ms inside Rust; meanwhile this thread must keep running Python.
    progress = 0
    done = threading.Event()

    def native_work() -> None:
        _native._diagnostic_sleep(4, 150, n_threads=1)
        done.set()

    worker = threading.Thread(target=native_work)
    worker.start()
    time.sleep(0.05)
    while not done.is_set():
        progress += 1
    worker.join()
    # With the GIL held the loop above could not run at all while the native call sleeps.
    assert progress > 10_000


def _use_pool_in_child(queue: mp.Queue) -> None:  # type: ignore[type-arg]
    queue.put(_native._diagnostic_sleep(8, 10, n_threads=2))


def test_thread_pool_works_after_fork() -> None:
    # Warm the pool in the parent so the child inherits a pool whose threads do not exist.
    assert _native._diagnostic_sleep(8, 10, n_threads=2) >= 1
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_use_pool_in_child, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("thread pool hung in a forked child")
    assert child.exitcode == 0
    assert queue.get(timeout=5) >= 1


def test_rust_error_becomes_value_error_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="n_threads"):
        _native._diagnostic_sleep(1, 1, n_threads=0)


def test_env_var_sets_default_pool_size() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mclstexp import _native; print(_native.default_num_threads())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "MCLSTEXP_NUM_THREADS": "3"},
        check=False,
    )
    assert result.stdout.strip() == "3", result.stderr


def test_stubs_match_the_built_module() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "mclstexp._native"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "command", [["mclstexp", "--version"], ["mclstexp", "--help"], ["mclstexp-tile", "--help"]]
)
def test_console_scripts_exit_zero(command: list[str]) -> None:
    exe = shutil.which(command[0])
    if exe is None:
        pytest.skip(f"{command[0]} is not on PATH (package not installed with its scripts)")
    result = subprocess.run([exe, *command[1:]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout


def test_exceptions_share_a_base_class() -> None:
    assert issubclass(mclstexp.SlideFormatError, mclstexp.MclstexpError)
    assert issubclass(mclstexp.NoTissueError, mclstexp.MclstexpError)
