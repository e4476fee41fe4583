"""The HEST benchmark: HEST-Benchmark's tasks and splits, frozen encoders, HEST's probe as
published next to our own protocol, side by side and labelled.

For each task (:func:`mclstexp.io.read_hest_task`), its samples' HEST patches are copied once
into a patch cache (:func:`mclstexp.pp.patch_cache.store_patches`: no re-tiling), and for each
encoder their frozen features are computed once through the frozen-feature cache (stored in
Zarr beside the patches, :mod:`mclstexp.models.features`). Then, for each of HEST's splits,
every method predicts the test samples from the training samples:

- ``hest-probe[<encoder>]``: HEST's probe exactly as published, fixed alpha included
  (:class:`mclstexp.workflow.hest_protocol.HestProbe`);
- ``probe[<encoder>]``: our linear probe with its alpha chosen by inner cross-validation on the
  training samples (the encoder registry's reference row, when it is available);
- ``mclstexp[<encoder>]``: mclSTExp on the same frozen features, trained on the training
  samples of the split, predicting by retrieval from them
  (:func:`mclstexp.workflow.fold.train_fold`).

Each method is fitted twice, once per target, and scored two ways:

- HEST's metric (``hest_pearson``): targets ``log1p`` of raw counts; Pearson per gene over the
  pooled test spots of a split, mean over genes; mean ± sd (ddof 0) over splits; mean over tasks;
- ours (``pcc`` / ``partial_pcc``): targets library-size-normalised ``log1p``
  (``"default"``); Pearson per gene within each held-out sample (a constant prediction scores
  0), and the partial Pearson given the spot's log library size; mean ± sd over held-out samples.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.workflow.hest_protocol import HEST_SEED, HestProbe, hest_pearson, hest_target

#: Methods of ``--methods``: ``probe`` is HEST's probe and ours, side by side.
METHODS = ("probe", "hest-probe", "mclstexp")
#: HEST's target (``log1p`` of raw counts) and ours (library-size-normalised ``log1p``).
HEST_TARGET, OUR_TARGET = "hest_log1p", "default"
_METRIC_LABELS = {
    "hest_pearson": "HEST: Pearson, pooled test spots, log1p counts (mean ± sd over splits)",
    "pcc": "ours: Pearson per held-out sample, normalised log1p (mean ± sd over samples)",
    "partial_pcc": "ours: partial Pearson | log depth, per held-out sample (mean ± sd)",
}


@dataclasses.dataclass
class _Task:
    name: str
    genes: list[str]
    splits: list[tuple[list[str], list[str]]]
    adata: dict[str, Any]  # sample -> AnnData aligned with its patches
    caches: dict[str, Any]  # sample -> PatchCache


def _load_task(root: Path, name: str, store: Path, log: Any) -> _Task:
    """Read a task and copy its samples' HEST patches into the patch cache ``store``."""
    from mclstexp.io.hest_bench import read_hest_sample, read_hest_task
    from mclstexp.pp.patch_cache import store_patches

    task = read_hest_task(root, name)
    adatas, caches = {}, {}
    for sid in task.samples:
        adata, patches = read_hest_sample(task, sid)
        caches[sid] = store_patches(
            patches.path,
            patches.images,
            np.asarray(adata.obsm["spatial"]),  # the spots' centres (checked against the patches)
            patches.barcodes,
            store=store,
            key=f"{name}-{sid}",
            size=patches.patch_size,
            source_format=f"hest-patches-h5 ({patches.layout})",
            mpp=patches.mpp,
            slide_mpp=patches.slide_mpp,
        )
        adatas[sid] = adata
    log(f"[{name}] {len(task.samples)} samples, {len(task.splits)} splits, {len(task.genes)} genes")
    return _Task(name, task.genes, task.splits, adatas, caches)


