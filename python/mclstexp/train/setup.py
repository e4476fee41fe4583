"""Setting up a training run: configuration, data-sized tables, resume, seeds, model, optimiser.

:func:`setup_training` returns a :class:`TrainingRun` holding everything the loop
(:mod:`mclstexp.train.loop`) needs: the resolved configs (``n_genes`` and position-table sizes set
from the data), the model (frozen-encoder mode: backbone frozen, features ready and standardised),
the optimiser, learning-rate schedule, AMP scaler, the DDP wrapper under torchrun, and, when
resuming, the state of the last completed epoch (RNG states included, restored last, so the
resumed run continues exactly as the uninterrupted one).

The order of the steps is part of the contract: seeds are set, then the model is built (its
initialisation consumes the torch RNG), then a checkpoint's states are restored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mclstexp.models.clip import MclSTExp
from mclstexp.models.config import ModelConfig, Preset, TrainConfig, load_preset
from mclstexp.models.features import frozen_features
from mclstexp.models.inputs import reduced_edge
from mclstexp.models.loss import is_distributed
from mclstexp.models.runtime import resolve_device
from mclstexp.models.stages import FRONT_CACHE, FrontOutput, front_features
from mclstexp.train import distributed as D
from mclstexp.train.checkpoint import read_checkpoint, restore_model, set_rng_state
from mclstexp.train.sections import TrainingSection

__all__ = [
    "CHECKPOINT",
    "FINAL",
    "LOG",
    "TrainingRun",
    "as_sections",
    "resolve_config",
    "setup_training",
    "write_log",
]

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
LOG = "log.jsonl"


@dataclass
class TrainingRun:
    """Everything one training run holds (built by :func:`setup_training`)."""

    model_config: ModelConfig
    train_config: TrainConfig
    sections: list[TrainingSection]
    genes: list[str]
    run_dir: Path
    device: torch.device
    info: D.DistInfo
    seed: int
    model: MclSTExp
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    normalization: dict[str, Any]
    features: list[np.ndarray] | None = field(default=None, repr=False)
    fronts: list[FrontOutput] | None = field(default=None, repr=False)
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checkpoint_path(self) -> Path:
        """``run_dir/checkpoint.pt``."""
        return self.run_dir / CHECKPOINT


def resolve_config(config: Any) -> tuple[ModelConfig, TrainConfig]:
    """Copies of the ``(ModelConfig, TrainConfig)`` of a preset name, a Preset or a pair.

    Examples
    --------
    >>> m, t = resolve_config("cpu")
    >>> m.backbone, t.freeze_backbone
    ('resnet18', True)
    """
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


def as_sections(sections: Any) -> list[TrainingSection]:
    """:class:`TrainingSection` objects from sections or ``(adata, patches)`` pairs, checked to
    share one gene panel in one order."""
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


def _select_device(device: Any, info: D.DistInfo, tcfg: TrainConfig) -> torch.device:
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", info.local_rank if info.world_size > 1 else 0)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if tcfg.amp != "none":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    return dev


def _size_position_tables(mcfg: ModelConfig, sections: list[TrainingSection]) -> None:
    max_row = max(int(s.positions[:, 0].max()) for s in sections)
    max_col = max(int(s.positions[:, 1].max()) for s in sections)
    if mcfg.compact_positions:  # store the reachable rows only (see ModelConfig)
        if mcfg.position_rows > max_row + 1 + mcfg.position_margin:
            mcfg.position_init_rows = mcfg.position_rows
            mcfg.position_rows = max_row + 1 + mcfg.position_margin
        if mcfg.position_cols > max_col + 1 + mcfg.position_margin:
            mcfg.position_init_cols = mcfg.position_cols
            mcfg.position_cols = max_col + 1 + mcfg.position_margin
    if mcfg.position_rows <= 0:
        mcfg.position_rows = max_row + 1 + mcfg.position_margin
    if mcfg.position_cols <= 0:
        mcfg.position_cols = max_col + 1 + mcfg.position_margin
    if max_row >= mcfg.position_rows or max_col >= mcfg.position_cols:
        raise ValueError(
            f"array coordinates up to (row {max_row}, col {max_col}) exceed the position tables "
            f"({mcfg.position_rows} x {mcfg.position_cols}); raise position_rows/position_cols"
        )


def _resume_state(
    path: Path, mcfg: ModelConfig, tcfg: TrainConfig, genes: list[str]
) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to continue this run (``epochs`` and ``num_workers``
    may differ)."""
    state = read_checkpoint(path)
    # fields added since the checkpoint was written take their defaults
    old_t = TrainConfig.from_dict(dict(state["train_config"])).to_dict()
    old_m = ModelConfig.from_dict(dict(state["model_config"])).to_dict()
    new_t = tcfg.to_dict()
    for key in ("epochs", "num_workers"):
        old_t.pop(key, None)
        new_t.pop(key, None)
    if old_m != mcfg.to_dict() or old_t != new_t:
        raise ValueError(
            f"{path} was written with a different configuration; use another run_dir "
            "or resume=False to start over"
        )
    if list(state["genes"]) != genes:
        raise ValueError(f"{path} was trained on different genes; use another run_dir")
    return state


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (global state)
    torch.manual_seed(seed)


