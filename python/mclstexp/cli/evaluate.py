"""``mclstexp evaluate``: score predictions against measured expression, per section."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="per-gene PCC (ACG/HEG/HVG, depth-controlled), MSE, MAE of predictions",
        description=(
            "Compare a predictions .h5ad (from `mclstexp predict` or `mclstexp run`) with the "
            "measured counts of the same spots, normalised as --target. Metrics are per section; "
            "partial PCC controls for each spot's measured log library size. The predictions' X "
            "is evaluated (--layer NAME for a layer), and a gene predicted as constant scores 0, "
            "as in `mclstexp run`."
        ),
    )
    parser.add_argument("predictions", type=Path, help="predictions .h5ad")
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--truth", type=Path, help=".h5ad with raw counts of the same spots")
    truth.add_argument("--her2st", type=Path, metavar="ROOT", help="her2st data folder")
    parser.add_argument("--section", help="her2st section id (with --her2st)")
    parser.add_argument(
        "--target",
        default=None,
        choices=["default", "legacy_gene"],
        help="normalisation of the truth (default: that of the evaluated matrix, as recorded "
        "in the predictions)",
    )
    parser.add_argument(
        "--layer",
        default=None,
        metavar="NAME",
        help="evaluate layers[NAME] of the predictions instead of X",
    )
    parser.add_argument("--out", type=Path, help="write the record as JSON")
    parser.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from mclstexp import _keys
    from mclstexp.io import read_anndata
    from mclstexp.metrics import evaluate_section
    from mclstexp.pp import normalize_expression
    from mclstexp.workflow.fold import UNDEFINED_PCC

    if args.her2st is not None and not args.section:
        raise ValueError("--her2st needs --section")
    pred = read_anndata(args.predictions)
    _check_unique_spots(pred.obs_names, args.predictions)
    matrix, values, target = _matrix(pred, args.predictions, args.layer, args.target)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{args.predictions}: {matrix} has NaN or infinite values in {bad.size} spot(s), the "
            f"first spot {str(pred.obs_names[bad[0]])!r} (row {bad[0] + 1})"
        )
    raw, truth_name = _truth(args)
    missing = pred.obs_names.difference(raw.obs_names)
    if len(missing):
        raise ValueError(
            f"{truth_name}: {len(missing)} predicted spots are not in the truth "
            f"(e.g. {list(missing[:3])}); pass the truth of the same section"
        )
    truth = normalize_expression(raw, genes=list(pred.var_names), flavor=target)[pred.obs_names]
    t = np.asarray(truth.X.toarray() if hasattr(truth.X, "toarray") else truth.X)
    if t.size and (t.max(axis=0) == t.min(axis=0)).all():
        raise ValueError(
            f"{truth_name}: the truth is constant over these {t.shape[0]} spots for every gene "
            "(all-zero counts?), so no correlation is defined; pass the measured counts"
        )
    try:
        record = evaluate_section(
            t,
            values,
            genes=list(pred.var_names),
            section=_keys.section_id(raw),
            target=target,
            log_library_size=np.log1p(np.asarray(truth.obs[_keys.LIBRARY_SIZE], dtype=float)),
            method="predictions",
            undefined_pred=UNDEFINED_PCC,
        )
    except ValueError as err:  # the data cannot be scored (e.g. one library size for all)
        raise ValueError(f"{truth_name} vs {args.predictions}: {err}") from err
    record["matrix"] = matrix
    keys = [
        "section",
        "matrix",
        "target",
        "scope",
        "n_spots",
        "n_genes_used",
        "acg",
        "heg",
        "hvg",
        "partial_acg",
        "partial_heg",
        "partial_hvg",
        "mse",
        "mae",
    ]
    for key in keys:
        value = record.get(key)
        print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2, default=float))
    return 0


def _check_unique_spots(names: Any, path: Path) -> None:
    """Refuse duplicated spot ids: each would be scored once per copy (the truth's reader,
    ``read_h5ad``, refuses them with the same message)."""
    if names.has_duplicates:
        dupes = [str(n) for n in names[names.duplicated()].unique()]
        raise ValueError(
            f"{path}: {len(dupes)} duplicated spot ids (obs_names) (e.g. {dupes[:5]}); "
            "each spot must appear once: make them unique or drop the copies"
        )


def _truth(args: argparse.Namespace) -> tuple[Any, str]:
    """The measured counts (``--her2st ROOT --section S`` or ``--truth FILE``) and their name."""
    if args.her2st is not None:
        from mclstexp.io import read_her2st

        return read_her2st(args.her2st, args.section), f"{args.her2st} section {args.section}"
    from mclstexp.io import read_h5ad

    return read_h5ad(args.truth), str(args.truth)


def _matrix(
    pred: Any, path: Path, layer: str | None, target: str | None
) -> tuple[str, np.ndarray, str]:
    """``(label, values, target)`` of the evaluated matrix: ``X``, or ``layers[layer]``.

    The target defaults to the matrix's own normalisation (``target_in_X`` for X, the layer's name
    for a layer named after a target); a target that contradicts what X is recorded to hold is
    refused rather than scored against the wrong normalisation.
    """
    from mclstexp import _keys

    provenance = pred.uns.get(_keys.UNS, {}).get("prediction", {})
    in_x = provenance.get("target_in_X")
    if layer is None:
        target = target or in_x or "default"
        if in_x is not None and target != in_x:
            raise ValueError(
                f"{path}: X holds {in_x!r} predictions, not {target!r}; pass "
                f"--layer {target} to evaluate that layer (layers: {sorted(pred.layers)})"
            )
        return "X", np.asarray(pred.X), target
    if layer not in pred.layers:
        raise ValueError(f"{path}: no layer {layer!r} (layers: {sorted(pred.layers)})")
    known = provenance.get("targets", [])
    target = target or (layer if layer in known else in_x) or "default"
    return f"layers[{layer!r}]", np.asarray(pred.layers[layer]), target
