"""The training loop: AMP on CUDA, gradient clipping, checkpoint every epoch, exact resume, DDP.

Randomness is derived from ``(seed, epoch)`` (batch order) and ``(seed, epoch, rank, step)``
(augmentation), and the Python/numpy/torch/CUDA RNG states are checkpointed too, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run (on CPU, and
on GPU up to the non-determinism of CUDA kernels).

Run directory layout::

    run_dir/checkpoint.pt      full state after the last completed epoch (atomic writes)
    run_dir/model.pt           final weights + metadata (no optimiser), for prediction
    run_dir/log.jsonl          one JSON object per completed epoch
    run_dir/config.json        the configuration of the run
    run_dir/frozen_features/   frozen-encoder mode: backbone features per section (.npy) + meta
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mclstexp
from mclstexp.models.clip import MclSTExp
from mclstexp.models.config import ModelConfig, Preset, TrainConfig, load_preset
from mclstexp.models.inputs import BatchPlan
from mclstexp.models.loss import clip_loss, is_distributed, soft_target_loss
from mclstexp.models.runtime import autocast, backbone_features, resolve_device
from mclstexp.train import distributed as D
from mclstexp.train.augment import augment_batch
from mclstexp.train.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from mclstexp.train.loader import UNIT, BatchDataset, EpochKeys, epoch_keys
from mclstexp.train.sections import TrainingSection

__all__ = ["TrainResult", "train_model"]

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
LOG = "log.jsonl"


@dataclass
class TrainResult:
    """What :func:`train_model` returns."""

    model: MclSTExp
    history: list[dict[str, Any]]
    run_dir: Path
    checkpoint: Path
    genes: list[str]
    model_config: ModelConfig
    train_config: TrainConfig
    frozen_features: list[np.ndarray] | None = field(default=None, repr=False)


def _resolve_config(config: Any) -> tuple[ModelConfig, TrainConfig]:
    if config is None:
        config = "default"
    if isinstance(config, (str, Path)):
        config = load_preset(config)
    if isinstance(config, (Preset, tuple, list)) and len(config) == 2:
        m, t = config
        if isinstance(m, ModelConfig) and isinstance(t, TrainConfig):
            return dataclasses.replace(m), dataclasses.replace(t)
    raise TypeError(
        "config must be a preset name, a Preset or a (ModelConfig, TrainConfig) pair, got "
        f"{type(config).__name__}"
    )


def _as_sections(sections: Any) -> list[TrainingSection]:
    out = []
    for i, s in enumerate(sections):
        if isinstance(s, TrainingSection):
            out.append(s)
        elif isinstance(s, (tuple, list)) and len(s) == 2:
            out.append(TrainingSection(s[0], s[1]))
        else:
            raise TypeError(f"sections[{i}] must be a TrainingSection or (adata, patches)")
    if not out:
        raise ValueError("sections is empty: need at least one training section")
    genes = list(map(str, out[0].adata.var_names))
    for s in out[1:]:
        if list(map(str, s.adata.var_names)) != genes:
            raise ValueError(
                f"section {s.name} has different genes (or gene order) than {out[0].name}; "
                "subset every section to the same panel"
            )
    return out


def _frozen_features(
    model: MclSTExp,
    sections: list[TrainingSection],
    run_dir: Path,
    device: torch.device,
    info: D.DistInfo,
    progress: bool,
) -> list[np.ndarray]:
    """Backbone features per section, computed once (rank 0) into ``run_dir/frozen_features``."""
    folder = run_dir / "frozen_features"
    cfg = model.config
    meta = {
        "backbone": cfg.backbone,
        "weights": cfg.weights,
        "drop_final_activation": cfg.drop_final_activation,
        "pooling": cfg.pooling,
        "feature_views": cfg.feature_views,
        "image_normalization": cfg.image_normalization,
        "sections": [[s.name, s.n_obs, list(s.patch_shape)] for s in sections],
    }
    meta_path = folder / "meta.json"
    paths = [folder / f"{i:04d}.npy" for i in range(len(sections))]
    fresh = (
        meta_path.is_file()
        and json.loads(meta_path.read_text()) == meta
        and all(p.is_file() for p in paths)
    )
    if info.is_main and not fresh:
        folder.mkdir(parents=True, exist_ok=True)
        for s, p in zip(sections, paths, strict=True):
            feats = backbone_features(model, s.patches, device=device, progress=progress)
            tmp = p.with_name(p.name + ".tmp.npy")
            np.save(tmp, feats, allow_pickle=False)
            tmp.replace(p)
        meta_path.write_text(json.dumps(meta, indent=1))
    if is_distributed():
        torch.distributed.barrier()
    return [np.load(p, allow_pickle=False) for p in paths]


def _write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    tmp = run_dir / f".{LOG}.tmp"
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    tmp.replace(run_dir / LOG)


def train_model(
    sections: Sequence[Any],
    config: Any = None,
    *,
    run_dir: str | Path,
    device: Any = "auto",
    seed: int = 0,
    resume: bool = True,
    frozen_features: bool | Sequence[np.ndarray] | None = None,
    normalization: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train mclSTExp on sections and write a run directory.

    Parameters
    ----------
    sections
        :class:`TrainingSection` objects (or ``(adata, patches)`` pairs) with the same genes.
    config
        Preset name, :class:`~mclstexp.models.config.Preset` or ``(ModelConfig, TrainConfig)``
        (default: the ``"default"`` preset). ``n_genes`` and position-table sizes left at 0 are
        set from the data.
    run_dir
        Output folder (checkpoint, final model, log, config).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        Under torchrun each process uses ``cuda:LOCAL_RANK``.
    seed
        Seed of initialisation, batch order and augmentation.
    resume
        Continue from ``run_dir/checkpoint.pt`` when present (the configuration and genes must
        match, except ``epochs`` which may be raised).
    frozen_features
        Frozen-encoder mode: ``True`` computes backbone features once per patch (cached in
        ``run_dir/frozen_features``), a list of ``[n_obs, F]`` arrays (one per section) supplies
        them; None follows ``TrainConfig.freeze_backbone``.
    normalization
        Expression/image normalisation constants recorded in the checkpoint (merged with those
        implied by the configuration).
    progress
        Show a tqdm bar (rank 0).
    on_epoch_end
        ``callback(epoch, metrics)`` after each epoch's checkpoint is written (an exception
        raised there stops training, like a kill, leaving a resumable run).

    Returns
    -------
    TrainResult
        The trained model (eval mode, on ``device``), per-epoch history, paths and genes.

    Examples
    --------
    >>> result = train_model(sections, "cpu", run_dir="runs/demo")  # doctest: +SKIP
    >>> result.history[-1]["loss"]  # doctest: +SKIP
    """
    mcfg, tcfg = _resolve_config(config)
    secs = _as_sections(sections)
    genes = list(map(str, secs[0].adata.var_names))
    run_dir = Path(run_dir)
    info = D.init_from_env(device)
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", info.local_rank if info.world_size > 1 else 0)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if tcfg.amp != "none":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # sizes from the data
    mcfg.n_genes = len(genes)
    max_row = max(int(s.positions[:, 0].max()) for s in secs)
    max_col = max(int(s.positions[:, 1].max()) for s in secs)
    if mcfg.position_rows <= 0:
        mcfg.position_rows = max_row + 1 + mcfg.position_margin
    if mcfg.position_cols <= 0:
        mcfg.position_cols = max_col + 1 + mcfg.position_margin
    if max_row >= mcfg.position_rows or max_col >= mcfg.position_cols:
        raise ValueError(
            f"array coordinates up to (row {max_row}, col {max_col}) exceed the position tables "
            f"({mcfg.position_rows} x {mcfg.position_cols}); raise position_rows/position_cols"
        )
    use_frozen = tcfg.freeze_backbone if frozen_features is None else frozen_features is not False
    tcfg.freeze_backbone = bool(use_frozen)

    ckpt_path = run_dir / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume and ckpt_path.is_file():
        state = read_checkpoint(ckpt_path)
        old_t = dict(state["train_config"])
        new_t = tcfg.to_dict()
        old_t.pop("epochs", None)
        new_t.pop("epochs", None)
        old_t.pop("num_workers", None)
        new_t.pop("num_workers", None)
        if state["model_config"] != mcfg.to_dict() or old_t != new_t:
            raise ValueError(
                f"{ckpt_path} was written with a different configuration; use another run_dir "
                "or resume=False to start over"
            )
        if list(state["genes"]) != genes:
            raise ValueError(f"{ckpt_path} was trained on different genes; use another run_dir")

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (global state)
    torch.manual_seed(seed)
    model = MclSTExp(mcfg)
    features: list[np.ndarray] | None = None
    if use_frozen:
        model.freeze_backbone()
        if isinstance(frozen_features, (list, tuple)):
            features = [np.asarray(f, dtype=np.float32) for f in frozen_features]
            if len(features) != len(secs) or any(
                f.shape != (s.n_obs, model.image_encoder.num_features)
                for f, s in zip(features, secs, strict=False)
            ):
                raise ValueError(
                    "frozen_features must be one [n_obs, F] array per section with F = "
                    f"{model.image_encoder.num_features} (the backbone's feature size)"
                )
        else:
            features = _frozen_features(model, secs, run_dir, dev, info, progress)
        # Frozen features never change: standardise them once, from the training spots only.
        model.image_encoder.fit_feature_standardization(torch.from_numpy(np.concatenate(features)))
    model.to(dev)
    if dev.type == "cuda":
        model.image_encoder.to(memory_format=torch.channels_last)

    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if tcfg.optimizer == "adam" else torch.optim.AdamW
    optimizer = opt_cls(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    total = tcfg.epochs
    if tcfg.scheduler == "cosine":

        def lr_factor(e: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(e, total) / total))
    else:

        def lr_factor(e: int) -> float:
            return 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    amp_dtype: torch.dtype | None = None
    if dev.type == "cuda" and tcfg.amp != "none":
        bf16 = tcfg.amp == "bf16" or (tcfg.amp == "auto" and torch.cuda.is_bf16_supported())
        amp_dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch = 0
    history: list[dict[str, Any]] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        history = [dict(h) for h in state["history"]]
        rng = state.get("rng")
        if rng is not None:
            set_rng_state(rng)
        state = None

    net: torch.nn.Module = model
    if is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    norm = {
        "expression": tcfg.expression_normalization,
        "image": mcfg.image_normalization,
        "image_mean": model.image_encoder.mean.flatten().tolist(),
        "image_std": model.image_encoder.std.flatten().tolist(),
        **(normalization or {}),
    }
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(
            json.dumps(
                {"model": mcfg.to_dict(), "train": tcfg.to_dict(), "seed": seed, "genes": genes},
                indent=1,
            )
        )
        _write_log(run_dir, history)

    sampler = BatchPlan(
        [s.positions for s in secs],
        mode=mcfg.sequence,
        batch_size=tcfg.batch_size,
        sequence_length=mcfg.sequence_length,
        seed=seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    augment = tcfg.augment and not use_frozen
    on_device = augment and (
        tcfg.augment_on == "device" or (tcfg.augment_on == "auto" and dev.type == "cuda")
    )
    # CPU training: the loader emits float32 (B, 3, H, W) in [0, 1] (layout and scaling done by
    # the fused kernel, in the workers); CUDA: compact uint8, converted on the GPU
    image_format = "unit" if dev.type == "cpu" else "uint8"
    dataset = BatchDataset(
        secs,
        augment=augment and not on_device,
        features=features,
        image_format=image_format,
        # in-process loading: the step is done with a batch before the next is built
        reuse_buffers=3 if tcfg.num_workers == 0 else 0,
    )
    loss_fn = clip_loss if tcfg.loss == "clip" else soft_target_loss

    def make_checkpoint(epoch: int, final: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "package_version": mclstexp.__version__,
            "model_config": mcfg.to_dict(),
            "train_config": tcfg.to_dict(),
            "genes": genes,
            "normalization": norm,
            "seed": seed,
            "epoch": epoch,
            "history": history,
            "model": model.state_dict(),
        }
        if not final:
            data.update(
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict() if scaler.is_enabled() else None,
                rng=rng_state(),
            )
        return data

    loader_keys = EpochKeys()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=loader_keys,  # iterated in this process; workers only build batches
        num_workers=tcfg.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=tcfg.num_workers > 0,
    )
    for epoch in range(start_epoch, tcfg.epochs):
        net.train()
        keys = epoch_keys(sampler, seed, epoch)
        loader_keys.keys = keys
        bar = None
        if progress and info.is_main:
            from mclstexp._progress import progress_bar

            bar = progress_bar(
                total=len(keys), desc=f"epoch {epoch + 1}/{tcfg.epochs}", unit="batch"
            )
        loss_sum, n_steps, n_spots = 0.0, 0, 0
        t0 = time.perf_counter()
        for step, batch in enumerate(loader):
            images = dataset.model_images(batch["images"]).to(dev, non_blocking=True)
            if on_device:
                images = augment_batch(
                    images,
                    torch.Generator().manual_seed(keys[step][0]),
                    normalize=UNIT if image_format == "unit" else None,
                )
            expr = batch["expression"].to(dev, non_blocking=True)
            pos = batch["positions"].to(dev, non_blocking=True)
            mask = batch["mask"].to(dev, non_blocking=True)
            with autocast(dev, "none" if amp_dtype is None else tcfg.amp):
                img_emb, spot_emb, scale = net(images, expr, pos, mask)
            loss = loss_fn(
                img_emb.float(), spot_emb.float(), scale, lam=tcfg.loss_lambda, gather=True
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += float(loss.detach())
            n_steps += 1
            n_spots += int(mask.sum()) * info.world_size
            if bar is not None:
                dt = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / n_steps:.4f}", spots_s=f"{n_spots / dt:.0f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        metrics = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(1, n_steps),
            "lr": optimizer.param_groups[0]["lr"],
            "steps": n_steps,
            "spots": n_spots,
            "seconds": round(seconds, 4),
            "spots_per_s": round(n_spots / max(seconds, 1e-9), 2),
        }
        scheduler.step()
        history.append(metrics)
        if info.is_main:
            save_checkpoint(ckpt_path, make_checkpoint(epoch + 1))
            _write_log(run_dir, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, metrics)

    if info.is_main:
        save_checkpoint(run_dir / FINAL, make_checkpoint(len(history), final=True))
    if is_distributed():
        torch.distributed.barrier()
    model.eval()
    model.genes = genes
    return TrainResult(
        model=model,
        history=history,
        run_dir=run_dir,
        checkpoint=ckpt_path,
        genes=genes,
        model_config=mcfg,
        train_config=tcfg,
        frozen_features=features,
    )
