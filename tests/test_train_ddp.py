"""Two-process gloo DDP on CPU: negatives gathered from all ranks make the distributed loss and
gradients those of one process over the union of the batches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(out: Path, world: int) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        try:
            log, _ = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("DDP worker timed out")
        assert p.returncode == 0, log


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_gloo_matches_single_process(tmp_path) -> None:
    import _ddp_worker

    _run(tmp_path, 2)
    assert "WORLD_SIZE" not in os.environ or os.environ["WORLD_SIZE"] == "1"
    _ddp_worker.main(tmp_path)  # the single-process reference, in this process
    r0 = torch.load(tmp_path / "world2_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "world2_rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "world1_rank0.pt", weights_only=True)
    # fixed batch: every rank's loss over the gathered batch == the single-process loss
    assert abs(float(r0["loss"]) - float(single["loss"])) < 1e-5
    assert abs(float(r1["loss"]) - float(single["loss"])) < 1e-5
    # DDP-averaged gradients == single-process gradients of the union batch
    assert r0["grads"].keys() == single["grads"].keys()
    for k, g in single["grads"].items():
        torch.testing.assert_close(r0["grads"][k], g, atol=1e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(r1["grads"][k], g, atol=1e-5, rtol=1e-4, msg=k)
    # whole runs: rank r takes global batches 2t + r, the reference takes their union
    assert len(r0["history"]) == 2
    for a, b in zip(r0["history"], single["history"], strict=True):
        assert abs(a - b) < 1e-5
    for k, v in single["state"].items():
        torch.testing.assert_close(r0["state"][k], v, atol=1e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(r1["state"][k], r0["state"][k], atol=0, rtol=0, msg=k)
    assert (tmp_path / "run2" / "model.pt").is_file()
