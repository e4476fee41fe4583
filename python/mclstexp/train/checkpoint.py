"""Checkpoints: tensors + plain JSON-able data, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict::

    {"format": "mclstexp-checkpoint", "format_version": 1, "package_version": str,
     "model_config": dict, "train_config": dict, "genes": [str], "normalization": dict,
     "seed": int, "epoch": int (epochs completed), "history": [dict], "model": state_dict,
     "optimizer": state_dict | None, "scheduler": state_dict | None, "scaler": state_dict | None,
     "rng": {"python": ..., "numpy": ..., "torch": tensor, "cuda": [tensor]} | None,
     "backbone": {"weights": str, "sha256": str} | absent, "extra": dict}

Nothing in it needs pickle of arbitrary classes: numpy RNG state is stored as lists.

A frozen backbone whose weights can be loaded again (``weights="pretrained"`` or a file) is not
copied into the checkpoint (a foundation model is gigabytes, and every fold writes two files):
``"backbone"`` records where its weights come from and the sha256 of its tensors
(:func:`mclstexp.models.features.backbone_digest`), and loading reads them again (the Hugging
Face cache, or the file) and refuses other weights (:class:`mclstexp.WeightsError`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mclstexp import __version__

if TYPE_CHECKING:
    from mclstexp.train.setup import TrainingRun

__all__ = [
    "FORMAT",
    "checkpoint_payload",
    "load_checkpoint",
    "model_state",
    "read_checkpoint",
    "restore_model",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "mclstexp-checkpoint"
FORMAT_VERSION = 1
#: Where the backbone's tensors sit in ``MclSTExp.state_dict()``.
BACKBONE_PREFIX = "image_encoder.backbone."


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states as weights_only-loadable data."""
    np_state: Any = np.random.get_state(legacy=True)  # noqa: NPY002 (global state)
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _to_lists(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_to_lists(v) for v in x]
    return x


def _to_tuples(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_to_tuples(v) for v in x)
    return x


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_to_tuples(state["python"]))
    name, key, pos, has_gauss, cached = state["numpy"]
    key_arr = np.asarray(key, dtype=np.uint32)
    np.random.set_state((name, key_arr, pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def model_state(model: Any, train_config: Any) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The tensors of ``model`` to save, and the record of a frozen backbone left out of them
    (``None`` when the backbone is saved: trained, or randomly initialised)."""
    state = model.state_dict()
    weights = model.config.weights
    if not train_config.freeze_backbone or weights is None:
        return state, None
    from mclstexp.models.features import backbone_digest

    record = {"weights": str(weights), "sha256": backbone_digest(model.image_encoder.backbone)}
    return {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}, record


def restore_model(model: Any, data: dict[str, Any]) -> None:
    """Load a checkpoint's ``"model"`` tensors into ``model``; a backbone left out of them must be
    the one ``model`` was built with (same sha256), else :class:`mclstexp.WeightsError`."""
    record = data.get("backbone")
    if record is None:
        model.load_state_dict(data["model"])
        return
    from mclstexp.exceptions import WeightsError
    from mclstexp.models.features import backbone_digest

    digest = backbone_digest(model.image_encoder.backbone)
    if digest != record["sha256"]:
        raise WeightsError(
            f"the checkpoint was trained on frozen backbone weights {record['weights']!r} with "
            f"sha256 {record['sha256'][:16]}..., but those loaded now hash to {digest[:16]}...: "
            "the weights at that source changed (another hub revision or file); load the ones "
            "used in training (ModelConfig.weights=PATH)"
        )
    missing, unexpected = model.load_state_dict(data["model"], strict=False)
    missing = [k for k in missing if not k.startswith(BACKBONE_PREFIX)]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint does not fit the model: missing {missing[:5]}, unexpected "
            f"{list(unexpected)[:5]}"
        )


def checkpoint_payload(run: TrainingRun, epoch: int, *, final: bool = False) -> dict[str, Any]:
    """What a checkpoint of ``run`` after ``epoch`` completed epochs holds (see module docstring).

    ``final=False`` (``checkpoint.pt``, for resuming): also the optimiser, schedule, AMP scaler
    and the RNG states of this moment. ``final=True`` (``model.pt``, for prediction): the model
    and its metadata only.
    """
    state, backbone = model_state(run.model, run.train_config)
    data: dict[str, Any] = {
        "package_version": __version__,
        "model_config": run.model_config.to_dict(),
        "train_config": run.train_config.to_dict(),
        "genes": run.genes,
        "normalization": run.normalization,
        "seed": run.seed,
        "epoch": epoch,
        "history": run.history,
        "model": state,
    }
    if backbone is not None:
        data["backbone"] = backbone
    if not final:
        data.update(
            optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(),
            scaler=run.scaler.state_dict() if run.scaler.is_enabled() else None,
            rng=rng_state(),
        )
    return data


def save_checkpoint(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` atomically (temporary file + rename) so a kill never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **data}
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict with ``weights_only=True`` and check its format."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.pt", "checkpoint.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"cannot read checkpoint {path}: {exc}. Only mclstexp checkpoints (tensors and plain "
            "data, loaded with weights_only=True) are supported."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mclstexp checkpoint (no 'format': {FORMAT!r})")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {data['format_version']}, newer than this mclstexp "
            f"supports ({FORMAT_VERSION}); upgrade mclstexp"
        )
    return data


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a trained model and its metadata.

    Parameters
    ----------
    path
        A checkpoint file (``checkpoint.pt``/``model.pt``) or a run directory.
    map_location
        Where to put the tensors.

    Returns
    -------
    tuple
        ``(model, metadata)``: the :class:`~mclstexp.models.MclSTExp` in eval mode and the
        checkpoint dict without tensors of the optimiser (``genes``, ``model_config``,
        ``train_config``, ``normalization``, ``epoch``, ``history``, ``package_version``).

    Examples
    --------
    >>> model, meta = load_checkpoint("runs/x/model.pt")  # doctest: +SKIP
    >>> meta["genes"][:3]  # doctest: +SKIP
    """
    from mclstexp.models.clip import MclSTExp
    from mclstexp.models.config import ModelConfig

    data = read_checkpoint(path, map_location=map_location)
    cfg = ModelConfig.from_dict(dict(data["model_config"]))
    # the checkpoint holds the backbone's tensors, unless it records frozen weights to reload
    record = data.get("backbone")
    cfg.weights = None if record is None else record["weights"]
    model = MclSTExp(cfg)
    try:
        restore_model(model, data)
    except RuntimeError as err:  # torch: missing keys or a tensor of another shape
        detail = " ".join(str(err).split())
        raise ValueError(
            f"{path}: the checkpoint's tensors do not fit its own model configuration "
            f"({detail[:300]}); the file was edited or mixed up: use the model.pt that training "
            "wrote"
        ) from err
    model.config.weights = data["model_config"].get("weights")
    if data.get("train_config", {}).get("freeze_backbone"):
        model.freeze_backbone()
    model.eval()
    meta = {k: v for k, v in data.items() if k not in ("model", "optimizer", "scheduler", "scaler")}
    model.genes = list(data.get("genes", []))
    return model, meta
