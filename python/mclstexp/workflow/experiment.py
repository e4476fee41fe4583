"""Run a whole experiment: tile once, then every preset x seed x fold; write metrics and plots.

Folds come from :mod:`mclstexp.train.folds`; each fold runs :func:`mclstexp.workflow.fold.run_fold`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp import _keys
from mclstexp._keys import section_id
from mclstexp.workflow.dataset import DatasetSpec
from mclstexp.workflow.fold import TARGETS, FoldOutcome, peak_rss_mb, run_fold


@dataclass
class ExperimentResult:
    """Records of every (preset, seed, fold, section, method, target) and where files went."""

    out_dir: Path
    records: list[dict[str, Any]]
    runs: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def preset_geometry(
    preset: Any,
    dataset: DatasetSpec,
    *,
    patch_size: int | None = None,
    mpp: float | None = None,
) -> tuple[int, float | None]:
    """``(patch side in px, microns per pixel)`` the patches of ``preset`` are cut at.

    The user's ``patch_size`` / ``mpp`` win; else a registry encoder trained at a known
    magnification gives its own (foundation models: 224 px at 0.5 um/px,
    :func:`mclstexp.models.encoders.encoder_geometry`); else the dataset's patch size at the
    slide's resolution (``mpp=None``), as the method does.

    Examples
    --------
    >>> from mclstexp.models import load_preset
    >>> spec = DatasetSpec(name="demo", sections=[], patch_size=64)
    >>> preset_geometry(load_preset("cpu"), spec), preset_geometry(load_preset("fm"), spec)
    ((64, None), (224, 0.5))
    >>> preset_geometry(load_preset("fm"), spec, mpp=1.0)
    (224, 1.0)
    """
    from mclstexp.models.encoders import encoder_geometry

    geometry = encoder_geometry(preset.model.backbone)
    size, um = (int(dataset.patch_size), None) if geometry is None else geometry
    if patch_size is not None:
        size = int(patch_size)
    if mpp is not None:
        um = float(mpp)
    return size, um


def tile_dataset(
    dataset: DatasetSpec,
    cache_dir: str | Path,
    *,
    n_threads: int | None = None,
    progress: bool = True,
    size: int | None = None,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Cut every section's spot patches once into a Zarr cache (reused when complete).

    At the dataset's geometry (``size=None``: its patch size; ``mpp=None``: the slide's
    resolution) the caches are ``cache_dir/<section>.zarr``; another geometry (an encoder's,
    :func:`preset_geometry`) gets its own folder ``cache_dir/<size>px_<mpp>mpp/``, since a cache
    made at one geometry is never reused at another (``CacheMismatchError``).
    """
    from mclstexp.pp import extract_patches

    size = int(dataset.patch_size) if size is None else int(size)
    cache_dir = Path(cache_dir)
    if (size, mpp) != (int(dataset.patch_size), None):
        cache_dir = cache_dir / f"{size}px_{'native' if mpp is None else f'{mpp:g}'}mpp"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        section_id(adata): extract_patches(
            adata,
            store=cache_dir / f"{section_id(adata)}.zarr",
            size=size,
            mpp=mpp,
            n_threads=n_threads,
            progress=progress,
        )
        for adata in dataset.sections
    }


def _write_predictions(outcome: FoldOutcome, fold_dir: Path) -> None:
    pred_dir = fold_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for name, adata in outcome.predictions.items():
        adata.write_h5ad(pred_dir / f"{name}.h5ad")