def _optimizer(
    model: MclSTExp, tcfg: TrainConfig
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
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

    return params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def _amp(dev: torch.device, tcfg: TrainConfig) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    amp_dtype: torch.dtype | None = None
    if dev.type == "cuda" and tcfg.amp != "none":
        bf16 = tcfg.amp == "bf16" or (tcfg.amp == "auto" and torch.cuda.is_bf16_supported())
        amp_dtype = torch.bfloat16 if bf16 else torch.float16
    return amp_dtype, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)


def _frozen_features(
    model: MclSTExp,
    sections: list[TrainingSection],
    device: torch.device,
    info: D.DistInfo,
    progress: bool,
) -> list[np.ndarray]:
    """Backbone features per section through the content-keyed feature cache (rank 0 computes
    and stores them beside the patch caches; the other ranks then find them there)."""
    sources = [s.source for s in sections]
    if info.is_main:
        features = frozen_features(model, sources, device=device, progress=progress)
    D.barrier()
    if not info.is_main:
        features = frozen_features(model, sources, device=device, progress=progress)
    return features


def _partial_backbone(
    model: MclSTExp,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    sections: list[TrainingSection],
    device: torch.device,
) -> tuple[list[TrainingSection], list[FrontOutput] | None]:
    """A partially trained backbone (``trained_stages``): the frozen front's outputs of every
    training patch (through :data:`~mclstexp.models.stages.FRONT_CACHE`), the feature
    standardisation fitted on the training spots' initial features, and either the fronts for
    the loader (``stage_cache``) or sections whose patches are reduced to ``input_size`` once,
    in RAM, for the loader's augmentation."""
    if tcfg.freeze_backbone:
        raise ValueError("trained_stages >= 1 trains part of the backbone: freeze_backbone=False")
    enc = model.image_encoder
    fronts = [FRONT_CACHE.get(enc, s.source, device=device) for s in sections]
    enc.to(device)
    feats = torch.cat([front_features(enc, f) for f in fronts])
    enc.fit_feature_standardization(feats.cpu())
    if tcfg.stage_cache:
        return sections, fronts
    if mcfg.input_size:
        sections = [s.downscaled(reduced_edge(s.patch_shape[0], mcfg.input_size)) for s in sections]
    return sections, None


def _given_features(
    given: Sequence[np.ndarray], model: MclSTExp, sections: list[TrainingSection]
) -> list[np.ndarray]:
    features = [np.asarray(f, dtype=np.float32) for f in given]
    n_feat = model.image_encoder.num_features
    if len(features) != len(sections) or any(
        f.shape != (s.n_obs, n_feat) for f, s in zip(features, sections, strict=False)
    ):
        raise ValueError(
            "frozen_features must be one [n_obs, F] array per section with F = "
            f"{n_feat} (the backbone's feature size)"
        )
    return features


