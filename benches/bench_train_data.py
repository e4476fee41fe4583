"""Training data pipeline and CPU training-step throughput.

Run: ``pytest benches/bench_train_data.py --benchmark-only -s`` (prints patches/s and spots/s).

- data pipeline: random batches of 128 spots from a Zarr cache of 224 x 224 patches (one chunk
  per patch, zstd), read lazily per batch ("zarr") or loaded into RAM once ("ram", the
  TrainingSection default for caches up to 4 GiB), with and without augmentation (colour
  jitter, flip, rotation), through a DataLoader with 0 and 2 workers. Target >= 1,500
  patches/s on 2 cores. Besides wall-clock patches/s, CPU time (this process + its workers) is
  measured: ``n_cores / cpu_seconds_per_patch`` is the rate 2 idle cores would sustain, which
  matters on a shared machine where wall time is inflated by other processes.
- training step: MclSTExp with a ResNet-18 backbone, batch 32, forward + backward + Adam on CPU.
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from mclstexp.train.data import SequenceSampler, TrainingSection  # noqa: E402
from mclstexp.train.loop import _BatchDataset  # noqa: E402

N = 1024
BATCH = 128


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "patches.zarr"
    z = zarr.open_array(
        path, mode="w", shape=(N, 224, 224, 3), chunks=(1, 224, 224, 3), dtype="uint8"
    )
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    for s in range(0, N, 64):
        block = np.empty((64, 224, 224, 3), np.uint8)
        for i in range(64):
            base = 150 + 60 * np.sin(xx / (7 + i % 13) + yy / (5 + i % 7))
            block[i] = np.clip(base[..., None] + rng.normal(0, 12, (224, 224, 3)), 0, 255)
        z[s : s + 64] = block
    side = int(np.ceil(np.sqrt(N)))
    obs = pd.DataFrame(
        {"array_row": np.arange(N) // side, "array_col": np.arange(N) % side},
        index=[f"s{i}" for i in range(N)],
    )
    adata = ad.AnnData(rng.random((N, 50), dtype=np.float32), obs=obs)
    return TrainingSection(adata, zarr.open_array(path, mode="r"), name="bench", in_memory=False)


def _cpu() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _epoch(section: TrainingSection, *, augment: bool, workers: int) -> tuple[int, float, float]:
    sampler = SequenceSampler([section.positions], mode="batch", batch_size=BATCH, seed=0)
    ds = _BatchDataset([section], augment=augment, features=None)
    keys = [(i, b) for i, b in enumerate(sampler.batches(0))]
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=None,
        sampler=keys,
        num_workers=workers,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )
    t0, c0 = time.perf_counter(), _cpu()
    n = 0
    for batch in loader:
        n += batch["images"].shape[0]
    del loader  # joins the workers, so their CPU time is counted
    return n, time.perf_counter() - t0, _cpu() - c0


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("storage", ["zarr", "ram"])
def test_data_pipeline_throughput(benchmark, cache, storage, augment, workers) -> None:
    import os

    torch.set_num_threads(1 if workers else 2)
    section = cache if storage == "zarr" else TrainingSection(cache.adata, cache.patches)
    assert isinstance(section.patches, np.ndarray) == (storage == "ram")
    result = {}

    def run() -> None:
        n, dt, cpu = _epoch(section, augment=augment, workers=workers)
        result.update(rate=n / dt, per_core=n / cpu)

    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    benchmark.extra_info["patches_per_s"] = round(result["rate"], 1)
    benchmark.extra_info["patches_per_cpu_s"] = round(result["per_core"], 1)
    print(
        f"\ndata pipeline {storage} augment={augment} workers={workers}: "
        f"{result['rate']:.0f} patches/s wall, {result['per_core']:.0f} patches per CPU-second "
        f"(2 idle cores: ~{2 * result['per_core']:.0f}/s); load avg {os.getloadavg()[0]:.1f}"
    )


def test_augmentation_only_throughput(benchmark) -> None:
    from mclstexp.train.data import augment_batch

    torch.set_num_threads(1)
    x = torch.randint(0, 256, (BATCH, 224, 224, 3), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    cpu = []

    def run() -> None:
        c0 = time.process_time()
        augment_batch(x, gen)
        cpu.append(time.process_time() - c0)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    rate = BATCH / benchmark.stats.stats.mean
    per_cpu = BATCH / (sum(cpu[-3:]) / 3)
    benchmark.extra_info["patches_per_s_one_thread"] = round(rate, 1)
    benchmark.extra_info["patches_per_cpu_s"] = round(per_cpu, 1)
    print(f"\naugment_batch, one thread: {rate:.0f} patches/s wall, {per_cpu:.0f} per CPU-s")


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_training_step_resnet18(benchmark, threads) -> None:
    from mclstexp.models import MclSTExp, ModelConfig, clip_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MclSTExp(
        ModelConfig(backbone="resnet18", n_genes=785, position_rows=64, position_cols=64)
    ).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-3)
    b = 32
    images = torch.randint(0, 256, (b, 224, 224, 3), dtype=torch.uint8)
    expr = torch.rand(b, 785)
    pos = torch.randint(0, 64, (b, 2))

    cpu = []

    def step() -> None:
        c0 = time.process_time()
        a, s, scale = model(images, expr, pos)
        loss = clip_loss(a, s, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cpu.append(time.process_time() - c0)

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    rate = b / benchmark.stats.stats.mean
    per_cpu = b / (sum(cpu[-3:]) / 3)
    benchmark.extra_info["spots_per_s"] = round(rate, 1)
    benchmark.extra_info["spots_per_cpu_s"] = round(per_cpu, 1)
    print(
        f"\nCPU training step, resnet18, batch {b}, {threads} thread(s): {rate:.1f} spots/s "
        f"wall, {per_cpu:.1f} spots per CPU-second"
    )