def run_experiment(
    dataset: DatasetSpec,
    *,
    out_dir: str | Path,
    presets: Sequence[str] = ("cpu",),
    seeds: Sequence[int] = (0,),
    holdout: Sequence[str] | None = None,
    device: str = "auto",
    epochs: int | None = None,
    k: int | str | None = "auto",
    aggregation: str | None = None,
    backend: str = "native",
    n_threads: int | None = None,
    plots: bool = True,
    progress: bool = True,
    log: Any = print,
    patch_dir: str | Path | None = None,
    baselines: bool = True,
    patch_size: int | None = None,
    patch_mpp: float | None = None,
) -> ExperimentResult:
    """Tile, then train/predict/evaluate every preset x seed x held-out fold.

    Parameters
    ----------
    dataset
        Sections and data settings (:func:`mclstexp.workflow.load_dataset`).
    out_dir
        The run directory: ``config.json``, ``patches/``, ``<preset>/seed<k>/<fold>/`` (checkpoints,
        reference, ``predictions/*.h5ad``, training log), ``metrics.json``, ``metrics.csv``,
        ``summary.csv``, ``plots/*.png``.
    presets, seeds
        Model presets (:func:`mclstexp.models.load_preset`) and training seeds.
    holdout
        Held-out section ids (one fold each); default leave-one-section-out over all sections
        (:func:`mclstexp.train.folds.leave_one_section_out`, the one fold implementation).
    epochs
        Override the presets' epoch count (e.g. a time budget).
    k, aggregation, backend
        Retrieval settings of :func:`mclstexp.workflow.fold.run_fold`. ``k="auto"`` (default)
        chooses K per fold on the training sections only; ``k=200`` is the original's HER2+ value.
    patch_dir
        Where the patch caches live (default ``out_dir / "patches"``); share it between runs.
    baselines
        Fit and score the reference rows (deterministic; computed once per fold is enough).
    patch_size, patch_mpp
        Cut every preset's patches at this side (px) / resolution (um/px) instead of its own
        geometry (:func:`preset_geometry`: a foundation encoder's, else the dataset's).

    Returns
    -------
    ExperimentResult

    Examples
    --------
    >>> from mclstexp.workflow import load_dataset, run_experiment
    >>> res = run_experiment(load_dataset("synthetic"), out_dir="runs/demo")  # doctest: +SKIP
    >>> print(res.table)  # doctest: +SKIP
    """
    from mclstexp._memory import map_large_blocks
    from mclstexp.train.folds import leave_one_section_out
    from mclstexp.workflow.report import format_table, summary_frame

    map_large_blocks()  # tensors freed between phases go back to the OS (peak RSS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folds = leave_one_section_out(dataset.section_names, holdout=holdout)
    settings = {"device": device, "k": k, "aggregation": aggregation, "backend": backend}
    config = _experiment_config(dataset, presets, seeds, folds, epochs=epochs, **settings)
    loaded = _load_presets(presets, dataset, epochs, patch_size, patch_mpp)
    config["patch_geometry"] = {n: {"patch_size": g[0], "mpp": g[1]} for _, n, _, g, _ in loaded}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))

    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    last: FoldOutcome | None = None
    tiles: dict[tuple[int, float | None], dict[str, Any]] = {}
    # colour features depend on the patches only (frozen-backbone features are cached by content)
    feature_caches: dict[tuple[int, float | None], dict[str, Any]] = {}
    for preset_name, name, preset, geometry, variants in loaded:
        if geometry not in tiles:
            where = patch_dir or out_dir / "patches"
            tiles[geometry] = _tile(dataset, where, geometry, n_threads, progress, log)
        caches = tiles[geometry]
        feature_cache = feature_caches.setdefault(geometry, {"colour": {}})
        for seed in seeds:
            for fold in folds:
                label = "+".join(fold.test)
                fold_dir = out_dir / name / f"seed{seed}" / label
                log(f"[{preset_name} seed={seed}] held out {label}: training ...")
                outcome = run_fold(
                    dataset,
                    caches,
                    test_sections=list(fold.test),
                    preset=preset,
                    preset_name=name,
                    fold_dir=fold_dir,
                    seed=int(seed),
                    progress=progress,
                    feature_cache=feature_cache,
                    baselines=baselines,
                    variants=variants,
                    **settings,
                )
                _write_predictions(outcome, fold_dir)
                for rec in outcome.records:
                    rec.update(preset=name, fold=label)
                records.extend(outcome.records)
                runs.append(_run_record(outcome, dataset, fold.test, name, int(seed)))
                _log_outcome(outcome, log)
                last = outcome
            _release_seed_fronts()
    result = ExperimentResult(out_dir=out_dir, records=records, runs=runs)
    result.table = format_table(records)
    result.files = _write_outputs(result, config, summary_frame(records))
    if plots and last is not None:
        result.files.update(_write_plots(dataset, caches, records, last, out_dir / "plots"))
    (out_dir / "results.txt").write_text(result.table + "\n")
    result.files["results"] = out_dir / "results.txt"
    return result