def _restore(run: TrainingRun, state: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimiser, schedule, scaler, history, RNG states."""
    restore_model(run.model, state)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = int(state["epoch"])
    run.history = [dict(h) for h in state["history"]]
    if state.get("rng") is not None:
        set_rng_state(state["rng"])


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``run_dir/log.jsonl`` (one JSON object per completed epoch) atomically."""
    tmp = run_dir / f".{LOG}.tmp"
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    tmp.replace(run_dir / LOG)


def setup_training(
    sections: Sequence[Any],
    config: Any,
    *,
    run_dir: str | Path,
    device: Any = "auto",
    seed: int = 0,
    resume: bool = True,
    frozen_features: bool | Sequence[np.ndarray] | None = None,
    normalization: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainingRun:
    """Everything :func:`mclstexp.train.train_model` needs before its first epoch (see there for
    the parameters); rank 0 writes ``config.json`` and ``log.jsonl`` into ``run_dir``."""
    mcfg, tcfg = resolve_config(config)
    secs = as_sections(sections)
    genes = list(map(str, secs[0].adata.var_names))
    run_dir = Path(run_dir)
    info = D.init_from_env(device)
    dev = _select_device(device, info, tcfg)
    mcfg.n_genes = len(genes)
    _size_position_tables(mcfg, secs)
    use_frozen = tcfg.freeze_backbone if frozen_features is None else frozen_features is not False
    tcfg.freeze_backbone = bool(use_frozen)
    state = None
    if resume and (run_dir / CHECKPOINT).is_file():
        state = _resume_state(run_dir / CHECKPOINT, mcfg, tcfg, genes)

    _check_stage_settings(mcfg, tcfg)
    _seed_everything(seed)
    model = MclSTExp(mcfg)
    features = fronts = None
    if mcfg.trained_stages:
        secs, fronts = _partial_backbone(model, mcfg, tcfg, secs, dev)
    elif use_frozen:
        model.freeze_backbone()
        if isinstance(frozen_features, (list, tuple)):
            features = _given_features(frozen_features, model, secs)
        else:
            features = _frozen_features(model, secs, dev, info, progress)
        # Frozen features never change: standardise them once, from the training spots only.
        model.image_encoder.fit_feature_standardization(torch.from_numpy(np.concatenate(features)))
    if features is None and fronts is None:  # image mode: the loader reads patches every epoch
        for s in secs:
            s.hold_in_memory()
    model.to(dev)
    if dev.type == "cuda":
        model.image_encoder.to(memory_format=torch.channels_last)
    params, optimizer, scheduler = _optimizer(model, tcfg)
    amp_dtype, scaler = _amp(dev, tcfg)
    norm = _normalization(model, mcfg, tcfg, normalization)
    run = TrainingRun(
        model_config=mcfg,
        train_config=tcfg,
        sections=secs,
        genes=genes,
        run_dir=run_dir,
        device=dev,
        info=info,
        seed=seed,
        model=model,
        net=model,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        amp_dtype=amp_dtype,
        normalization=norm,
        features=features,
        fronts=fronts,
    )
    if state is not None:
        _restore(run, state)
    if is_distributed():
        run.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if info.is_main:
        _start_run_dir(run)
    return run


def _check_stage_settings(mcfg: ModelConfig, tcfg: TrainConfig) -> None:
    """The partial-backbone settings need each other."""
    if tcfg.stage_cache and not mcfg.trained_stages:
        raise ValueError("TrainConfig.stage_cache needs ModelConfig.trained_stages >= 1")
    if tcfg.ssl_epochs and not tcfg.stage_cache:
        raise ValueError("TrainConfig.ssl_epochs needs stage_cache (and trained_stages >= 1)")


def _normalization(
    model: MclSTExp, mcfg: ModelConfig, tcfg: TrainConfig, extra: dict[str, Any] | None
) -> dict[str, Any]:
    """The normalisations a checkpoint records (expression target, image mean/std)."""
    return {
        "expression": tcfg.expression_normalization,
        "image": mcfg.image_normalization,
        "image_mean": model.image_encoder.mean.flatten().tolist(),
        "image_std": model.image_encoder.std.flatten().tolist(),
        **(extra or {}),
    }


def _start_run_dir(run: TrainingRun) -> None:
    """``config.json`` and the log so far (empty, or the resumed epochs)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "model": run.model_config.to_dict(),
        "train": run.train_config.to_dict(),
        "seed": run.seed,
        "genes": run.genes,
    }
    (run.run_dir / "config.json").write_text(json.dumps(config, indent=1))
    write_log(run.run_dir, run.history)
