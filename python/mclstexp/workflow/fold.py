"""One cross-validation fold: train on some sections, predict and evaluate the held-out ones.

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

from mclstexp import _keys
from mclstexp.workflow.dataset import DatasetSpec, section_id

#: Target normalisations every evaluation reports (see module docstring).
TARGETS = ("legacy_gene", "default")
#: A gene a method predicts as constant scores PCC 0 (not excluded), so the training-mean row has a
#: number and no method can raise its mean by predicting constants on hard genes. Genes constant
#: in the truth are excluded and counted for every method alike.
UNDEFINED_PCC = "zero"


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


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _log_library_size(adata: AnnData) -> np.ndarray:
    return np.log1p(np.asarray(adata.obs[_keys.LIBRARY_SIZE], dtype=np.float64))


def _peak_rss_mb() -> float:
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


def normalized(adata: AnnData, genes: Sequence[str], flavor: str) -> AnnData:
    """``adata`` restricted to ``genes`` with ``X`` normalised by ``flavor``."""
    from mclstexp.pp import normalize_expression

    return normalize_expression(adata, genes=list(genes), flavor=flavor)


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
    progress: bool = True,
    feature_cache: dict[str, Any] | None = None,
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
        Also fit and score the reference rows (training mean, colour ridge, library size).
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
    from mclstexp.baselines import patch_colour_features, reference_baselines
    from mclstexp.metrics import evaluate_section
    from mclstexp.models.features import frozen_features
    from mclstexp.tl.embed import embed_patches
    from mclstexp.tl.predict import DEFAULT_AGGREGATION, DEFAULT_K, predict_expression
    from mclstexp.tl.reference import build_reference
    from mclstexp.train import TrainingSection, train_model

    fold_dir = Path(fold_dir)
    held_out = set(test_sections)
    train = [a for a in dataset.sections if section_id(a) not in held_out]
    test = [a for a in dataset.sections if section_id(a) in held_out]
    if not train or not test:
        raise ValueError(
            f"test_sections: {sorted(held_out)} must leave at least one training and one test "
            f"section (dataset has {dataset.section_names})"
        )
    genes = select_fold_genes(dataset, train)
    input_flavor = preset.train.expression_normalization

    # --- train --------------------------------------------------------------------------------
    train_sections = [
        TrainingSection(
            normalized(a, genes, input_flavor), caches[section_id(a)].patches, name=section_id(a)
        )
        for a in train
    ]
    frozen = bool(preset.train.freeze_backbone)
    started = time.perf_counter()
    result = train_model(
        train_sections,
        preset,
        run_dir=fold_dir,
        device=device,
        seed=seed,
        progress=progress,
    )
    train_seconds = time.perf_counter() - started
    model = result.model

    # --- reference: training spots' embeddings + their expression in every target -------------
    targets_by_section = {
        section_id(a): {t: normalized(a, genes, t) for t in TARGETS} for a in dataset.sections
    }
    reference = build_reference(
        model,
        train_sections,
        values={
            t: [_dense(targets_by_section[s.name][t].X) for s in train_sections] for t in TARGETS
        },
        device=device,
        meta={"default_target": "default", "preset": preset_name},
    )
    reference.save(fold_dir / "reference.npz")

    def image_embeddings(name: str, patches: Any) -> np.ndarray:
        if not frozen:
            return embed_patches(model, patches, device=device)
        (feats,) = frozen_features(model, [patches], device=device)
        return embed_patches(model, None, device=device, frozen_features=feats)

    # --- predict + evaluate -------------------------------------------------------------------
    aggregation = DEFAULT_AGGREGATION if aggregation is None else aggregation
    k_selection = None
    if k == "auto" and len(train_sections) < 2:
        # nothing to leave out: fall back to the original's K (clipped to the reference)
        k, k_selection = DEFAULT_K, {"k": DEFAULT_K, "reason": "one training section"}
    if k == "auto":
        from mclstexp.tl.select_k import select_k

        inner = {
            s.name: image_embeddings(s.name, s.source if frozen else s.patches)
            for s in train_sections
        }
        selection = select_k(inner, reference, aggregation=aggregation, backend=backend)
        k, k_selection = selection.k, selection.to_dict()
    elif k is None:
        k = DEFAULT_K
    elif isinstance(k, str) or int(k) < 1:
        raise ValueError(f"k: expected a positive integer or 'auto', got {k!r}")
    k = int(k)
    model_name = f"mclstexp[{preset_name}]"
    records: list[dict[str, Any]] = []
    predictions: dict[str, AnnData] = {}
    truths: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for adata in test:
        name = section_id(adata)
        patches = caches[name].patches
        queries = image_embeddings(name, patches)
        pred = predict_expression(
            adata,
            model,
            reference,
            patches=patches,
            k=k,
            aggregation=aggregation,
            backend=backend,
            query_embeddings=queries,
        )
        predictions[name] = pred
        truths[name] = {t: _dense(targets_by_section[name][t].X) for t in TARGETS}
        rows.setdefault(name, {})[model_name] = {t: np.asarray(pred.layers[t]) for t in TARGETS}

    if baselines:
        colour = feature_cache.setdefault("colour", {}) if feature_cache is not None else {}
        for a in dataset.sections:
            if section_id(a) not in colour:
                colour[section_id(a)] = patch_colour_features(caches[section_id(a)].patches)
        train_features = np.concatenate([colour[section_id(a)] for a in train])
        train_depth = np.concatenate([_log_library_size(a) for a in train])
        groups = np.concatenate([[i] * a.n_obs for i, a in enumerate(train)])
        test_features = {section_id(a): colour[section_id(a)] for a in test}
        for target in TARGETS:
            train_values = np.concatenate(
                [_dense(targets_by_section[section_id(a)][target].X) for a in train]
            )
            for baseline in reference_baselines(seed=seed):
                baseline.fit(
                    train_features, train_values, log_library_size=train_depth, groups=groups
                )
                for adata in test:
                    name = section_id(adata)
                    rows[name].setdefault(baseline.name, {})[target] = baseline.predict(
                        test_features[name], log_library_size=_log_library_size(adata)
                    )

    for adata in test:
        name = section_id(adata)
        depth = _log_library_size(adata)
        for method, by_target in rows[name].items():
            for target, values in by_target.items():
                records.append(
                    evaluate_section(
                        truths[name][target],
                        values,
                        genes=genes,
                        section=name,
                        target=target,
                        log_library_size=depth,
                        method=method,
                        seed=seed,
                        per_gene=True,
                        undefined_pred=UNDEFINED_PCC,
                    )
                )
                if method == model_name:
                    records[-1]["k"] = k
    return FoldOutcome(
        records=records,
        predictions=predictions,
        truths=truths,
        genes=genes,
        train_seconds=train_seconds,
        peak_rss_mb=_peak_rss_mb(),
        history=list(getattr(result, "history", [])),
        k=k,
        k_selection=k_selection,
    )
