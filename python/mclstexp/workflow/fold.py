"""One cross-validation fold: train on some sections, predict and evaluate the held-out ones.

:func:`run_fold` is three steps, each usable alone: :func:`train_fold` (genes from the training
sections, training, the retrieval reference; also what ``mclstexp train`` runs),
:func:`predict_held_out` (K, then each held-out section's prediction) and :func:`score_rows`
(the model's and the baselines' rows, scored alike, see
:func:`mclstexp.workflow.reference_rows.baseline_rows`).

Every evaluated row (the model and each reference baseline) is scored the same way on two target
normalisations of the held-out spots, each labelled in the records:

- ``legacy_gene``: the original method's ground truth (per gene within the section, log10), for
  comparison with the paper; it keeps each spot's depth, so depth alone scores well on it;
- ``default``: per-spot library-size-normalised natural log1p, which removes most of that depth.

With each, the depth-controlled (partial) PCC given the spot's measured log library size. A gene
predicted as constant scores 0 (see ``UNDEFINED_PCC``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from mclstexp._keys import section_id
from mclstexp._memory import trim_heap
from mclstexp.models.inputs import dense_float32
from mclstexp.workflow.dataset import DatasetSpec
from mclstexp.workflow.reference_rows import reference_rows
from mclstexp.workflow.targets import (
    TARGETS,
    UNDEFINED_PCC,
    log_library_size,
    normalized,
)
from mclstexp.workflow.variants import choose_variant, kept_model


@dataclass
class FoldOutcome:
    """What one fold produced."""

    records: list[dict[str, Any]]
    predictions: dict[str, AnnData]
    truths: dict[str, dict[str, np.ndarray]]
    genes: list[str]
    train_seconds: float
    peak_rss_mb: float
    history: list[dict[str, Any]] = field(default_factory=list)
    k: int = 0
    k_selection: dict[str, Any] | None = None
    head_selection: dict[str, Any] | None = None
    reference_selection: dict[str, Any] | None = None
    variant_selection: dict[str, Any] | None = None


def peak_rss_mb() -> float:
    """The process's peak resident memory so far in MB (``ru_maxrss``; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def select_fold_genes(dataset: DatasetSpec, train: Sequence[AnnData]) -> list[str]:
    """Genes for this fold, chosen from the TRAINING sections only (no leak from held-out ones)."""
    if dataset.gene_method == "all":
        common = set(train[0].var_names)
        for adata in train[1:]:
            common &= set(adata.var_names)
        return [g for g in train[0].var_names if g in common]
    from mclstexp.pp import select_genes

    return list(
        select_genes(
            list(train), method=dataset.gene_method, n_genes=dataset.n_genes, panel=dataset.panel
        )
    )


@dataclass
class TrainedFold:
    """What :func:`train_fold` produced: the model, its reference and the training data."""

    model: Any  # None while the variant waits for another (mclstexp.workflow.variants)
    reference: Any
    genes: list[str]
    sections: list[Any]  # the training sections (mclstexp.train.TrainingSection)
    history: list[dict[str, Any]]
    train_seconds: float
    frozen: bool
    preset_name: str


