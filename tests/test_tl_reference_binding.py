"""A reference is bound to the model it was built with; prediction refuses any other pairing.

Regression for issue #18, item 6: ``mclstexp predict`` accepted a ``reference.npz`` of another
gene panel, another fold, or a checkpoint with renamed genes, and predicted nonsense under made-up
gene names. The reference now records the model's identity (a content hash of its weights, its
genes, its embedding size) and prediction checks it before any patch is cut or embedded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from PIL import Image

from _model_fixtures import make_sections
from mclstexp.cli.main import main
from mclstexp.exceptions import ReferenceMismatchError
from mclstexp.models import load_preset
from mclstexp.tl import embed as embed_module
from mclstexp.tl.predict import predict_expression
from mclstexp.tl.reference import Reference, build_reference, model_identity
from mclstexp.train import load_checkpoint, train_model

PATCH = 24


def _train(run_dir: Path, seed: int, n_genes: int = 12) -> tuple[object, Reference]:
    """A tiny trained model (model.pt in run_dir) and its reference.npz, as train_fold writes."""
    preset = load_preset("cpu", train__epochs=1, train__batch_size=8, model__sequence_length=2)
    m = preset.model
    m.backbone, m.pooling, m.feature_views = "test_resnet", "global", "single"
    sections = make_sections(2, grid=5, n_genes=n_genes, patch=PATCH)
    result = train_model(sections, preset, run_dir=run_dir, device="cpu", seed=seed, progress=False)
    values = {"default": [np.asarray(s.adata.X) for s in sections]}
    ref = build_reference(result.model, sections, values=values, device="cpu")
    ref.meta["default_target"] = "default"
    ref.save(run_dir / "reference.npz")
    return result.model, ref


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("a", "b", "panel")}
    _train(dirs["a"], seed=0)
    _train(dirs["b"], seed=1)  # another fold / another training: other weights
    _train(dirs["panel"], seed=0, n_genes=10)  # another gene panel
    return dirs


@pytest.fixture()
def no_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("patches were embedded before the reference was checked")

    monkeypatch.setattr(embed_module, "embed_patches", fail)


def _spots(n: int = 6) -> object:
    import anndata as ad

    adata = ad.AnnData(np.zeros((n, 1), np.float32))
    adata.obsm["spatial"] = np.zeros((n, 2))
    return adata


def test_the_reference_records_the_models_identity(runs: dict[str, Path]) -> None:
    model, _ = load_checkpoint(runs["a"] / "model.pt")
    ref = Reference.load(runs["a"] / "reference.npz")
    identity = ref.meta["model"]
    assert identity == model_identity(model)  # same weights after the round trip through disk
    assert identity["genes"] == ref.genes and identity["embedding_dim"] == ref.embeddings.shape[1]
    assert len(identity["weights_sha256"]) == 64
    ref.check_model(model)  # its own model: accepted


@pytest.mark.parametrize(
    ("other", "match"), [("b", "weights"), ("panel", "genes")], ids=["other fold", "other panel"]
)
def test_another_models_reference_is_refused_before_embedding(
    runs: dict[str, Path], other: str, match: str, no_embedding: None
) -> None:
    model, _ = load_checkpoint(runs["a"] / "model.pt")
    ref = Reference.load(runs[other] / "reference.npz")
    patches = np.zeros((6, PATCH, PATCH, 3), np.uint8)
    with pytest.raises(ReferenceMismatchError, match=match):
        predict_expression(_spots(), model, ref, patches=patches, k=3, device="cpu")


def test_renamed_genes_and_another_embedding_size_are_refused(runs: dict[str, Path]) -> None:
    model, _ = load_checkpoint(runs["a"] / "model.pt")
    ref = Reference.load(runs["a"] / "reference.npz")
    model.genes = [f"renamed{i}" for i in range(len(model.genes))]  # a checkpoint edited so
    with pytest.raises(ReferenceMismatchError, match="genes"):
        ref.check_model(model)
    model, _ = load_checkpoint(runs["a"] / "model.pt")
    ref.embeddings = np.ascontiguousarray(ref.embeddings[:, :-1])
    with pytest.raises(ReferenceMismatchError, match="embedding size"):
        ref.check_model(model)


def test_a_reference_without_an_identity_is_used_with_a_warning(runs: dict[str, Path]) -> None:
    model, _ = load_checkpoint(runs["a"] / "model.pt")
    ref = Reference.load(runs["a"] / "reference.npz")
    del ref.meta["model"]  # written before references recorded their model
    with pytest.warns(UserWarning, match="records no model identity"):
        ref.check_model(model)


def _slide(tmp_path: Path) -> Path:
    """A small slide with coloured 'tissue' in the middle (a grid of patches to predict)."""
    rng = np.random.default_rng(0)
    img = np.full((240, 240, 3), 242, np.uint8)
    img[40:200, 40:200] = rng.integers([120, 40, 110], [200, 90, 170], (160, 160, 3))
    path = tmp_path / "slide.png"
    Image.fromarray(img).save(path)
    return path


def test_cli_refuses_a_mismatch_and_bad_arguments_before_tiling(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide, out = _slide(tmp_path), tmp_path / "pred.h5ad"
    base = ["predict", "--model", str(runs["a"]), "--grid", str(slide), "--out", str(out)]
    base += ["--device", "cpu", "--k", "3"]
    other = str(runs["b"] / "reference.npz")
    with pytest.raises(ReferenceMismatchError, match=r"reference\.npz.*model\.pt"):
        main([*base, "--reference", other, "--debug"])
    assert main([*base, "--reference", other]) == 2  # the same, as one line
    assert "does not belong to" in capsys.readouterr().err
    assert not out.with_suffix(".zarr").exists()  # refused before any patch was cut
    assert main([*base[:-2], "--k", "0"]) == 2
    assert "--k: must be >= 1" in capsys.readouterr().err
    assert not out.with_suffix(".zarr").exists()
    assert main(base) == 0  # the matching pair predicts
    assert out.is_file()


def test_the_hash_follows_the_weights(runs: dict[str, Path]) -> None:
    """The hash is remembered per model, until a tensor changes (in place or replaced)."""
    import torch

    model, _ = load_checkpoint(runs["a"] / "model.pt")
    first = model_identity(model)["weights_sha256"]
    assert model_identity(model)["weights_sha256"] == first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model_identity(model)["weights_sha256"] != first
