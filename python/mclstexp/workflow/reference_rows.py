"""The reference rows of one fold: training mean, colour ridge (with and without spatial
context), library size and its oracle, and the linear probe on a frozen encoder's features.

Every row is fitted on the fold's training sections only and predicts the held-out sections
(:func:`baseline_rows`). ``colour_ridge+context`` is the colour ridge mixed with its grid
neighbours' predictions (:mod:`mclstexp.tl.context`), its context weight chosen on the training
sections exactly as the model's ``+blend+context`` head's: it is the row a model with context
has to beat to show that its encoder, not the context, makes the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from mclstexp._keys import section_id
from mclstexp.models.inputs import dense_float32
from mclstexp.workflow.targets import TARGETS, log_library_size, normalized

__all__ = [
    "CONTEXT_TARGET",
    "baseline_rows",
    "colour_context",
    "encoder_features",
    "probe_name",
    "reference_rows",
]

#: The target whose inner-CV score chooses the context weight (as the heads' choices).
CONTEXT_TARGET = "default"


def encoder_features(
    trained: Any, dataset: Any, caches: Mapping[str, Any], device: str
) -> dict[str, np.ndarray] | None:
    """Each section's pooled backbone features, what the linear probe reads: a frozen
    encoder's from the feature cache (computed by training and prediction already); a partially
    trained backbone's from the front cache through its trained back (the features after
    training, :func:`mclstexp.models.stages.front_features`); ``None`` for a backbone trained
    whole (its features would cost a second pass over every patch)."""
    names = dataset.section_names
    if trained.frozen:
        from mclstexp.models.features import frozen_features

        feats = frozen_features(trained.model, [caches[n].patches for n in names], device=device)
        return dict(zip(names, feats, strict=True))
    encoder = trained.model.image_encoder
    if encoder.staged is None:
        return None
    from mclstexp.models.stages import FRONT_CACHE, front_features

    return {
        n: front_features(encoder, FRONT_CACHE.get(encoder, caches[n].patches, device=device))
        .cpu()
        .numpy()
        for n in names
    }


def probe_name(trained: Any) -> str:
    """The probe row's encoder label: the backbone, marked ``/trained`` when its features come
    from training (a partially trained backbone), not from the frozen encoder."""
    backbone = trained.model.config.backbone
    return backbone if trained.frozen else f"{backbone}/trained"


def colour_features(
    dataset: Any, caches: Mapping[str, Any], colour: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``colour`` (section id -> colour features, kept across folds) filled for every section
    of ``dataset`` not in it yet (:func:`mclstexp.baselines.patch_colour_features`)."""
    from mclstexp.baselines import patch_colour_features

    for a in dataset.sections:
        if section_id(a) not in colour:
            colour[section_id(a)] = patch_colour_features(caches[section_id(a)].patches)
    return colour


def colour_context(
    colour: Mapping[str, np.ndarray],
    train: Sequence[AnnData],
    coords: Mapping[str, np.ndarray],
    genes: Sequence[str],
    seed: int,
) -> tuple[float, dict[str, Any]]:
    """The colour ridge's context weight, chosen by leave-one-training-section-out CV.

    Each training section is predicted by a colour ridge fitted on the other training sections
    (:data:`CONTEXT_TARGET`), then mixed with its neighbours at every candidate weight
    (:func:`mclstexp.tl.context.choose_context`; ``coords``: section id -> spot centres).
    Returns ``(weight, record)``.
    """
    from mclstexp.baselines import ColourRidgeBaseline
    from mclstexp.tl.context import choose_context
    from mclstexp.tl.select_k import mean_pcc

    values = {section_id(a): dense_float32(normalized(a, genes, CONTEXT_TARGET).X) for a in train}
    inner = {}
    for adata in train:
        name = section_id(adata)
        others = [section_id(a) for a in train if section_id(a) != name]
        ridge = ColourRidgeBaseline(seed=seed).fit(
            np.concatenate([colour[o] for o in others]),
            np.concatenate([values[o] for o in others]),
            groups=np.concatenate([[o] * len(values[o]) for o in others]),
        )
        inner[name] = (values[name], ridge.predict(colour[name]))
    weight, scores = choose_context(inner, coords, mean_pcc)
    return weight, {"context": weight, "context_scores": {f"{w:g}": v for w, v in scores.items()}}