def train_fold(
    dataset: DatasetSpec,
    caches: Mapping[str, Any],
    *,
    train_sections: Sequence[str],
    preset: Any,
    preset_name: str,
    fold_dir: str | Path,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    resume: bool = True,
) -> TrainedFold:
    """Train on ``train_sections`` and write ``model.pt`` and ``reference.npz`` to ``fold_dir``.

    Genes come from the training sections only (:func:`select_fold_genes`); the model's input is
    normalised as the preset says; the reference pairs the training spots' embeddings with their
    expression in every target of :data:`TARGETS` (default ``"default"``), so
    ``mclstexp predict --model FOLD_DIR`` can use the folder as it is. Under torchrun only rank 0
    builds and writes the reference.

    Examples
    --------
    >>> trained = train_fold(spec, caches, train_sections=["A1", "B1"], preset=preset,
    ...                      preset_name="cpu", fold_dir="runs/f")  # doctest: +SKIP
    """
    from mclstexp.tl.reference import build_reference
    from mclstexp.train import TrainingSection, train_model
    from mclstexp.train.distributed import current

    fold_dir = Path(fold_dir)
    chosen = set(train_sections)
    train = [a for a in dataset.sections if section_id(a) in chosen]
    genes = select_fold_genes(dataset, train)
    input_flavor = preset.train.expression_normalization
    sections = [
        TrainingSection(
            normalized(a, genes, input_flavor), caches[section_id(a)].patches, name=section_id(a)
        )
        for a in train
    ]
    started = time.perf_counter()
    result = train_model(
        sections,
        preset,
        run_dir=fold_dir,
        device=device,
        seed=seed,
        progress=progress,
        resume=resume,
    )
    train_seconds = time.perf_counter() - started
    reference = None
    if current().is_main:
        values = {t: [dense_float32(normalized(a, genes, t).X) for a in train] for t in TARGETS}
        reference = build_reference(
            result.model,
            sections,
            values=values,
            device=device,
            meta={"default_target": "default", "preset": preset_name},
        )
        reference.save(fold_dir / "reference.npz")
    return TrainedFold(
        model=result.model,
        reference=reference,
        genes=genes,
        sections=sections,
        history=list(result.history),
        train_seconds=train_seconds,
        frozen=bool(preset.train.freeze_backbone),
        preset_name=preset_name,
    )


def image_embeddings(trained: TrainedFold, patches: Any, *, device: str = "auto") -> np.ndarray:
    """Image embeddings of patches by the fold's model; in frozen-encoder mode through the
    frozen-feature cache (:mod:`mclstexp.models.features`), so each patch's backbone features
    are computed once per backbone; with a partially trained backbone through the front cache
    (:data:`mclstexp.models.stages.FRONT_CACHE`), so only the trained stages run."""
    from mclstexp.models.features import frozen_features
    from mclstexp.tl.embed import embed_patches

    if trained.model.image_encoder.staged is not None:
        from mclstexp.models.stages import FRONT_CACHE

        fronts = FRONT_CACHE.get(trained.model.image_encoder, patches, device=device)
        return embed_patches(trained.model, None, device=device, fronts=fronts)
    if not trained.frozen:
        return embed_patches(trained.model, patches, device=device)
    (feats,) = frozen_features(trained.model, [patches], device=device)
    return embed_patches(trained.model, None, device=device, frozen_features=feats)


def training_embeddings(trained: TrainedFold, *, device: str = "auto") -> dict[str, np.ndarray]:
    """Image embeddings of every training section's spots by the fold's model, by section id
    (in the order of the reference's rows): the queries of the inner cross-validation that
    chooses K and the heads, and the inputs of the ridge head."""
    return {s.name: image_embeddings(trained, s.source, device=device) for s in trained.sections}


