"""Evaluation metrics: per-gene Pearson correlation, ACG/HEG/HVG summaries, MSE/MAE, depth control.

Everything here follows ``docs/method.md`` §5 and is labelled so a number can never be read out of
context:

* every record names the **target** normalisation its ground truth used (e.g. ``"legacy_gene"`` for
  the original's per-gene normalisation, ``"default"`` for per-spot normalised log1p);
* every record names its **scope**: ``"per-section"`` (the method's protocol: correlations
  across the spots of ONE section) or ``"pooled"`` (all test spots pooled: inflated, never the
  default);
* genes whose correlation is undefined (constant ground truth or constant prediction in that
  section) are never silently averaged: they are NaN and counted (``n_constant_true``,
  ``n_constant_pred``).

The depth-controlled metric is the partial correlation of truth and prediction given a per-spot
covariate (log library size): both are residualised on ``[1, covariate]`` by least squares and then
correlated. A prediction that only encodes depth scores about zero there, whatever its plain PCC.

Modules
-------
``correlation``
    per-gene Pearson / partial correlation, undefined-prediction policies, ACG/HEG/HVG summaries;
``error``
    MSE / MAE;
``records``
    labelled records of one section (:func:`evaluate_section`) or pooled sections;
``aggregate``
    mean and sd of records over sections and seeds;
``domains``
    spatial-domain ARI of predicted expression against region labels.

Examples
--------
>>> import numpy as np
>>> from mclstexp import metrics
>>> rng = np.random.default_rng(0)
>>> y = rng.normal(size=(100, 60))
>>> rec = metrics.evaluate_section(y, y + rng.normal(size=y.shape), genes=[f"g{i}" for i in
...     range(60)], section="S1", target="default")
>>> rec["scope"], rec["target"], round(rec["acg"], 1)
('per-section', 'default', 0.7)
"""

from __future__ import annotations

from mclstexp.metrics.aggregate import METRIC_KEYS, aggregate_records
from mclstexp.metrics.correlation import (
    GenePCC,
    UndefinedPolicy,
    finite_mean,
    log_library_size,
    partial_pcc_per_gene,
    pearson_per_gene,
    policy_values,
    summarize_pcc,
    top_genes,
)
from mclstexp.metrics.domains import spatial_domains_ari
from mclstexp.metrics.error import mae, mse
from mclstexp.metrics.records import (
    PARTIAL_COVARIATE,
    SCOPE_POOLED,
    SCOPE_SECTION,
    align_expression,
    evaluate_section,
    pooled_pcc,
)

__all__ = [
    "METRIC_KEYS",
    "PARTIAL_COVARIATE",
    "SCOPE_POOLED",
    "SCOPE_SECTION",
    "GenePCC",
    "UndefinedPolicy",
    "aggregate_records",
    "align_expression",
    "evaluate_section",
    "finite_mean",
    "log_library_size",
    "mae",
    "mse",
    "partial_pcc_per_gene",
    "pearson_per_gene",
    "policy_values",
    "pooled_pcc",
    "spatial_domains_ari",
    "summarize_pcc",
    "top_genes",
]
