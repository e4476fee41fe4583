"""The training loop: AMP on CUDA, gradient clipping, checkpoint every epoch, exact resume, DDP.

:func:`train_model` sets a run up (:func:`mclstexp.train.setup.setup_training`), then runs
:func:`train_one_epoch` per epoch and writes a checkpoint after each
(:func:`mclstexp.train.checkpoint.checkpoint_payload`).

Randomness is derived from ``(seed, epoch)`` (batch order) and ``(seed, epoch, rank, step)``
(augmentation), and the Python/numpy/torch/CUDA RNG states are checkpointed too, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run (on CPU, and
on GPU up to the non-determinism of CUDA kernels).

Run directory layout::

    run_dir/checkpoint.pt      full state after the last completed epoch (atomic writes)
    run_dir/model.pt           final weights + metadata (no optimiser), for prediction
    run_dir/log.jsonl          one JSON object per completed epoch
    run_dir/config.json        the configuration of the run

Frozen-encoder features are not kept in the run directory: they are cached by content
(:mod:`mclstexp.models.features`), beside the patches when those come from a patch cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mclstexp._memory import trim_heap
from mclstexp.models.clip import MclSTExp
from mclstexp.models.config import ModelConfig, TrainConfig
from mclstexp.models.inputs import BatchPlan
from mclstexp.models.loss import clip_loss, is_distributed, soft_target_loss
from mclstexp.models.runtime import autocast
from mclstexp.models.stages import FrontOutput
from mclstexp.train.augment import augment_batch
from mclstexp.train.checkpoint import checkpoint_payload, save_checkpoint
from mclstexp.train.loader import UNIT, BatchDataset, EpochKeys, epoch_keys
from mclstexp.train.setup import FINAL, TrainingRun, setup_training, write_log

__all__ = ["EpochData", "TrainResult", "epoch_data", "train_model", "train_one_epoch", "train_step"]


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


@dataclass
class EpochData:
    """The data side of the loop: the batch plan, the batch dataset and its DataLoader."""

    plan: BatchPlan
    dataset: BatchDataset
    keys: EpochKeys
    loader: torch.utils.data.DataLoader  # type: ignore[type-arg]
    augment_on_device: bool
    image_format: str


def epoch_data(run: TrainingRun) -> EpochData:
    """The batch plan, batch dataset and DataLoader of a run (built once, reused every epoch).

    On CPU the loader emits float32 ``(B, 3, H, W)`` in [0, 1] (layout and scaling done by the
    fused kernel, in the workers); on CUDA compact uint8, converted (and, by default, augmented)
    on the GPU after a pinned-memory copy.
    """
    tcfg, dev = run.train_config, run.device
    plan = BatchPlan(
        [s.positions for s in run.sections],
        mode=run.model_config.sequence,
        batch_size=tcfg.batch_size,
        sequence_length=run.model_config.sequence_length,
        seed=run.seed,
        rank=run.info.rank,
        world_size=run.info.world_size,
    )
    augment = tcfg.augment and run.features is None and run.fronts is None
    on_device = augment and (
        tcfg.augment_on == "device" or (tcfg.augment_on == "auto" and dev.type == "cuda")
    )
    image_format = "unit" if dev.type == "cpu" else "uint8"
    dataset = BatchDataset(
        run.sections,
        augment=augment and not on_device,
        features=run.features,
        image_format=image_format,
        # in-process loading: the step is done with a batch before the next is built
        reuse_buffers=3 if tcfg.num_workers == 0 else 0,
        fronts=run.fronts,
    )
    keys = EpochKeys()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=keys,  # iterated in this process; workers only build batches
        num_workers=tcfg.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=tcfg.num_workers > 0,
    )
    return EpochData(plan, dataset, keys, loader, on_device, image_format)


def train_step(
    run: TrainingRun, data: EpochData, batch: dict[str, torch.Tensor], aug_seed: int
) -> torch.Tensor:
    """One optimisation step on one loader batch: to the device (non-blocking from pinned
    memory), augmentation on the device when configured, forward under autocast, the
    contrastive loss in float32 (negatives gathered from every rank), backward through the AMP
    scaler, clipping, optimiser step. Returns the detached loss on the device (reading it is
    the caller's choice: it waits for the GPU)."""
    tcfg, dev = run.train_config, run.device
    images: Any = data.dataset.model_images(batch["images"]).to(dev, non_blocking=True)
    if "front_means" in batch:  # stage cache: the frozen front's output, one view per spot
        images = FrontOutput(images, batch["front_means"].to(dev, non_blocking=True))
    elif data.augment_on_device:
        images = augment_batch(
            images,
            torch.Generator().manual_seed(aug_seed),
            normalize=UNIT if data.image_format == "unit" else None,
        )
    expr = batch["expression"].to(dev, non_blocking=True)
    pos = batch["positions"].to(dev, non_blocking=True)
    mask = batch["mask"].to(dev, non_blocking=True)
    with autocast(dev, "none" if run.amp_dtype is None else tcfg.amp):
        img_emb, spot_emb, scale = run.net(images, expr, pos, mask)
    loss_fn = clip_loss if tcfg.loss == "clip" else soft_target_loss
    loss = loss_fn(img_emb.float(), spot_emb.float(), scale, lam=tcfg.loss_lambda, gather=True)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if tcfg.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, tcfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.detach()


def train_one_epoch(
    run: TrainingRun, data: EpochData, epoch: int, *, progress: bool = True
) -> dict[str, Any]:
    """One pass over this rank's batches of ``epoch`` (:func:`train_step` per batch). Returns
    the epoch's metrics (the learning-rate schedule is stepped by the caller).

    The loss is summed on the device in float64 and read when the progress bar redraws and at
    the end, so a GPU step never waits for the host in between (a per-step ``float(loss)`` would
    synchronise every step); the bar's postfix never forces a redraw of its own.
    """
    info = run.info
    run.net.train()
    keys = epoch_keys(data.plan, run.seed, epoch)
    data.keys.keys = keys
    bar = None
    if progress and info.is_main:
        from mclstexp._progress import progress_bar

        bar = progress_bar(
            total=len(keys), desc=f"epoch {epoch + 1}/{run.train_config.epochs}", unit="batch"
        )
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    n_steps, n_spots = 0, 0
    t0 = time.perf_counter()
    for step, batch in enumerate(data.loader):
        n_spots += int(batch["mask"].sum()) * info.world_size  # host tensor: no device sync
        loss_sum += train_step(run, data, batch, keys[step][0])
        n_steps += 1
        if bar is not None:
            _update_bar(bar, loss_sum, n_steps, n_spots, time.perf_counter() - t0)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "loss": float(loss_sum) / max(1, n_steps),
        "lr": run.optimizer.param_groups[0]["lr"],
        "steps": n_steps,
        "spots": n_spots,
        "seconds": round(seconds, 4),
        "spots_per_s": round(n_spots / max(seconds, 1e-9), 2),
    }