def encoder_preset(
    preset: str, encoder: str, *, epochs: int | None = None, weights: str | None = None
) -> Any:
    """``preset`` with ``encoder`` as a frozen backbone, its own pooled output (global pooling,
    one view): the features HEST's probe reads, and those mclSTExp trains on.

    Examples
    --------
    >>> encoder_preset("cpu", "test_resnet", epochs=2).model.backbone
    'test_resnet'
    """
    from mclstexp.models import load_preset

    extra: dict[str, Any] = {} if epochs is None else {"train__epochs": int(epochs)}
    if weights is not None:
        extra["model__weights"] = weights
    return load_preset(
        preset,
        model__backbone=encoder,
        model__pooling="global",
        model__feature_views="single",
        train__freeze_backbone=True,
        **extra,
    )


def _features(task: _Task, preset: Any, seed: int, device: str) -> dict[str, np.ndarray]:
    """Frozen features of every sample, through the frozen-feature cache. The backbone is built
    after seeding as training builds it, so mclSTExp's run finds these same features."""
    import random

    import torch

    from mclstexp.models import MclSTExp
    from mclstexp.models.features import frozen_features

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (mirrors the training set-up's seeding)
    torch.manual_seed(seed)
    config = dataclasses.replace(preset.model, n_genes=1, position_rows=1, position_cols=1)
    model = MclSTExp(config)
    model.freeze_backbone()
    ids = list(task.caches)
    feats = frozen_features(model, [task.caches[s].patches for s in ids], device=device)
    return dict(zip(ids, feats, strict=True))


def _truths(task: _Task, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    from mclstexp.models.inputs import dense_float32
    from mclstexp.workflow.fold import normalized

    out = {}
    for sid in ids:
        a = task.adata[sid]
        out[sid] = {
            HEST_TARGET: hest_target(a[:, task.genes].X),
            OUR_TARGET: dense_float32(normalized(a, task.genes, OUR_TARGET).X).astype(np.float64),
        }
    return out


def _probe_rows(
    probes: dict[str, Any],
    feats: dict[str, np.ndarray],
    truths: dict[str, dict[str, np.ndarray]],
    train: Sequence[str],
    test: Sequence[str],
) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """Each probe fitted per target on the training samples; predictions per test sample."""
    rows: dict[str, dict[str, dict[str, np.ndarray]]] = {s: {} for s in test}
    info: dict[str, Any] = {}
    x = np.concatenate([feats[s] for s in train])
    groups = np.concatenate([[i] * len(feats[s]) for i, s in enumerate(train)])
    for label, make in probes.items():
        for target in (HEST_TARGET, OUR_TARGET):
            probe = make().fit(x, np.concatenate([truths[s][target] for s in train]), groups=groups)
            for s in test:
                rows[s].setdefault(label, {})[target] = probe.predict(feats[s])
            info[f"{label}/{target}"] = {
                k: float(getattr(probe, k))
                for k in ("alpha_", "pca_components_")
                if hasattr(probe, k)
            }
    return rows, info


def _mclstexp_rows(
    task: _Task,
    train: Sequence[str],
    test: Sequence[str],
    *,
    preset: Any,
    label: str,
    fold_dir: Path,
    seed: int,
    device: str,
    k: int | str | None,
) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """mclSTExp trained on ``train``, its reference also holding HEST's target; per test
    sample, predictions in both targets."""
    from mclstexp.tl.predict import DEFAULT_AGGREGATION
    from mclstexp.workflow.dataset import DatasetSpec
    from mclstexp.workflow.fold import choose_k, predict_held_out, train_fold

    spec = DatasetSpec(
        name=f"hest-{task.name}",
        sections=[task.adata[s] for s in [*train, *test]],
        gene_method="panel",
        panel=list(task.genes),
        patch_size=224,
    )
    trained = train_fold(
        spec,
        task.caches,
        train_sections=list(train),
        preset=preset,
        preset_name=label,
        fold_dir=fold_dir,
        seed=seed,
        device=device,
        progress=False,
    )
    if trained.genes != list(task.genes):
        raise ValueError(f"{task.name}: mclSTExp's genes differ from the task's gene list")
    ref = trained.reference
    ref.values[HEST_TARGET] = np.ascontiguousarray(
        np.concatenate([hest_target(task.adata[s][:, task.genes].X) for s in train]),
        dtype=np.float32,
    )
    if list(ref.spot_ids) != [str(o) for s in train for o in task.adata[s].obs_names]:
        raise ValueError(f"{task.name}: the reference's spots are not the training spots")
    k_used, _ = choose_k(trained, k, aggregation=DEFAULT_AGGREGATION, device=device)
    preds = predict_held_out(
        trained,
        [task.adata[s] for s in test],
        task.caches,
        k=k_used,
        aggregation=DEFAULT_AGGREGATION,
        device=device,
    )
    rows = {
        s: {t: np.asarray(p.layers[t], dtype=np.float64) for t in (HEST_TARGET, OUR_TARGET)}
        for s, p in preds.items()
    }
    return rows, k_used


def _score_split(
    task: _Task,
    split: int,
    rows: dict[str, dict[str, dict[str, np.ndarray]]],
    truths: dict[str, dict[str, np.ndarray]],
    test: Sequence[str],
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """HEST's record per method (pooled test spots) and ours per method x held-out sample."""
    from mclstexp.workflow.fold import score_rows

    methods = list(dict.fromkeys(m for s in test for m in rows[s]))
    hest_records = []
    for method in methods:
        y = np.concatenate([truths[s][HEST_TARGET] for s in test])
        p = np.concatenate([rows[s][method][HEST_TARGET] for s in test])
        rec = hest_pearson(y, p, task.genes)
        rec.update(task=task.name, split=split, method=method, n_test=len(y))
        hest_records.append(rec)
    ours = {s: {m: {OUR_TARGET: rows[s][m][OUR_TARGET]} for m in methods} for s in test}
    our_truths = {s: {OUR_TARGET: truths[s][OUR_TARGET]} for s in test}
    records = score_rows([task.adata[s] for s in test], ours, our_truths, task.genes, seed=seed)
    for r in records:
        r.update(task=task.name, split=split)
    return hest_records, records


def _probes(methods: Sequence[str], encoder: str, seed: int) -> dict[str, Any]:
    """The probe rows asked for, label -> factory."""
    out: dict[str, Any] = {}
    if "probe" in methods or "hest-probe" in methods:
        out[f"hest-probe[{encoder}]"] = lambda: HestProbe(seed=seed)
    return out


def _run_split(
    task: _Task,
    split: int,
    feats: dict[str, np.ndarray],
    *,
    preset: Any,
    encoder: str,
    methods: Sequence[str],
    seed: int,
    device: str,
    k: int | str | None,
    work: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every method on split ``split`` of ``task``: HEST's records, ours, and what was fitted."""
    train, test = task.splits[split]
    truths = _truths(task, [*train, *test])
    started = time.perf_counter()
    rows, info = _probe_rows(_probes(methods, encoder, seed), feats, truths, train, test)
    info["probe_seconds"] = time.perf_counter() - started
    if "mclstexp" in methods:
        started = time.perf_counter()
        label = f"mclstexp[{encoder}]"
        got, k_used = _mclstexp_rows(
            task,
            train,
            test,
            preset=preset,
            label=label,
            fold_dir=work / "folds" / task.name / encoder / f"split{split}",
            seed=seed,
            device=device,
            k=k,
        )
        for s in test:
            rows[s][label] = got[s]
        info.update({f"{label}/k": k_used, "mclstexp_seconds": time.perf_counter() - started})
    hest_records, our_records = _score_split(task, split, rows, truths, test, seed)
    n_train = int(sum(task.adata[s].n_obs for s in train))
    for r in (*hest_records, *our_records):
        r.update(encoder=encoder, n_train=n_train)
    info.update(task=task.name, split=split, encoder=encoder, train=list(train), test=list(test))
    return hest_records, our_records, info


def summary_table(
    hest_records: Sequence[dict[str, Any]], our_records: Sequence[dict[str, Any]]
) -> Any:
    """One row per task x method x metric (``hest_pearson``, ``pcc``, ``partial_pcc``) with
    mean, sd and n, plus the ``average`` over tasks of the task means (HEST's "Average").

    Examples
    --------
    >>> h = [{"task": "T", "method": "m", "split": i, "pearson_mean": v}
    ...      for i, v in enumerate([0.2, 0.4])]
    >>> o = [{"task": "T", "method": "m", "section": "s", "acg": 0.1, "partial_acg": 0.05}]
    >>> t = summary_table(h, o)
    >>> t[t.metric == "hest_pearson"][["task", "mean"]].round(3).values.tolist()
    [['T', 0.3], ['average', 0.3]]
    """
    import pandas as pd

    from mclstexp.workflow.hest_protocol import hest_split_summary

    rows = []
    for (task, method), sub in pd.DataFrame(list(hest_records)).groupby(
        ["task", "method"], sort=False
    ):
        s = hest_split_summary(sub.sort_values("split")["pearson_mean"])
        rows.append((task, method, "hest_pearson", s["pearson_mean"], s["pearson_std"], len(sub)))
    ours = pd.DataFrame(list(our_records))
    for metric, column in (("pcc", "acg"), ("partial_pcc", "partial_acg")):
        if column not in ours:
            continue
        for (task, method), sub in ours.groupby(["task", "method"], sort=False):
            values = sub[column].to_numpy(dtype=float)
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            rows.append((task, method, metric, float(np.mean(values)), sd, len(values)))
    table = pd.DataFrame(rows, columns=["task", "method", "metric", "mean", "sd", "n"])
    avg = table.groupby(["method", "metric"], sort=False)["mean"].agg(["mean", "size"])
    avg = avg.reset_index().rename(columns={"size": "n"})
    avg.insert(0, "task", "average")
    avg["sd"] = float("nan")
    table = pd.concat([table, avg[table.columns]], ignore_index=True)
    table["label"] = table["metric"].map(_METRIC_LABELS)
    return table


def format_hest_table(table: Any) -> str:
    """The per-task tables and the average, as text (one column per metric).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"task": ["T"], "method": ["m"], "metric": ["pcc"], "mean": [0.25],
    ...                   "sd": [0.05], "n": [2]})
    >>> "0.250 ± 0.050" in format_hest_table(t)
    True
    """
    metrics = [m for m in _METRIC_LABELS if m in set(table["metric"])]
    blocks = []
    for task in dict.fromkeys(table["task"]):
        sub = table[table["task"] == task]
        head = f"{'task ' + str(task):<36}" + "".join(f"{m:>22}" for m in metrics)
        lines = [head, "-" * len(head)]
        for method in dict.fromkeys(sub["method"]):
            cells = []
            for m in metrics:
                r = sub[(sub["method"] == method) & (sub["metric"] == m)]
                if r.empty:
                    cells.append(f"{'-':>22}")
                    continue
                mean, sd = float(r["mean"].iloc[0]), float(r["sd"].iloc[0])
                text = f"{mean:.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")
                cells.append(f"{text:>22}")
            lines.append(f"{method!s:<36}" + "".join(cells))
        blocks.append("\n".join(lines))
    legend = "\n".join(f"  {m}: {_METRIC_LABELS[m]}" for m in metrics)
    return "\n\n".join(blocks) + "\n\nmetrics:\n" + legend


def run_hest_bench(
    *,
    root: str | Path,
    tasks: Sequence[str] | None = None,
    encoders: Sequence[str] = ("resnet50",),
    methods: Sequence[str] = ("probe", "mclstexp"),
    preset: str = "cpu",
    weights: str | None = None,
    seed: int = HEST_SEED,
    epochs: int | None = None,
    k: int | str | None = None,
    device: str = "auto",
    out_dir: str | Path = "runs/hest",
    work_dir: str | Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run the HEST benchmark (module docstring); write ``hest.{json,csv,txt,png}``.

    Parameters
    ----------
    root
        The HEST-Benchmark folder (one folder per task; :func:`mclstexp.datasets.hest_bench`).
    tasks
        Task names (default: the nine of :data:`mclstexp.io.hest_bench.HEST_BENCH_TASKS`).
    encoders
        Backbone names (timm names, or registry names where the registry is available).
    methods
        Of :data:`METHODS`: ``"probe"`` (HEST's probe and ours), ``"hest-probe"`` (HEST's
        only), ``"mclstexp"``.
    preset, weights, epochs
        mclSTExp's preset (the encoder replaces its backbone, frozen), the backbone weights
        (a local file, as ``ModelConfig.weights``) and an epoch override.
    seed
        Seed of HEST's probe (PCA, ridge; HEST's default 1), of the backbone's initialisation and
        of mclSTExp's training.
    k
        mclSTExp's retrieval K (default the method's; ``"auto"`` chooses it on the training
        samples).
    out_dir, work_dir
        Results; the patch cache, features and checkpoints (default ``out_dir/work``).

    Returns
    -------
    dict
        ``hest_records`` (per task x split x method), ``our_records`` (per task x held-out
        sample x method), ``splits`` (what each split fitted), ``table`` (DataFrame, as
        ``hest.csv``) and ``text`` (the tables).

    Examples
    --------
    >>> run_hest_bench(root="hest_bench", tasks=["IDC"], encoders=["resnet50"])  # doctest: +SKIP
    """
    from mclstexp.io.hest_bench import HEST_BENCH_TASKS

    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods: {bad or 'none'} given; choose from {METHODS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir) if work_dir is not None else out / "work"
    started = time.perf_counter()
    hest_records: list[dict[str, Any]] = []
    our_records: list[dict[str, Any]] = []
    splits: list[dict[str, Any]] = []
    for name in list(HEST_BENCH_TASKS if tasks is None else tasks):
        task = _load_task(Path(root), name, work / "patches.zarr", log)
        for encoder in encoders:
            p = encoder_preset(preset, encoder, epochs=epochs, weights=weights)
            t0 = time.perf_counter()
            feats = _features(task, p, seed, device)
            log(f"[{name}] {encoder}: features {time.perf_counter() - t0:.1f} s")
            for i in range(len(task.splits)):
                h, o, info = _run_split(
                    task, i, feats, preset=p, encoder=encoder, methods=methods,
                    seed=seed, device=device, k=k, work=work,
                )  # fmt: skip
                hest_records += h
                our_records += o
                splits.append(info)
                log(f"[{name}] {encoder} split {i}: " + ", ".join(
                    f"{r['method']} {r['pearson_mean']:.3f}" for r in h
                ))  # fmt: skip
    table = summary_table(hest_records, our_records)
    text = format_hest_table(table)
    meta = {
        "root": str(root),
        "tasks": list(dict.fromkeys(r["task"] for r in hest_records)),
        "encoders": list(encoders),
        "methods": list(methods),
        "preset": preset,
        "weights": weights,
        "seed": int(seed),
        "epochs_override": epochs,
        "wall_seconds": time.perf_counter() - started,
    }
    _write_outputs(out, meta, hest_records, our_records, splits, table, text)
    return {
        "hest_records": hest_records,
        "our_records": our_records,
        "splits": splits,
        "table": table,
        "text": text,
    }


def _write_outputs(
    out: Path,
    meta: dict[str, Any],
    hest_records: list[dict[str, Any]],
    our_records: list[dict[str, Any]],
    splits: list[dict[str, Any]],
    table: Any,
    text: str,
) -> None:
    from mclstexp.pl import hest_summary

    payload = {
        **meta,
        "protocol": {
            "hest-probe": (
                "HEST-Benchmark as published (github.com/mahmoodlab/HEST afd42c3, "
                "src/hest/bench): log1p raw counts; StandardScaler + PCA(256, random_state=seed) "
                "on the training spots; Ridge(lsqr, alpha=100/(components*genes) fixed, "
                "fit_intercept=False); Pearson per gene over pooled test spots; mean ± std "
                "(ddof 0) over splits; mean over tasks. PCA components capped at the feature "
                "and training-spot counts (recorded as pca_components_)."
            ),
            "ours": (
                "per held-out sample, library-size-normalised log1p targets; PCC (a constant "
                "prediction scores 0) and partial PCC given log library size; mean ± sd over "
                "held-out samples of all splits"
            ),
            "metrics": _METRIC_LABELS,
        },
        "hest_records": hest_records,
        "our_records": our_records,
        "splits": splits,
        "summary": json.loads(table.to_json(orient="records")),
    }
    (out / "hest.json").write_text(json.dumps(payload, indent=2, default=float))
    table.to_csv(out / "hest.csv", index=False)
    (out / "hest.txt").write_text(text + "\n")
    hest_summary(table[table["task"] != "average"], path=out / "hest.png")