def _release_seed_fronts() -> None:
    """Forget the front outputs of a seed's initial backbone (a new seed starts from other
    weights, so they are never hit again) and hand the pages back: on her2st they held ~370 MB
    per seed."""
    from mclstexp._memory import trim_heap
    from mclstexp.models.stages import FRONT_CACHE

    FRONT_CACHE.clear()
    trim_heap()


def _tile(
    dataset: DatasetSpec,
    where: str | Path,
    geometry: tuple[int, float | None],
    n_threads: int | None,
    progress: bool,
    log: Any,
) -> dict[str, Any]:
    started = time.perf_counter()
    size, mpp = geometry
    caches = tile_dataset(
        dataset, where, n_threads=n_threads, progress=progress, size=size, mpp=mpp
    )
    at = "" if mpp is None else f" at {size} px, {mpp:g} um/px"
    log(f"tiled {len(caches)} section(s){at} in {time.perf_counter() - started:.1f} s")
    return caches


def _load_presets(
    presets: Sequence[str],
    dataset: DatasetSpec,
    epochs: int | None,
    patch_size: int | None,
    patch_mpp: float | None,
) -> list[tuple[str, str, Any, tuple[int, float | None], dict[str, Any]]]:
    """``(preset name, label, preset, geometry, variants)`` per preset; the checkpoint records
    the patch geometry, so ``mclstexp predict`` cuts patches as training did."""
    from mclstexp.models import load_preset, load_variants

    out = []
    for preset_name in presets:
        epochs_override = {} if epochs is None else {"train__epochs": int(epochs)}
        size, mpp = preset_geometry(
            load_preset(preset_name), dataset, patch_size=patch_size, mpp=patch_mpp
        )
        overrides = {"train__patch_size": size, "train__patch_mpp": mpp, **epochs_override}
        preset = load_preset(preset_name, **overrides)
        variants = load_variants(preset_name, **overrides)
        out.append((preset_name, Path(preset_name).stem, preset, (size, mpp), variants))
    return out


def _experiment_config(
    dataset: DatasetSpec,
    presets: Sequence[str],
    seeds: Sequence[int],
    folds: Sequence[Any],
    *,
    epochs: int | None,
    device: str,
    k: int | str | None,
    aggregation: str | None,
    backend: str,
) -> dict[str, Any]:
    """``config.json``: package, data, presets, seeds, folds (held-out ids) and settings."""
    from mclstexp import __version__

    return {
        "package_version": __version__,
        "dataset": dataset.name,
        "dataset_params": _generator_params(dataset),
        "sections": dataset.section_names,
        "presets": list(presets),
        "seeds": [int(s) for s in seeds],
        "folds": [list(f.test) for f in folds],
        "device": device,
        "epochs_override": epochs,
        "k": k,
        "aggregation": aggregation,
        "backend": backend,
        "targets": list(TARGETS),
        "gene_method": dataset.gene_method,
        "panel": dataset.panel,
        "patch_size": dataset.patch_size,
    }


def _run_record(
    outcome: FoldOutcome, dataset: DatasetSpec, test: Sequence[str], preset: str, seed: int
) -> dict[str, Any]:
    """One entry of ``metrics.json["runs"]``: timings, memory and K of a fold."""
    n_train = sum(a.n_obs for a in dataset.sections if section_id(a) not in test)
    epochs_run = max(len(outcome.history), 1)
    return {
        "preset": preset,
        "seed": seed,
        "fold": "+".join(test),
        "train_seconds": outcome.train_seconds,
        "seconds_per_epoch": outcome.train_seconds / epochs_run,
        "train_spots": n_train,
        "spots_per_second": n_train * epochs_run / max(outcome.train_seconds, 1e-9),
        "peak_rss_mb": outcome.peak_rss_mb,
        "k": outcome.k,
        "k_selection": outcome.k_selection,
        "head_selection": outcome.head_selection,
        "reference_selection": outcome.reference_selection,
        "variant_selection": outcome.variant_selection,
    }


def _log_outcome(outcome: FoldOutcome, log: Any) -> None:
    by_head: dict[str, list[float]] = {}
    for r in outcome.records:
        if r["method"].startswith("mclstexp") and r["target"] == "default":
            by_head.setdefault(r["method"], []).append(r["acg"])
    if by_head:
        scores = ", ".join(f"{m} {np.mean(v):.3f}" for m, v in by_head.items())
        log(f"  done in {outcome.train_seconds:.1f} s; PCC-ACG (default target): {scores}")
    if outcome.variant_selection:
        v = outcome.variant_selection
        inner = ", ".join(f"{n} {s:.3f}" for n, s in v["scores"].items())
        log(f"  variant {v['variant']!r} kept (inner CV on the training sections: {inner})")