def baseline_rows(
    dataset: Any,
    caches: Mapping[str, Any],
    train: Sequence[AnnData],
    test: Sequence[AnnData],
    genes: Sequence[str],
    *,
    seed: int = 0,
    colour: dict[str, np.ndarray] | None = None,
    encoder_features: Mapping[str, np.ndarray] | None = None,
    encoder: str = "encoder",
    context: float | None = None,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """The reference rows' predictions: section -> baseline name -> target -> ``[n, G]``.

    Baselines are fit on the training sections' colour features (``colour``: section id ->
    features, filled for sections not in it yet) and expression in each target. With
    ``encoder_features`` (section id -> a frozen encoder's features) the linear probe
    ``probe[<encoder>]`` is fit on the same training sections
    (:class:`mclstexp.baselines.LinearProbeBaseline`). With a ``context`` weight (chosen by
    :func:`colour_context`), ``colour_ridge+context`` too, when every section has spot centres.
    """
    from mclstexp.baselines import LinearProbeBaseline, reference_baselines
    from mclstexp.tl.context import sections_coords, with_context

    colour = colour_features(dataset, caches, {} if colour is None else colour)
    train_features = np.concatenate([colour[section_id(a)] for a in train])
    train_depth = np.concatenate([log_library_size(a) for a in train])
    groups = np.concatenate([[i] * a.n_obs for i, a in enumerate(train)])
    coords = None if context is None else sections_coords([*train, *test])
    rows: dict[str, dict[str, dict[str, np.ndarray]]] = {section_id(a): {} for a in test}
    probe = None
    for target in TARGETS:
        train_values = np.concatenate(
            [dense_float32(normalized(a, genes, target).X) for a in train]
        )
        for baseline in reference_baselines(seed=seed):
            baseline.fit(train_features, train_values, log_library_size=train_depth, groups=groups)
            for adata in test:
                name = section_id(adata)
                pred = baseline.predict(colour[name], log_library_size=log_library_size(adata))
                rows[name].setdefault(baseline.name, {})[target] = pred
                if coords is not None and baseline.name == "colour_ridge":
                    smooth = with_context(pred, coords[name], float(context))
                    rows[name].setdefault("colour_ridge+context", {})[target] = smooth
        if encoder_features is not None:
            probe = probe or LinearProbeBaseline(encoder, seed=seed)  # one PCA per training set
            probe.fit(
                np.concatenate([encoder_features[section_id(a)] for a in train]),
                train_values,
                groups=groups,
            )
            for adata in test:
                name = section_id(adata)
                rows[name].setdefault(probe.name, {})[target] = probe.predict(
                    encoder_features[name]
                )
    return rows


def reference_rows(
    trained: Any,
    dataset: Any,
    caches: Mapping[str, Any],
    split: tuple[Sequence[AnnData], Sequence[AnnData]],
    seed: int,
    feature_cache: dict[str, Any] | None,
    device: Any,
) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any] | None]:
    """The reference rows of one fold (:func:`baseline_rows`) for a fold's trained model
    (``trained``: a :class:`mclstexp.workflow.fold.TrainedFold`), with the linear probe on the
    encoder's features when there are some (:func:`encoder_features`), and
    ``colour_ridge+context`` when there are two or more training sections with spot centres.
    Returns ``(rows, context record or None)``.
    """
    from mclstexp.tl.context import sections_coords

    train, test = split
    colour = colour_features(
        dataset, caches, feature_cache.setdefault("colour", {}) if feature_cache is not None else {}
    )
    features = encoder_features(trained, dataset, caches, device)
    coords = sections_coords(train) if len(train) > 1 else None
    weight, record = (None, None)
    if coords is not None:
        weight, record = colour_context(colour, train, coords, trained.genes, seed)
    rows = baseline_rows(
        dataset,
        caches,
        train,
        test,
        trained.genes,
        seed=seed,
        colour=colour,
        encoder_features=features,
        encoder=probe_name(trained),
        context=weight,
    )
    return rows, record
