"""Spatial domains: cluster predicted expression and compare with pathologist labels (ARI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mclstexp._validate import dense_matrix

__all__ = ["spatial_domains_ari"]


def spatial_domains_ari(
    pred_expression: Any,
    labels: Any,
    *,
    n_components: int = 9,
    seed: int = 0,
    drop: Sequence[str] = ("undetermined",),
    n_init: int = 10,
) -> dict[str, Any]:
    """Spatial domains from predicted expression vs pathologist labels (method.md §5).

    Spots labelled ``"undetermined"`` (or missing) are dropped; the predicted expression is reduced
    by PCA to ``n_components`` and clustered by KMeans with K = number of label classes
    (k-means++, ``random_state=seed``); the clusters are compared with the labels.

    Parameters
    ----------
    pred_expression
        ``(n_spots, n_genes)`` predicted expression (array, sparse or AnnData: its ``X``).
    labels
        ``(n_spots,)`` region labels.
    n_components, seed, drop, n_init
        PCA size, random seed, labels to drop (case-insensitive), KMeans restarts.

    Returns
    -------
    dict
        ``ari``, ``nmi``, ``n_spots`` (kept), ``n_dropped``, ``n_classes``, ``n_components``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.repeat(np.eye(3) * 10, 20, axis=0) + np.random.default_rng(0).normal(size=(60, 3))
    >>> spatial_domains_ari(x, np.repeat(["a", "b", "c"], 20))["ari"]
    1.0
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x_in = pred_expression.X if hasattr(pred_expression, "obs_names") else pred_expression
    x = dense_matrix(x_in, "pred_expression")
    lab = np.asarray(labels, dtype=object).ravel()
    if lab.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels has {lab.shape[0]} entries but pred_expression {x.shape[0]} spots"
        )
    drop_set = {d.lower() for d in drop}
    keep = np.array(
        [
            not (v is None or (isinstance(v, float) and np.isnan(v)) or str(v).lower() in drop_set)
            for v in lab
        ],
        dtype=bool,
    )
    lab_k = lab[keep].astype(str)
    classes = np.unique(lab_k)
    if classes.size < 2:
        raise ValueError(
            f"need at least 2 label classes after dropping {list(drop)}, got {classes}"
        )
    xk = x[keep]
    n_comp = int(min(n_components, xk.shape[0], xk.shape[1]))
    emb = PCA(n_components=n_comp, random_state=seed).fit_transform(xk)
    km = KMeans(n_clusters=classes.size, init="k-means++", n_init=n_init, random_state=seed)
    clusters = km.fit_predict(emb)
    return {
        "ari": float(adjusted_rand_score(lab_k, clusters)),
        "nmi": float(normalized_mutual_info_score(lab_k, clusters)),
        "n_spots": int(keep.sum()),
        "n_dropped": int((~keep).sum()),
        "n_classes": int(classes.size),
        "n_components": n_comp,
    }
