"""The shared argument checks (``mclstexp._validate``) and that every native caller uses them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mclstexp._validate import check_n_threads, dense_matrix
from mclstexp.baselines import TrainingMeanBaseline
from mclstexp.metrics import pearson_per_gene
from mclstexp.pp import StainNormalizer, to_tensor_layout
from mclstexp.retrieval import ExactIndex, topk_cosine


def test_check_n_threads_accepts_ints_and_none_only() -> None:
    assert check_n_threads(None) is None
    assert check_n_threads(3) == 3 and type(check_n_threads(np.int32(2))) is int
    for bad in (True, 2.0, "2"):
        with pytest.raises(TypeError, match="n_threads: expected an int"):
            check_n_threads(bad)
    with pytest.raises(ValueError, match="n_threads: must be >= 1"):
        check_n_threads(0)


@pytest.mark.parametrize(
    "call",
    [
        lambda n: to_tensor_layout(np.zeros((1, 2, 2, 3), np.uint8), n_threads=n),
        lambda n: StainNormalizer("reinhard", n_threads=n),
        lambda n: ExactIndex(np.eye(2), n_threads=n),
        lambda n: ExactIndex(np.eye(2)).search(np.eye(2), k=1, n_threads=n),
        lambda n: topk_cosine(np.eye(2), np.eye(2), k=1, n_threads=n),
    ],
)
def test_every_native_caller_checks_threads_the_same_way(call) -> None:  # type: ignore[no-untyped-def]
    # retrieval used to take True for 1 thread (operator.index); pp rejected it: one rule now
    with pytest.raises(TypeError, match="n_threads: expected an int"):
        call(True)
    with pytest.raises(ValueError, match="n_threads: must be >= 1"):
        call(0)


def test_dense_matrix_is_the_statistics_input_of_metrics_and_baselines() -> None:
    y = sp.random(20, 4, density=0.5, format="csr", random_state=0)
    np.testing.assert_array_equal(dense_matrix(y, "y"), y.toarray())
    a = np.ones((3, 2))
    assert dense_matrix(a, "a") is a  # float64 2-D input is not copied
    bad = np.ones((5, 2))
    bad[0, 0] = np.nan
    for call in (
        lambda: pearson_per_gene(bad, np.ones((5, 2))),
        lambda: TrainingMeanBaseline().fit(np.zeros((5, 1)), bad),
    ):
        with pytest.raises(ValueError, match="contains NaN or infinite values"):
            call()
    with pytest.raises(ValueError, match="2-D"):
        dense_matrix(np.ones((2, 2, 2)), "y")
    # a 1-D expression vector is one gene for the baselines
    fitted = TrainingMeanBaseline().fit(np.zeros((3, 1)), np.array([1.0, 2.0, 3.0]))
    assert fitted.predict(np.zeros((1, 1))).tolist() == [[2.0]]
