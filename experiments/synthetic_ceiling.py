"""How much of the synthetic data's image signal do simple colour features already hold?

Leave-one-section-out on the embedded synthetic dataset (any generator seed), default target
(per-spot normalised log1p), PCC-ACG per held-out section (a constant prediction scores 0), for
an oracle and for predictors built on the colour ridge's 33 patch colour/texture features:

- ``oracle_ridge``: the same linear ridge on the *true* image-visible variables behind each spot
  (region fractions, cellularity, eosin; the generator's log-mean is linear in them), i.e. a
  perfect reader of the image with a linear head: the headroom left to any image model;
- ``oracle_knn50``: retrieval on that perfect reading (as ``knn50_in_ridge_space`` below, in the
  oracle ridge's output space): what averaging K neighbours costs even with perfect features;

- ``colour_ridge``: the reference row of ``mclstexp run`` (linear ridge);
- ``rbf_kernel_ridge``: a non-linear (RBF kernel) ridge on the standardised features, its two
  hyper-parameters chosen by leave-one-training-section-out CV (never the held-out section);
- ``knn50_in_ridge_space``: retrieval as the model does it (the package's exact top-k cosine
  index, then the mean of the K = 50 nearest training spots' measured expression), with the
  linear ridge's predictions, centred on their training mean, as the embedding; so the only
  difference from ``colour_ridge`` is "average of neighbours" against "linear fit".

If the kernel ridge barely beats the linear one, the colour features already hold nearly all of
the image signal; the gap between the kNN row and the linear ridge is what averaging K neighbours
costs when the truth is linear. Model-free: no torch.

Reproduces the README's table "What is left to gain" (one column per ``--data-seed``; the
mclstexp[cpu] row of that table comes from ``mclstexp run --seeds 0 1 2`` on the same draw):

    python experiments/synthetic_ceiling.py --data-seed 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import product

import numpy as np

from mclstexp import metrics as M
from mclstexp.baselines import ColourRidgeBaseline, patch_colour_features
from mclstexp.pp import extract_patches, normalize_expression
from mclstexp.retrieval import ExactIndex
from mclstexp.workflow import load_dataset

GAMMAS = (0.003, 0.01, 0.03)
ALPHAS = (0.1, 1.0)


def acg(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """PCC-ACG of one section, constant predictions scoring 0 (as in ``mclstexp run``)."""
    res = M.pearson_per_gene(y_true, y_pred)
    return float(M.summarize_pcc(res, y_true, undefined_pred="zero")["acg"])


def rbf_fit_predict(
    x: np.ndarray, y: np.ndarray, x_new: np.ndarray, gamma: float, alpha: float
) -> np.ndarray:
    """Kernel ridge with an RBF kernel on features standardised with the training rows."""
    from sklearn.kernel_ridge import KernelRidge

    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    mean = y.mean(0)
    model = KernelRidge(kernel="rbf", gamma=gamma, alpha=alpha).fit((x - mu) / sd, y - mean)
    return model.predict((x_new - mu) / sd) + mean


def choose_rbf(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[float, float]:
    """(gamma, alpha) with the best mean ACG leaving each training section out in turn."""
    best, best_score = (GAMMAS[0], ALPHAS[0]), -np.inf
    for gamma, alpha in product(GAMMAS, ALPHAS):
        scores = []
        for i in range(len(xs)):
            x = np.concatenate([a for j, a in enumerate(xs) if j != i])
            y = np.concatenate([a for j, a in enumerate(ys) if j != i])
            scores.append(acg(ys[i], rbf_fit_predict(x, y, xs[i], gamma, alpha)))
        if np.mean(scores) > best_score:
            best, best_score = (gamma, alpha), float(np.mean(scores))
    return best


def knn_mean(query: np.ndarray, keys: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Mean of the values of the k most cosine-similar keys of every query row (keys and queries
    centred on the keys' mean, so the cosine compares deviations, not the shared mean profile)."""
    centre = keys.mean(0)
    index = ExactIndex(np.ascontiguousarray(keys - centre, dtype=np.float32))
    _, nearest = index.search(np.ascontiguousarray(query - centre, dtype=np.float32), k=k)
    return values[nearest].mean(1)


def true_state(adata) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The image-visible variables of each spot: region fractions, cellularity, eosin (the
    generator's ground truth, documented in :func:`mclstexp.datasets.synthetic`)."""
    obs = adata.obs
    return np.column_stack(
        [adata.obsm["synthetic_regions"], obs["synthetic_cellularity"], obs["synthetic_eosin"]]
    ).astype(np.float64)


def common_genes(sections: list) -> list[str]:  # type: ignore[type-arg]
    """The synthetic dataset's gene selection ("all"): genes of every training section."""
    return [g for g in sections[0].var_names if all(g in a.var_names for a in sections[1:])]


def default_target(adata, genes: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per-spot normalised log1p of ``genes`` (the ``default`` target), dense float32."""
    return np.asarray(normalize_expression(adata, genes=genes, flavor="default").X, np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic generator seed")
    parser.add_argument("--k", type=int, default=50, help="neighbours of the kNN row")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = load_dataset("synthetic", seed=args.data_seed)
    names = dataset.section_names
    with tempfile.TemporaryDirectory() as tmp:
        features = {}
        for n in names:
            store = f"{tmp}/{n}.zarr"
            cache = extract_patches(dataset.section(n), store=store, size=dataset.patch_size)
            features[n] = patch_colour_features(cache.patches)
    rows: dict[str, list[float]] = {}
    for test in names:
        train = [n for n in names if n != test]
        genes = common_genes([dataset.section(n) for n in train])
        ys = [default_target(dataset.section(n), genes) for n in train]
        xs = [features[n] for n in train]
        y_test = default_target(dataset.section(test), genes)
        groups = np.concatenate([np.full(len(y), i) for i, y in enumerate(ys)])
        ridge = ColourRidgeBaseline().fit(np.concatenate(xs), np.concatenate(ys), groups=groups)
        linear = ridge.predict(features[test])
        gamma, alpha = choose_rbf(xs, ys)
        x_train, y_train = np.concatenate(xs), np.concatenate(ys)
        kernel = rbf_fit_predict(x_train, y_train, features[test], gamma, alpha)
        knn = knn_mean(linear, ridge.predict(x_train), y_train, args.k)
        states = [true_state(dataset.section(n)) for n in train]
        oracle = ColourRidgeBaseline().fit(np.concatenate(states), y_train, groups=groups)
        oracle_pred = oracle.predict(true_state(dataset.section(test)))
        oracle_knn = knn_mean(oracle_pred, oracle.predict(np.concatenate(states)), y_train, args.k)
        for name, pred in (
            ("oracle_ridge", oracle_pred),
            (f"oracle_knn{args.k}", oracle_knn),
            ("colour_ridge", linear),
            ("rbf_kernel_ridge", kernel),
            (f"knn{args.k}_in_ridge_space", knn),
        ):
            rows.setdefault(name, []).append(acg(y_test, pred))
        print(f"held out {test}: rbf gamma={gamma} alpha={alpha}", flush=True)
    print(f"\nsynthetic data seed {args.data_seed}, default target, PCC-ACG per section, mean ± sd")
    for name, values in rows.items():
        print(f"  {name:24s} {np.mean(values):.3f} ± {np.std(values):.3f}")
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