def _generator_params(dataset: DatasetSpec) -> dict[str, Any] | None:
    """The synthetic generator's arguments (seed, sizes), so a run names the exact data drawn."""
    if not dataset.sections:
        return None
    synthetic = dataset.sections[0].uns.get(_keys.UNS, {}).get("synthetic")
    params = synthetic.get("params") if isinstance(synthetic, dict) else None
    return _jsonable(params) if isinstance(params, dict) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_outputs(
    result: ExperimentResult, config: dict[str, Any], summary: Any
) -> dict[str, Path]:
    import pandas as pd

    out = result.out_dir
    scalar_records = [
        {k: v for k, v in r.items() if not isinstance(v, list | dict | np.ndarray)}
        for r in result.records
    ]
    payload = {
        "config": config,
        "note": (
            "Every record is per held-out section ('scope'); 'target' names the normalisation "
            "of the ground truth; partial_* control for the spot's measured log library size."
        ),
        "records": _jsonable(result.records),
        "summary": _jsonable(summary.to_dict(orient="records")),
        "runs": _jsonable(result.runs),
        "peak_rss_mb": peak_rss_mb(),
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2))
    pd.DataFrame(scalar_records).to_csv(out / "metrics.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    return {
        "metrics_json": out / "metrics.json",
        "metrics_csv": out / "metrics.csv",
        "summary_csv": out / "summary.csv",
    }


def _thumbnail(adata: Any, max_size: int = 1024) -> tuple[np.ndarray | None, float]:
    """A low-resolution RGB image of the section's slide and its scale to full resolution."""
    from mclstexp import _keys
    from mclstexp.io import read_thumbnail

    path = adata.uns.get(_keys.UNS, {}).get(_keys.UNS_SLIDE_PATH)
    if not path:
        return None, 1.0
    try:
        return read_thumbnail(path, max_size)
    except Exception:  # a plot must never fail the run; the map is drawn without H&E then
        return None, 1.0


def _write_plots(
    dataset: DatasetSpec,
    caches: dict[str, Any],
    records: list[dict[str, Any]],
    last: FoldOutcome,
    plot_dir: Path,
) -> dict[str, Path]:
    import anndata as ad

    from mclstexp.pl import fold_summary, pcc_distribution, spatial_expression

    plot_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["fold_summary"] = plot_dir / "fold_summary_acg.png"
    fold_summary(
        records,
        metric="acg",
        target="default",
        path=files["fold_summary"],
        title="PCC-ACG per held-out section (target: per-spot normalised log1p)",
    )
    section = next(iter(last.predictions))
    by_method = {
        r["method"]: np.asarray(
            [np.nan if v is None else v for v in r["pcc_per_gene"].values()], dtype=float
        )
        for r in records
        if r.get("section") == section and r.get("target") == "default" and r.get("pcc_per_gene")
    }
    if by_method:
        files["pcc_distribution"] = plot_dir / f"pcc_distribution_{section}.png"
        pcc_distribution(
            by_method,
            path=files["pcc_distribution"],
            title=f"Per-gene PCC on held-out {section} (target: per-spot normalised log1p)",
        )
    pred = last.predictions[section]
    truth = ad.AnnData(
        X=last.truths[section]["default"],
        obs=pred.obs.copy(),
        obsm={"spatial": pred.obsm["spatial"]},
    )
    truth.var_names = list(last.genes)
    pred_default = ad.AnnData(
        X=np.asarray(pred.layers["default"]),
        obs=pred.obs.copy(),
        obsm={"spatial": pred.obsm["spatial"]},
    )
    pred_default.var_names = list(last.genes)
    means = last.truths[section]["default"].mean(axis=0)
    top = [last.genes[i] for i in np.argsort(-means)[:4]]
    image, scale = _thumbnail(dataset.section(section))
    files["spatial"] = plot_dir / f"spatial_{section}.png"
    spatial_expression(truth, pred_default, top, image=image, scale=scale, path=files["spatial"])
    return files
