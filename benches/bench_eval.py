"""Evaluation-layer speed, each beside a straightforward baseline computing the same numbers.

    pytest benches/bench_eval.py --benchmark-only

* per-gene PCC of a her2st-sized section (900 spots x 785 genes): vectorised vs a
  ``scipy.stats.pearsonr`` loop over genes;
* colour features of 64 patches of 224 x 224: chunked histogram/vectorised vs a per-patch loop.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from mclstexp.baselines import patch_colour_features
from mclstexp.metrics import pearson_per_gene


@pytest.fixture(scope="module")
def section() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = rng.gamma(1.0, size=(900, 785))
    return t, 0.5 * t + rng.normal(size=t.shape)


def _pcc_loop(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.array([pearsonr(t[:, j], p[:, j])[0] for j in range(t.shape[1])])


@pytest.mark.benchmark(group="pcc 900x785")
def test_pcc_vectorised(benchmark, section) -> None:
    t, p = section
    res = benchmark(pearson_per_gene, t, p)
    np.testing.assert_allclose(res.pcc, _pcc_loop(t, p), rtol=1e-9)


@pytest.mark.benchmark(group="pcc 900x785")
def test_pcc_scipy_loop(benchmark, section) -> None:
    benchmark(_pcc_loop, *section)


def _features_one(x: np.ndarray) -> np.ndarray:
    """The same 33 features, one patch at a time, written directly."""
    f = x.astype(np.float64)
    out = []
    for c in range(3):
        v = f[..., c].ravel() / 255.0
        out += [v.mean(), v.std(), *np.percentile(v, [10, 50, 90], method="inverted_cdf")]
    od = -np.log((f + 1.0) / 256.0)
    out += list(od.reshape(-1, 3).mean(0)) + list(od.reshape(-1, 3).std(0))
    mx = f.max(2)
    safe = np.maximum(mx, 1.0)
    sat = (mx - f.min(2)) / safe
    out += [
        ((f[..., 0] - 0.5 * (f[..., 1] + f[..., 2])) / safe).mean(),
        (0.8660254 * (f[..., 1] - f[..., 2]) / safe).mean(),
        sat.mean(),
        sat.std(),
        np.percentile(np.floor(sat * 255 + 0.5), 50, method="inverted_cdf") / 255.0,
        mx.mean() / 255.0,
        mx.std() / 255.0,
    ]
    g = (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]) / 255.0
    grad = np.hypot(np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1])
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    out += [grad.mean(), grad.std(), np.abs(lap).mean(), (sat > 0.15).mean(), (g < 0.4).mean()]
    return np.array(out)


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(64, 224, 224, 3), dtype=np.uint8)


@pytest.mark.benchmark(group="colour features 64x224x224")
def test_features_chunked(benchmark, patches) -> None:
    out = benchmark(patch_colour_features, patches)
    ref = np.stack([_features_one(p) for p in patches[:4]])
    np.testing.assert_allclose(out[:4], ref, rtol=2e-4, atol=2e-5)


@pytest.mark.benchmark(group="colour features 64x224x224")
def test_features_per_patch_loop(benchmark, patches) -> None:
    benchmark.pedantic(lambda: [_features_one(p) for p in patches], rounds=2, iterations=1)
