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
from mclstexp.models.inputs import BatchPlan, batch_sequences
from mclstexp.models.loss import clip_loss, is_distributed, soft_target_loss
from mclstexp.models.runtime import autocast, backbone_features, resolve_device
from mclstexp.train import distributed as D
from mclstexp.train.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from mclstexp.train.data import TrainingSection, augment_batch, draw_augment_params

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


# What the loader hands the model: uint8 (B, H, W, 3) (compact; the model converts on its device)
# or float32 (B, 3, H, W) in [0, 1] (the model then only applies its mean/std). Both give the same
# model input bits; "unit" moves the layout/scale pass into the loader (workers).
_UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class _BatchDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Builds one batch (already a list of sequences) per key; used with ``batch_size=None``.

    Images are gathered from each section's patches (RAM-resident: straight into the fused
    augmentation kernel, no intermediate copy; lazy Zarr: direct chunk reads) and, with
    ``augment``, augmented by the native kernel with parameters drawn from the key's seed. Inside
    a DataLoader worker the image batch is allocated in shared memory (no copy on the way to the
    main process) and the kernel runs on one native thread (the workers are the parallelism);
    in the main process it uses ``n_threads`` (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).

    ``reuse_buffers=k`` (main process only) recycles a ring of ``k`` image buffers: a fresh
    77 MB float batch costs more to fault in than to augment on small machines. A returned image
    tensor is then overwritten ``k`` batches later, so only a consumer that is done with a batch
    before it asks for the ``k``-th next one may set it (:func:`train_model` with
    ``num_workers=0`` uses 3: one batch in use, none queued).
    """

    def __init__(
        self,
        sections: list[TrainingSection],
        *,
        augment: bool,
        features: list[np.ndarray] | None,
        image_format: str = "uint8",
        n_threads: int | None = None,
        reuse_buffers: int = 0,
    ) -> None:
        if image_format not in ("uint8", "unit"):
            raise ValueError(f"image_format must be 'uint8' or 'unit', got {image_format!r}")
        self.sections = sections
        self.offsets = np.concatenate([[0], np.cumsum([s.n_obs for s in sections])])
        self.expression = np.concatenate([s.expression for s in sections])
        self.positions = np.concatenate([s.positions for s in sections])
        self.augment = augment
        self.image_format = image_format
        self.n_threads = n_threads
        self.reuse_buffers = int(reuse_buffers)
        self._ring: list[torch.Tensor] = []
        self._ring_next = 0
        self.features = None if features is None else np.concatenate(features)

    def __len__(self) -> int:  # unused (keys come from the sampler)
        return 0

    def __getitem__(self, key: tuple[int, list[np.ndarray]]) -> dict[str, torch.Tensor]:
        aug_seed, seqs = key
        ids = np.concatenate(seqs)
        expr, pos, mask = batch_sequences(seqs, self.expression, self.positions)
        out = {
            "expression": torch.from_numpy(expr),
            "positions": torch.from_numpy(pos),
            "mask": torch.from_numpy(mask),
        }
        if self.features is not None:
            out["images"] = torch.from_numpy(self.features[ids])
            return out
        out["images"] = self._images(ids, aug_seed)
        return out

    def _images(self, ids: np.ndarray, aug_seed: int) -> torch.Tensor:
        from mclstexp import _native

        in_worker = torch.utils.data.get_worker_info() is not None
        threads = 1 if in_worker else self.n_threads
        read_threads = threads if threads is not None else _native.default_num_threads()
        b = len(ids)
        h, w, _ = first = self.sections[0].patch_shape
        # workers send augmented uint8 (4x less shared memory to fault in and map; measured
        # 2.7x less CPU per patch) and the main process converts it (:meth:`model_images`)
        unit = self.augment and self.image_format == "unit" and not in_worker
        shape = (b, 3, h, w) if unit else (b, h, w, 3)
        images = self._buffer(shape, torch.float32 if unit else torch.uint8, in_worker)
        dst = images.numpy()
        params = None
        if self.augment:
            params = draw_augment_params(b, torch.Generator().manual_seed(aug_seed))
        sec = np.searchsorted(self.offsets, ids, side="right") - 1
        for k in np.unique(sec):
            section = self.sections[k]
            if section.patch_shape != first:
                raise ValueError(
                    f"section {section.name} has patches {section.patch_shape}, "
                    f"{self.sections[0].name} has {first}: use one patch size"
                )
            where = np.flatnonzero(sec == k)
            local = ids[where] - self.offsets[k]
            if local.size and (local.min() < 0 or local.max() >= section.n_obs):
                raise IndexError(f"spot index out of range for section {section.name}")
            whole = where.size == b  # the batch comes from this section only
            if params is None:
                if whole:
                    section.read_patches(local, out=dst, n_threads=read_threads)
                else:
                    dst[where] = section.read_patches(local, n_threads=read_threads)
                continue
            patches = section.patches
            if isinstance(patches, np.ndarray) and patches.flags.c_contiguous:
                src, rows = patches, local  # gathered by the kernel
            else:
                src = section.read_patches(local, n_threads=read_threads)
                rows = np.arange(where.size)
            brightness, contrast, saturation, flips, angles = (
                np.ascontiguousarray(getattr(params, name)[where]) for name in _PARAM_FIELDS
            )
            common = (src, brightness, contrast, saturation, flips, angles)
            if unit:
                _native.augment_patches_tensor(
                    *common, *_UNIT, indices=rows, out_rows=where, out=dst, n_threads=threads
                )
            else:
                _native.augment_patches_uint8(
                    *common, indices=rows, out_rows=where, out=dst, n_threads=threads
                )
        return images

    def model_images(self, images: torch.Tensor) -> torch.Tensor:
        """The loader's image batch in the configured format: an augmented uint8 batch from a
        worker becomes float32 ``(B, 3, H, W)`` in [0, 1] (native conversion, bit-identical to
        the fused kernel's own output), so the model sees the same bits with any number of
        workers."""
        if self.augment and self.image_format == "unit" and images.dtype == torch.uint8:
            from mclstexp import _native

            unit = _native.normalize_to_tensor_layout(
                np.ascontiguousarray(images.numpy()), *_UNIT, n_threads=self.n_threads
            )
            return torch.from_numpy(unit)
        return images

    def _buffer(self, shape: tuple[int, ...], dtype: torch.dtype, in_worker: bool) -> torch.Tensor:
        if in_worker:
            # shared memory: the batch travels to the main process without a copy
            return torch.empty(shape, dtype=dtype).share_memory_()
        if self.reuse_buffers <= 0:
            return torch.empty(shape, dtype=dtype)
        numel = math.prod(shape)
        if len(self._ring) < self.reuse_buffers:
            self._ring.append(torch.empty(0, dtype=dtype))
        slot = self._ring_next % len(self._ring)
        self._ring_next += 1
        buf = self._ring[slot]
        if buf.dtype != dtype or buf.numel() < numel:
            buf = self._ring[slot] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)


_PARAM_FIELDS = ("brightness", "contrast", "saturation", "flip", "angle")


class _EpochKeys:
    """The DataLoader's sampler: this epoch's batch keys (reassigned every epoch, so persistent
    workers survive across epochs)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, list[np.ndarray]]] = []

    def __iter__(self) -> Any:
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


def _aug_seed(seed: int, epoch: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, step]).generate_state(1, np.uint64)[0])


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
    dataset = _BatchDataset(
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

    epoch_keys = _EpochKeys()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=epoch_keys,  # iterated in this process; workers only build batches
        num_workers=tcfg.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=tcfg.num_workers > 0,
    )
    for epoch in range(start_epoch, tcfg.epochs):
        net.train()
        batches = sampler.rank_batches(epoch)
        # batch i of the loader is keys[i] (order kept, also with workers)
        keys = [(_aug_seed(seed, epoch, info.rank, i), b) for i, b in enumerate(batches)]
        epoch_keys.keys = keys
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
                    normalize=_UNIT if image_format == "unit" else None,
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
