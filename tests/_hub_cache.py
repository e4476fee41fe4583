"""The Hugging Face hub cache layout, shared by the fake model hub and the fake dataset hub.

``<cache>/<kind>s--ORG--NAME/refs/main`` names a revision and ``snapshots/<revision>/`` holds the
files (the client symlinks them to ``blobs/``; plain files read the same), which is all
``huggingface_hub`` needs to resolve a repository offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def snapshot_dir(cache: Path, repo_id: str, *, kind: str, revision: str = REVISION) -> Path:
    """Create the cache entry of ``repo_id`` (``kind`` ``"model"`` or ``"dataset"``) with
    ``refs/main`` naming ``revision``; returns its (existing) snapshot folder."""
    repo = Path(cache) / f"{kind}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    return snap
