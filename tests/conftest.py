"""Shared pytest fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never download: the Hugging Face client (imported later, by timm) reads these once.
# HF_HOME points at an empty folder, so no test depends on this machine's cache; tests that
# need cached weights write a fake hub (tests/_fake_hub.py).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mclstexp-tests-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
os.environ.pop("HF_HUB_CACHE", None)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder ``../shared/data``; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA
