"""The measurements of ``mclstexp bench gpu`` (run by :mod:`mclstexp.workflow.bench_gpu`).

Each function measures one thing on one device with sizes from :class:`Sizes` (full or smoke) and
returns a JSON-able dict. Throughputs are counted after warm-up steps, with the device
synchronised around the timed region; spots/s counts the spots of the contrastive batch.
Training steps go through :func:`mclstexp.train.train_step`, the step the trainer runs (pinned
host batch -> device, augmentation on the device, autocast, float32 loss, AMP scaler, clipping).
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mclstexp.models import load_preset
from mclstexp.train import TrainingSection, epoch_data, setup_training, train_step
from mclstexp.train.loader import epoch_keys

__all__ = [
    "PRECISIONS",
    "Sizes",
    "augment_parity",
    "ddp_gather",
    "embed_and_retrieve",
    "environment",
    "loader_throughput",
    "step_parity",
    "synthetic_sections",
    "train_throughput",
]

#: Training precisions measured: label -> ``TrainConfig.amp``.
PRECISIONS = {"fp32": "none", "bf16": "bf16", "fp16+scaler": "fp16"}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the real ones (``full``) or tiny ones that run on a CPU in seconds."""

    patch: int
    batch: int
    spots: int  # per section, two sections
    genes: int
    step_seconds: float  # timed region per configuration
    workers: tuple[int, ...]
    retrieval: tuple[int, int, int, int]  # N, Q, d, k
    embed: int
    parity_batch: int
    backbone: str | None  # None: the preset's own

    @classmethod
    def full(cls) -> Sizes:
        return cls(224, 128, 1024, 785, 6.0, (0, 4, 8), (100_000, 10_000, 256, 50), 2048, 32, None)

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(32, 8, 48, 16, 0.3, (0, 2), (2_000, 64, 32, 10), 64, 8, "test_resnet")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _patches(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Tissue-like uint8 patches: smooth pink/purple colour fields plus grain (compress like H&E,
    unlike white noise)."""
    coarse = rng.uniform(0, 1, size=(n, 4, 4, 1)).astype(np.float32)
    field = np.repeat(np.repeat(coarse, size // 4 + 1, 1), size // 4 + 1, 2)[:, :size, :size]
    pink, purple = np.array([232, 170, 200], np.float32), np.array([110, 60, 150], np.float32)
    img = field * purple + (1 - field) * pink + rng.normal(0, 12, (n, size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_sections(sizes: Sizes, *, seed: int = 0, lazy_root: Path | None = None) -> list:
    """Two training sections of random expression on a grid with tissue-like patches; with
    ``lazy_root`` the patches are a Zarr v3 array in the patch cache's chunk layout (read lazily
    by the direct chunk reader), else numpy arrays in RAM (made once per process and sizes)."""
    if lazy_root is None:
        return list(_ram_sections(sizes, seed))
    return _sections(sizes, seed, lazy_root)


@functools.lru_cache(maxsize=2)
def _ram_sections(sizes: Sizes, seed: int) -> tuple:
    return tuple(_sections(sizes, seed, None))


def _sections(sizes: Sizes, seed: int, lazy_root: Path | None) -> list:
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(sizes.spots)))
    out = []
    for s in range(2):
        idx = np.arange(sizes.spots)
        obs = pd.DataFrame(
            {"array_row": idx // side, "array_col": idx % side},
            index=[f"S{s}_{i}" for i in idx],
        )
        x = np.log1p(rng.poisson(2.0, (sizes.spots, sizes.genes))).astype(np.float32)
        adata = ad.AnnData(
            x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(sizes.genes)])
        )
        adata.uns["mclstexp"] = {"section": f"S{s}"}
        patches: Any = _patches(rng, sizes.spots, sizes.patch)
        if lazy_root is not None:
            patches = _zarr_patches(lazy_root / f"S{s}.zarr", patches)
        out.append(TrainingSection(adata, patches, name=f"S{s}", in_memory=lazy_root is None))
    return out


def _zarr_patches(path: Path, patches: np.ndarray) -> Any:
    import zarr
    from zarr.codecs import BytesCodec, ZstdCodec

    arr = zarr.create_array(
        str(path),
        shape=patches.shape,
        chunks=(32, *patches.shape[1:]),
        dtype="uint8",
        serializer=BytesCodec(),
        compressors=ZstdCodec(level=3),
    )
    arr[:] = patches
    return arr


def environment(dev: torch.device) -> dict[str, Any]:
    """Versions, the device and its free memory, the CPU and the native SIMD level."""
    import os
    import platform

    import mclstexp
    from mclstexp import _native

    info: dict[str, Any] = {
        "mclstexp": mclstexp.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": str(dev),
        "native_simd": getattr(_native, "simd_level", lambda: "unknown")(),
    }
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        props = torch.cuda.get_device_properties(dev)
        info.update(
            gpu=torch.cuda.get_device_name(dev),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            capability=f"{props.major}.{props.minor}",
            free_gib=round(free / 2**30, 1),
            total_gib=round(total / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
        )
    return info


def _preset(name: str, sizes: Sizes, **overrides: Any) -> Any:
    extra = dict(overrides)
    extra.setdefault("train__batch_size", sizes.batch)
    extra.setdefault("train__patch_size", sizes.patch)
    extra.setdefault("model__weights", None)  # throughput only; the device has no network
    if sizes.backbone is not None:  # smoke: a tiny timm network, data-sized tables
        extra.update(
            model__backbone=sizes.backbone,
            model__drop_final_activation=False,
            model__position_rows=0,
            model__position_cols=0,
        )
    return load_preset(name, **extra)


@contextlib.contextmanager
def _run(preset: Any, sections: list, dev: torch.device, seed: int = 0) -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="mclstexp-gpu-") as tmp:
        run = setup_training(
            sections, preset, run_dir=tmp, device=dev, seed=seed, resume=False, progress=False
        )
        yield run


def _first_batch(run: Any) -> tuple[Any, dict[str, torch.Tensor], int]:
    data = epoch_data(run)
    keys = epoch_keys(data.plan, run.seed, 0)
    data.keys.keys = keys
    batch = next(iter(data.loader))
    return data, batch, keys[0][0]


def _timed(step: Callable[[], Any], dev: torch.device, seconds: float, warmup: int = 3) -> dict:
    for _ in range(warmup):
        step()
    _sync(dev)
    n, t0 = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 5 == 0:
            _sync(dev)
    _sync(dev)
    return {"steps": n, "seconds": time.perf_counter() - t0}


def train_throughput(
    preset_name: str, precision: str, dev: torch.device, sizes: Sizes, *, compile: bool = False
) -> dict[str, Any]:
    """Training steps/s and spots/s of a preset at one precision (optionally ``torch.compile``d),
    augmentation on the device when the preset asks for it there, and the peak device memory."""
    amp = PRECISIONS[precision]
    preset = _preset(preset_name, sizes, train__amp=amp, train__num_workers=0)
    # fp32 as PyTorch runs it by default (the original's setting): cuDNN TF32 on, matmul TF32
    # off; the trainer turns both on under AMP (process-wide flags, so set them for each run)
    torch.backends.cuda.matmul.allow_tf32 = amp != "none"
    torch.backends.cudnn.allow_tf32 = True
    sections = synthetic_sections(sizes)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with _run(preset, sections, dev) as run:
        data, batch, seed = _first_batch(run)
        spots = int(batch["mask"].sum())
        compile_s = None
        if compile:
            t0 = time.perf_counter()
            # inductor on the GPU; the smoke check on a CPU only walks the code path
            run.net = torch.compile(run.net, backend="inductor" if dev.type == "cuda" else "eager")
            train_step(run, data, batch, seed)
            _sync(dev)
            compile_s = round(time.perf_counter() - t0, 1)
        t = _timed(lambda: train_step(run, data, batch, seed), dev, sizes.step_seconds)
        loss = float(train_step(run, data, batch, seed))
    out = {
        "preset": preset_name,
        "backbone": preset.model.backbone,
        "precision": precision if dev.type == "cuda" else "fp32 (amp is CUDA-only)",
        "compiled": compile,
        "batch_spots": spots,
        "augment_on_device": bool(data.augment_on_device),
        "steps_per_s": round(t["steps"] / t["seconds"], 2),
        "spots_per_s": round(spots * t["steps"] / t["seconds"], 1),
        "loss_finite": bool(np.isfinite(loss)),
        "compile_s": compile_s,
        "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }
    if dev.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def loader_throughput(
    source: str, workers: int, augment_in_loader: bool, dev: torch.device, sizes: Sizes, root: Path
) -> dict[str, Any]:
    """Batches the training loader builds per second (no model): RAM-resident or lazily read
    Zarr patches, ``workers`` DataLoader processes, augmentation in the loader or not (on CUDA
    it runs on the device, and the loader only gathers uint8)."""
    lazy = root / f"zarr-{workers}-{int(augment_in_loader)}" if source == "zarr" else None
    sections = synthetic_sections(sizes, lazy_root=lazy)
    preset = _preset(
        "default",
        sizes,
        train__num_workers=workers,
        train__augment_on="loader" if augment_in_loader else "device",
    )
    with _run(preset, sections, dev) as run:  # the device decides the loader's image format
        data = epoch_data(run)
        keys = epoch_keys(data.plan, 0, 0)
        data.keys.keys = keys * max(1, int(40 // max(1, len(keys))))  # enough batches to time
        it = iter(data.loader)
        next(it)  # workers started, first batch built
        n, spots, t0 = 0, 0, time.perf_counter()
        for batch in it:
            n += 1
            spots += int(batch["mask"].sum())
            if time.perf_counter() - t0 > sizes.step_seconds:
                break
        seconds = time.perf_counter() - t0
        del it
    return {
        "source": source,
        "workers": workers,
        "augment": "loader (CPU kernel)" if augment_in_loader else "none (device augments)",
        "batches_per_s": round(n / seconds, 2),
        "spots_per_s": round(spots / seconds, 1),
    }


def augment_parity(dev: torch.device, sizes: Sizes, seed: int = 7) -> dict[str, Any]:
    """The device augmentation against the native CPU kernel on the same draws."""
    from mclstexp.train.augment import augment_batch

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(_patches(rng, sizes.batch, sizes.patch))
    cpu = augment_batch(images, torch.Generator().manual_seed(seed))
    other = augment_batch(images.to(dev), torch.Generator().manual_seed(seed)).cpu()
    diff = (cpu.int() - other.int()).abs()
    return {
        "images": int(images.shape[0]),
        "max_abs_diff": int(diff.max()),
        "fraction_differing": float((diff > 0).float().mean()),
        "ok": int(diff.max()) <= 1,
    }


def step_parity(dev: torch.device, sizes: Sizes) -> dict[str, Any]:
    """One fp32 training step of the ``default`` preset on the CPU and on ``dev`` from the same
    weights and batch (no augmentation, TF32 off): the losses before and after the step."""
    preset = _preset(
        "default",
        sizes,
        train__amp="none",
        train__augment=False,
        train__batch_size=sizes.parity_batch,
    )
    sections = synthetic_sections(sizes)
    losses = {}
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for where in ("cpu", str(dev)):
            with _run(preset, sections, torch.device(where)) as run:
                data, batch, seed = _first_batch(run)
                first = float(train_step(run, data, batch, seed))
                second = float(train_step(run, data, batch, seed))
                losses[where] = (first, second)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    (c1, c2), (g1, g2) = losses["cpu"], losses[str(dev)]
    rel = max(abs(c1 - g1) / abs(c1), abs(c2 - g2) / abs(c2))
    return {
        "loss_cpu": [c1, c2],
        "loss_device": [g1, g2],
        "max_relative_diff": rel,
        "ok": rel <= 1e-3,
    }


def embed_and_retrieve(dev: torch.device, sizes: Sizes) -> dict[str, Any]:
    """``tl.embed_patches`` images/s with the ``default`` model, and exact top-k of N x d
    references for Q queries: the native CPU index against torch on ``dev``."""
    from mclstexp.models import MclSTExp
    from mclstexp.retrieval import ExactIndex, make_index
    from mclstexp.tl import embed_patches

    mcfg = _preset("default", sizes).model
    mcfg.n_genes, mcfg.position_rows, mcfg.position_cols = sizes.genes, 64, 64
    model = MclSTExp(mcfg).to(dev).eval()
    patches = _patches(np.random.default_rng(1), sizes.embed, sizes.patch)
    embed_patches(model, patches[: min(256, len(patches))], device=dev)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    embed_patches(model, patches, device=dev, batch_size=256)
    _sync(dev)
    embed_s = time.perf_counter() - t0

    n, q, d, k = sizes.retrieval
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((q, d), dtype=np.float32)
    t0 = time.perf_counter()
    native = ExactIndex(ref)
    _, native_idx = native.search(queries, k)
    native_s = time.perf_counter() - t0
    index = make_index(ref, backend="torch", device=str(dev))
    index.search(queries[:64], k)  # warm-up (kernels, allocator)
    t0 = time.perf_counter()
    _, torch_idx = index.search(queries, k)
    torch_s = time.perf_counter() - t0
    overlap = np.mean(
        [len(set(a) & set(b)) / k for a, b in zip(native_idx, torch_idx, strict=True)]
    )
    return {
        "embed_images_per_s": round(len(patches) / embed_s, 1),
        "retrieval": {"N": n, "Q": q, "d": d, "k": k},
        "native_cpu_s": round(native_s, 3),
        "torch_device_s": round(torch_s, 3),
        "native_over_torch": round(native_s / torch_s, 2),
        "neighbour_overlap": round(float(overlap), 4),
    }


def ddp_gather(dev: torch.device) -> dict[str, Any]:
    """A process group of one rank (NCCL on CUDA, gloo on CPU) through the trainer's gather and a
    DistributedDataParallel wrapper: gathered negatives and their gradients equal the local ones."""
    import socket

    import torch.distributed as dist

    from mclstexp.models.loss import all_gather_with_grad, clip_loss

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(3)
        img = torch.randn(16, 8, generator=g).to(dev).requires_grad_()
        spot = torch.randn(16, 8, generator=g).to(dev).requires_grad_()
        scale = torch.tensor(1.0, device=dev)
        local = clip_loss(img, spot, scale)
        grad_local = torch.autograd.grad(local, [img, spot])
        gi, gs = all_gather_with_grad(img, always=True), all_gather_with_grad(spot, always=True)
        gathered = clip_loss(gi, gs, scale)
        grad_gathered = torch.autograd.grad(gathered, [img, spot])
        net = torch.nn.parallel.DistributedDataParallel(
            torch.nn.Linear(8, 8).to(dev),
            device_ids=[dev.index or 0] if dev.type == "cuda" else None,
        )
        net(img.detach()).sum().backward()
        grad_diff = max(
            float((a - b).abs().max()) for a, b in zip(grad_local, grad_gathered, strict=True)
        )
        loss_diff = abs(float(local.detach()) - float(gathered.detach()))
        return {
            "backend": backend,
            "world_size": dist.get_world_size(),
            "loss_diff": loss_diff,
            "grad_max_diff": grad_diff,
            "ddp_backward_ok": all(p.grad is not None for p in net.parameters()),
            "ok": loss_diff == 0.0 and grad_diff == 0.0,
        }
    finally:
        dist.destroy_process_group()
