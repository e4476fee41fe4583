"""Preset variants: loaded from the preset's JSON, trained side by side, the one with the best
inner-CV score on the training sections kept and its files linked into the fold's folder."""

from __future__ import annotations

import json
import math

import pytest

from mclstexp.models import load_preset, load_variants
from mclstexp.workflow.variants import FOLD_FILES, choose_variant, variant_score


def test_the_cpu_preset_has_a_frozen_and_a_trained_variant() -> None:
    variants = load_variants("cpu", train__epochs=3)
    assert list(variants) == ["frozen", "trained"]
    frozen, trained = variants["frozen"], variants["trained"]
    assert frozen == load_preset("cpu", train__epochs=3)  # the base configuration
    assert (trained.model.trained_stages, trained.model.input_size) == (2, 112)
    assert not trained.train.freeze_backbone and trained.train.stage_cache
    assert trained.train.epochs == 3 and trained.model.backbone == frozen.model.backbone
    assert load_variants("default") == {}


@pytest.mark.parametrize(
    ("variants", "match"),
    [
        ([1, 2], "'variants' must be an object"),
        ({"a": {}, "b": {"optim": {}}}, "variant 'b' must be an object with keys"),
        ({"a": {}}, "two or more variants"),
        ({"a": {}, "b": {"train": {"epochs": "many"}}}, r"variant 'b'.*TrainConfig.epochs"),
    ],
)
def test_a_bad_variant_is_refused_on_load_with_its_name(tmp_path, variants, match) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"model": {}, "train": {}, "variants": variants}))
    with pytest.raises(ValueError, match=match):
        load_preset(path)  # whatever runs the preset, a broken variant fails at once
    with pytest.raises(ValueError, match=match):
        load_variants(path)


def _choice(blend=None, context=None, k=None) -> dict:
    hs = {}
    if blend is not None:
        hs = {"chosen": {"ridge": -1.0, "blend": blend}}
        if context is not None:
            hs["chosen"]["blend+context"] = context
    ks = {"k": 20, "scores": {"20": k, "50": -1.0}} if k is not None else {}
    return {"head_selection": hs or None, "k_selection": ks or None}


def test_the_variant_score_is_the_best_heads_inner_score() -> None:
    assert variant_score(_choice(blend=0.3, context=0.4, k=0.1)) == 0.4
    assert variant_score(_choice(blend=0.3, k=0.1)) == 0.3
    assert variant_score(_choice(k=0.1)) == 0.1
    assert math.isnan(variant_score(_choice()))


def test_the_best_variant_is_kept_and_its_files_linked_into_the_fold(tmp_path) -> None:
    for name in ("a", "b"):
        folder = tmp_path / "variants" / name
        folder.mkdir(parents=True)
        for f in FOLD_FILES[:3]:
            (folder / f).write_text(f"{name}/{f}")
    (tmp_path / "model.pt").write_text("stale")  # a previous run's choice is replaced
    outcomes = {
        "a": (None, (None, None, _choice(blend=0.2, context=0.25))),
        "b": (None, (None, None, _choice(blend=0.2, context=0.31))),
    }
    best, record = choose_variant(outcomes, tmp_path)
    assert best == "b" and record["variant"] == "b"
    assert record["scores"] == {"a": 0.25, "b": 0.31}
    for f in FOLD_FILES[:3]:
        assert (tmp_path / f).read_text() == f"b/{f}"
        assert (tmp_path / f).stat().st_ino == (tmp_path / "variants" / "b" / f).stat().st_ino
    # ties and missing scores keep the first listed; one candidate needs no record
    tie = {"a": outcomes["a"], "c": (None, (None, None, _choice(blend=0.2, context=0.25)))}
    assert choose_variant(tie, tmp_path)[0] == "a"
    nan = {"a": (None, (None, None, _choice())), "b": outcomes["b"]}
    assert choose_variant(nan, tmp_path)[0] == "b"
    assert choose_variant({"": outcomes["a"]}, tmp_path) == ("", None)