def choose_k(
    trained: TrainedFold,
    k: int | str | None,
    *,
    aggregation: str,
    backend: str = "native",
    device: str = "auto",
    inner: Mapping[str, np.ndarray] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """K for the fold: given, the original's default (``None``), or ``"auto"``: chosen on the
    training sections only, each querying a reference of the others
    (:func:`mclstexp.tl.select_k.select_k`; ``inner``: the training sections' image embeddings
    when already computed, see :func:`training_embeddings`). Returns ``(k, selection record or
    None)``."""
    from mclstexp.tl.predict import DEFAULT_K

    if k == "auto" and len(trained.sections) < 2:
        # nothing to leave out: fall back to the original's K (clipped to the reference)
        return DEFAULT_K, {"k": DEFAULT_K, "reason": "one training section"}
    if k == "auto":
        from mclstexp.tl.select_k import select_k

        if inner is None:
            inner = training_embeddings(trained, device=device)
        selection = select_k(inner, trained.reference, aggregation=aggregation, backend=backend)
        return selection.k, selection.to_dict()
    if k is None:
        return DEFAULT_K, None
    if isinstance(k, str) or int(k) < 1:
        raise ValueError(f"k: expected a positive integer or 'auto', got {k!r}")
    return int(k), None


def head_rows(
    trained: TrainedFold,
    inner: Mapping[str, np.ndarray],
    queries: Mapping[str, np.ndarray],
    retrieval: Mapping[str, Mapping[str, np.ndarray]],
    *,
    k: int,
    aggregation: str,
    backend: str = "native",
    coords: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """The ``ridge`` and ``blend`` heads' predictions of the held-out sections (section ->
    head -> target -> ``[n, G]``) and the record of their choice.

    The ridge penalty and the blend weight are chosen on the training sections only
    (:func:`mclstexp.tl.heads.select_heads`, default target); then, per target, the ridge is
    fitted on every training spot's image embedding (``inner``) and value, applied to the
    held-out image embeddings (``queries``) and blended with the retrieval prediction
    (``retrieval``: section -> target -> ``[n, G]``). With ``coords`` (section id -> spot
    centres, training and held-out sections) also ``blend+context``: the blend mixed with its
    grid neighbours' (:mod:`mclstexp.tl.context`), the weight chosen on the training sections."""
    from mclstexp.tl.context import with_context
    from mclstexp.tl.heads import blend, fit_ridge, select_heads

    selection = select_heads(
        inner,
        trained.reference,
        k=k,
        aggregation=aggregation,
        backend=backend,
        coords=None if coords is None else {n: coords[n] for n in inner},
    )
    x = np.concatenate([inner[s.name] for s in trained.sections])
    rows: dict[str, dict[str, dict[str, np.ndarray]]] = {name: {} for name in queries}
    for target, values in trained.reference.values.items():
        readout = fit_ridge(x, values, selection.alpha, rank=selection.rank)
        for name, q in queries.items():
            ridge = readout.predict(q)
            rows[name].setdefault("ridge", {})[target] = ridge
            mixed = blend(retrieval[name][target], ridge, selection.weight)
            rows[name].setdefault("blend", {})[target] = mixed
            if coords is not None:
                rows[name].setdefault("blend+context", {})[target] = with_context(
                    mixed, coords[name], selection.context
                )
    return rows, selection.to_dict()


def predict_held_out(
    trained: TrainedFold,
    test: Sequence[AnnData],
    caches: Mapping[str, Any],
    *,
    k: int,
    aggregation: str,
    backend: str = "native",
    device: str = "auto",
    queries: Mapping[str, np.ndarray] | None = None,
) -> dict[str, AnnData]:
    """Each held-out section's prediction (retrieval from the fold's reference), by section id
    (``queries``: their image embeddings when already computed)."""
    from mclstexp.tl.predict import predict_expression

    predictions = {}
    for adata in test:
        name = section_id(adata)
        patches = caches[name].patches
        query = None if queries is None else queries.get(name)
        predictions[name] = predict_expression(
            adata,
            trained.model,
            trained.reference,
            patches=patches,
            k=k,
            aggregation=aggregation,
            backend=backend,
            query_embeddings=(
                image_embeddings(trained, patches, device=device) if query is None else query
            ),
        )
    return predictions


def score_rows(
    test: Sequence[AnnData],
    rows: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    truths: Mapping[str, Mapping[str, np.ndarray]],
    genes: Sequence[str],
    *,
    seed: int = 0,
    k_by_method: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One record per held-out section x method x target (:func:`mclstexp.metrics.evaluate_section`,
    per-gene values kept); methods named in ``k_by_method`` get their ``"k"``."""
    from mclstexp.metrics import evaluate_section

    records: list[dict[str, Any]] = []
    for adata in test:
        name = section_id(adata)
        depth = log_library_size(adata)
        for method, by_target in rows[name].items():
            for target, values in by_target.items():
                record = evaluate_section(
                    truths[name][target],
                    values,
                    genes=list(genes),
                    section=name,
                    target=target,
                    log_library_size=depth,
                    method=method,
                    seed=seed,
                    per_gene=True,
                    undefined_pred=UNDEFINED_PCC,
                )
                if k_by_method and method in k_by_method:
                    record["k"] = k_by_method[method]
                records.append(record)
    return records


def run_fold(
    dataset: DatasetSpec,
    caches: Mapping[str, Any],
    *,
    test_sections: Sequence[str],
    preset: Any,
    preset_name: str,
    fold_dir: str | Path,
    seed: int = 0,
    device: str = "auto",
    k: int | str | None = None,
    aggregation: str | None = None,
    backend: str = "native",
    baselines: bool = True,
    heads: bool = True,
    progress: bool = True,
    feature_cache: dict[str, Any] | None = None,
    variants: Mapping[str, Any] | None = None,
) -> FoldOutcome:
    """Train on every section not in ``test_sections``, then predict and evaluate those.

    Parameters
    ----------
    dataset
        The sections (raw counts) and gene-selection settings.
    caches
        Section id -> patch cache (``.patches`` aligned with the section's ``obs_names``).
    test_sections
        Held-out section ids.
    preset, preset_name
        A :class:`mclstexp.models.config.Preset` (model + training configs) and its name.
    fold_dir
        Where the checkpoints, reference and per-epoch log of this fold go.
    k, aggregation
        Retrieval settings (default: the original's K = 200 and inverse squared L1 distance).
        ``k="auto"`` chooses K on the training sections only (:func:`mclstexp.tl.select_k.select_k`:
        each training section queries a reference of the others); the choice and its inner-CV
        scores go to ``FoldOutcome.k_selection`` and every record's ``"k"``.
    baselines
        Also fit and score the reference rows (training mean, colour ridge with and without
        context, library size) and the linear probe on the encoder's features
        (``probe[<backbone>]`` frozen, ``probe[<backbone>/trained]`` after training its last
        stages; HEST's protocol), see :mod:`mclstexp.workflow.reference_rows`.
    heads
        Also score the ``ridge`` and ``blend`` heads on the model's image embedding (rows
        ``mclstexp[<preset>]+ridge`` and ``+blend``; their penalty and weight chosen on the
        training sections only, :func:`head_rows`); needs two or more training sections. The
        method's own retrieval head stays the row ``mclstexp[<preset>]``.
    variants
        Named presets (:func:`mclstexp.models.load_variants`) to train side by side instead of
        ``preset``: the fold keeps the one with the best inner-CV score on the training
        sections (:func:`mclstexp.workflow.variants.choose_variant`), its artefacts copied
        into ``fold_dir``.
    feature_cache
        A dict kept across folds: each section's colour features (of the baselines) are
        computed once instead of once per fold. Frozen-backbone features need nothing here:
        they are cached by a content hash of the backbone's weights, its configuration and the
        patches (:mod:`mclstexp.models.features`), in memory and beside the patch caches.

    Returns
    -------
    FoldOutcome
        Labelled per-section records of every row, predictions as AnnData, and timings.
    """
    from mclstexp.tl.context import sections_coords
    from mclstexp.tl.predict import DEFAULT_AGGREGATION

    held_out = set(test_sections)
    train = [a for a in dataset.sections if section_id(a) not in held_out]
    test = [a for a in dataset.sections if section_id(a) in held_out]
    if not train or not test:
        raise ValueError(
            f"test_sections: {sorted(held_out)} must leave at least one training and one test "
            f"section (dataset has {dataset.section_names})"
        )
    aggregation = DEFAULT_AGGREGATION if aggregation is None else aggregation
    settings = {"aggregation": aggregation, "backend": backend, "device": device}
    coords = sections_coords([*train, *test])
    candidates = dict(variants) if variants else {"": preset}
    fit = {"seed": seed, "device": device, "progress": progress, "k": k, "heads": heads}
    outcomes = _train_candidates(
        dataset,
        caches,
        (train, test),
        candidates,
        preset_name,
        Path(fold_dir),
        coords,
        fit,
        settings,
    )
    best, variant_selection = choose_variant(outcomes, Path(fold_dir))
    trained, (predictions, rows, choice) = outcomes[best]
    trained = kept_model(trained, Path(fold_dir) / "variants" / best)
    choice["variant_selection"] = variant_selection
    if not heads:  # the heads were computed only to choose the variant
        extra = f"mclstexp[{preset_name}]+"
        rows = {
            n: {m: r for m, r in by.items() if not m.startswith(extra)} for n, by in rows.items()
        }
    genes = trained.genes
    truths = {
        section_id(a): {t: dense_float32(normalized(a, genes, t).X) for t in TARGETS} for a in test
    }
    if baselines:
        reference, choice["reference_selection"] = reference_rows(
            trained, dataset, caches, (train, test), seed, feature_cache, device
        )
        for name, by_method in reference.items():
            rows[name].update(by_method)
    model_name = f"mclstexp[{preset_name}]"
    k_by_method = {m: choice["k"] for m in rows[next(iter(rows))] if m.startswith(model_name)}
    records = score_rows(test, rows, truths, genes, seed=seed, k_by_method=k_by_method)
    return FoldOutcome(
        records=records,
        predictions=predictions,
        truths=truths,
        genes=genes,
        train_seconds=sum(t.train_seconds for t, _ in outcomes.values()),
        peak_rss_mb=peak_rss_mb(),
        history=trained.history,
        **choice,
    )


def _train_candidates(
    dataset: DatasetSpec,
    caches: Mapping[str, Any],
    split: tuple[Sequence[AnnData], Sequence[AnnData]],
    candidates: Mapping[str, Any],
    preset_name: str,
    fold_dir: Path,
    coords: Mapping[str, np.ndarray] | None,
    fit: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, tuple[TrainedFold, Any]]:
    """Train each candidate preset (a preset's variants, or the preset alone under ``""``) and
    compute its rows (:func:`_model_rows`); a variant's folder is ``fold_dir/variants/<name>``."""
    train, test = split
    variants = "" not in candidates  # "": the preset alone
    last = list(candidates)[-1]
    outcomes = {}
    for vname, vpreset in candidates.items():
        trained = train_fold(
            dataset,
            caches,
            train_sections=[section_id(a) for a in train],
            preset=vpreset,
            preset_name=preset_name,
            fold_dir=fold_dir / "variants" / vname if vname else fold_dir,
            seed=fit["seed"],
            device=fit["device"],
            progress=fit["progress"],
        )
        heads = fit["heads"] or variants  # a variant is chosen by its heads' inner scores
        rows = _model_rows(
            trained, test, caches, coords=coords, k=fit["k"], heads=heads, **settings
        )
        outcomes[vname] = (trained, rows)
        if variants and vname != last:
            # The next variant trains while this one waits: drop its RAM patches and its model
            # (~65 MB for the cpu preset; run_fold reloads it from its folder if it is kept).
            for section in trained.sections:
                section.release_memory()
            trained.model = None
            trim_heap()
    return outcomes


def _model_rows(
    trained: TrainedFold,
    test: Sequence[AnnData],
    caches: Mapping[str, Any],
    *,
    coords: Mapping[str, np.ndarray] | None,
    k: int | str | None,
    heads: bool,
    aggregation: str,
    backend: str,
    device: str,
) -> tuple[dict[str, AnnData], dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """The model's rows of :func:`run_fold`: the retrieval predictions (AnnData), every head's
    arrays (section -> method -> target -> ``[n, G]``) and the choices (``k``,
    ``k_selection``, ``head_selection``)."""
    retrieval = {"aggregation": aggregation, "backend": backend}
    heads = heads and len(trained.sections) >= 2
    inner = training_embeddings(trained, device=device) if heads or k == "auto" else None
    k, k_selection = choose_k(trained, k, device=device, inner=inner, **retrieval)
    queries = {
        section_id(a): image_embeddings(trained, caches[section_id(a)].patches, device=device)
        for a in test
    }
    predictions = predict_held_out(
        trained, test, caches, k=k, device=device, queries=queries, **retrieval
    )
    model_name = f"mclstexp[{trained.preset_name}]"
    rows = {
        name: {model_name: {t: np.asarray(pred.layers[t]) for t in TARGETS}}
        for name, pred in predictions.items()
    }
    head_selection = None
    if heads and inner is not None:
        own = {n: r[model_name] for n, r in rows.items()}
        by_head, head_selection = head_rows(
            trained, inner, queries, own, k=k, coords=coords, **retrieval
        )
        for name, preds in by_head.items():
            rows[name].update({f"{model_name}+{h}": p for h, p in preds.items()})
    choice = {"k": k, "k_selection": k_selection, "head_selection": head_selection}
    return predictions, rows, choice
