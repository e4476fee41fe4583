"""Cross-validation folds: coverage, disjointness, determinism, serialisation, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from mclstexp import _keys as K
from mclstexp.train.folds import (
    Fold,
    leave_one_patient_out,
    leave_one_section_out,
    load_folds,
    save_folds,
)

SECTIONS = ["A1", "A2", "A3", "B1", "B2", "C1", "C2", "D1"]
PATIENTS = [s[0] for s in SECTIONS]


def test_leave_one_section_out_covers_every_section_once() -> None:
    folds = leave_one_section_out(SECTIONS)
    assert [f.test for f in folds] == [(s,) for s in SECTIONS]
    for f in folds:
        assert set(f.train) == set(SECTIONS) - set(f.test)
        assert f.val == ()


def test_leave_one_patient_out_never_mixes_a_patient() -> None:
    folds = leave_one_patient_out(SECTIONS, PATIENTS, n_val=1, seed=3)
    assert [f.name for f in folds] == ["patient=A", "patient=B", "patient=C", "patient=D"]
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(SECTIONS)
    for f in folds:
        test_p = {s[0] for s in f.test}
        assert len(test_p) == 1
        assert test_p.isdisjoint({s[0] for s in f.train})
        assert test_p.isdisjoint({s[0] for s in f.val})
        # validation holds out whole patients too
        assert {s[0] for s in f.val}.isdisjoint({s[0] for s in f.train})
        assert len({s[0] for s in f.val}) == 1
        assert set(f.train) | set(f.val) | set(f.test) == set(SECTIONS)


def test_seeded_and_deterministic() -> None:
    a = leave_one_section_out(SECTIONS, n_val=2, shuffle=True, seed=7)
    b = leave_one_section_out(SECTIONS, n_val=2, shuffle=True, seed=7)
    c = leave_one_section_out(SECTIONS, n_val=2, shuffle=True, seed=8)
    assert a == b
    assert a != c
    assert sorted(f.test[0] for f in a) == sorted(SECTIONS)
    assert all(len(f.val) == 2 and len(f.train) == 5 for f in a)


def test_patients_as_mapping_and_from_anndata() -> None:
    mapping = dict(zip(SECTIONS, PATIENTS, strict=True))
    assert leave_one_patient_out(SECTIONS, mapping) == leave_one_patient_out(SECTIONS, PATIENTS)
    adatas = []
    for s in SECTIONS[:4]:
        a = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
        a.uns[K.UNS] = {K.UNS_SECTION: s, K.UNS_PATIENT: s[0]}
        adatas.append(a)
    folds = leave_one_patient_out(adatas)
    assert [f.test for f in folds] == [("A1", "A2", "A3"), ("B1",)]
    assert leave_one_section_out(adatas)[0].test == ("A1",)


def test_holdout_folds_are_what_the_main_job_runs() -> None:
    # `mclstexp run --holdout B1 A1` and `mclstexp train --holdout A1` take their folds here
    folds = leave_one_section_out(SECTIONS, holdout=["B1", "A1"])
    assert [f.test for f in folds] == [("B1",), ("A1",)]
    assert folds[0].train == tuple(s for s in SECTIONS if s != "B1")
    with pytest.raises(ValueError, match=r"holdout: unknown section\(s\) \['Z9'\]"):
        leave_one_section_out(SECTIONS, holdout=["Z9"])


def test_section_ids_come_from_the_one_accessor() -> None:
    a = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    a.obs[K.SECTION] = ["C1", "C1"]  # no uns id: the single obs value is the id
    b = ad.AnnData(np.zeros((1, 1), dtype=np.float32), uns={K.UNS: {K.UNS_SECTION: "D1"}})
    assert [f.test for f in leave_one_section_out([a, b])] == [("C1",), ("D1",)]
    with pytest.raises(ValueError, match="no uns"):
        leave_one_section_out([ad.AnnData(np.zeros((1, 1), np.float32)), b])


def test_json_round_trip(tmp_path: Path) -> None:
    folds = leave_one_patient_out(SECTIONS, PATIENTS, n_val=1)
    path = tmp_path / "folds.json"
    save_folds(path, folds)
    assert load_folds(path) == folds
    assert Fold.from_dict(folds[0].to_dict()) == folds[0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: leave_one_section_out(["A1"]), "at least 2"),
        (lambda: leave_one_section_out(["A1", "A1", "B1"]), "duplicated"),
        (lambda: leave_one_section_out("A1B1"), "string"),
        (lambda: leave_one_section_out(["A1", "B1"], n_val=1), "n_val"),
        (lambda: leave_one_patient_out(["A1", "A2"], ["A", "A"]), "at least 2 patients"),
        (lambda: leave_one_patient_out(["A1", "B1"], ["A"]), "one patient id per section"),
        (lambda: leave_one_patient_out(["A1", "B1"], {"A1": "A"}), "no patient given"),
        (lambda: leave_one_patient_out(["A1", "B1"], ["A", "B"], n_val=1), "n_val"),
        (lambda: leave_one_patient_out(["A1", "B1"]), "patients="),
        (lambda: Fold("x", train=("A1",), test=("A1",)), "overlap"),
        (lambda: Fold.from_dict({"name": "x", "train": ["A1"]}), "missing keys"),
    ],
)
def test_bad_input(call, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_folds_do_not_import_torch() -> None:
    code = "import sys, mclstexp.train.folds; print(int('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