def _update_bar(bar: Any, loss_sum: torch.Tensor, steps: int, spots: int, dt: float) -> None:
    """Advance the bar; refresh its postfix (reading the loss) only when it is about to redraw."""
    if bar.n + 1 >= bar.total or time.perf_counter() - bar.last_print_t >= bar.mininterval:
        bar.set_postfix(
            loss=f"{float(loss_sum) / steps:.4f}",
            spots_s=f"{spots / max(dt, 1e-9):.0f}",
            refresh=False,
        )
    bar.update(1)


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
        Frozen-encoder mode: ``True`` computes backbone features once per patch (cached by
        content in memory and beside a patch cache, :mod:`mclstexp.models.features`), a list
        of ``[n_obs, F]`` arrays (one per section) supplies them; None follows
        ``TrainConfig.freeze_backbone``.
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
    run = setup_training(
        sections,
        config,
        run_dir=run_dir,
        device=device,
        seed=seed,
        resume=resume,
        frozen_features=frozen_features,
        normalization=normalization,
        progress=progress,
    )
    if run.train_config.ssl_epochs and run.start_epoch == 0:
        from mclstexp.train.ssl import ssl_pretrain

        ssl_history = ssl_pretrain(run, progress=progress)
        if run.info.is_main:
            (run.run_dir / "ssl_log.json").write_text(json.dumps(ssl_history))
    data = epoch_data(run)
    for epoch in range(run.start_epoch, run.train_config.epochs):
        metrics = train_one_epoch(run, data, epoch, progress=progress)
        run.scheduler.step()
        run.history.append(metrics)
        if run.info.is_main:
            save_checkpoint(run.checkpoint_path, checkpoint_payload(run, epoch + 1))
            write_log(run.run_dir, run.history)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, metrics)
        trim_heap()  # the epoch's freed batches and checkpoint buffers back to the OS

    if run.info.is_main:
        save_checkpoint(run.run_dir / FINAL, checkpoint_payload(run, len(run.history), final=True))
    if is_distributed():
        torch.distributed.barrier()
    model = run.model
    model.eval()
    model.genes = run.genes
    return TrainResult(
        model=model,
        history=run.history,
        run_dir=run.run_dir,
        checkpoint=run.checkpoint_path,
        genes=run.genes,
        model_config=run.model_config,
        train_config=run.train_config,
        frozen_features=run.features,
    )
