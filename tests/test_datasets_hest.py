"""HEST downloads: a fake offline Hugging Face cache and a hub on 127.0.0.1 (never the network)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from _hest_fixture import tiny_hest
from _hest_hub import REVISION, FakeHub, write_offline_cache
from mclstexp.datasets import hest, hest_bench
from mclstexp.exceptions import DatasetAccessError

hub_constants = pytest.importorskip("huggingface_hub.constants")
pytestmark = pytest.mark.filterwarnings("ignore::mclstexp.exceptions.DataWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    hest_root, bench_root = tiny_hest(tmp_path_factory.mktemp("tiny"))
    rows = [
        {"id": "TINY0", "oncotree_code": "IDC", "st_technology": "Visium"},
        {"id": "TINY1", "oncotree_code": "IDC", "st_technology": "Xenium"},
        {"id": "TINY2", "oncotree_code": "LUAD", "st_technology": "Visium"},
    ]
    pd.DataFrame(rows).to_csv(hest_root / "HEST_v1_1_0.csv", index=False)
    pd.DataFrame(rows[:1]).to_csv(hest_root / "HEST_v1_0_2.csv", index=False)  # older: ignored
    return hest_root, bench_root


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE when imported: set both the variable and the constant
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def test_offline_cache_is_read_without_network(tiny, tmp_path: Path, offline, monkeypatch) -> None:
    hest_root, bench_root = tiny
    cache = tmp_path / "hf" / "hub"
    write_offline_cache(cache, "MahmoodLab/hest", _files(hest_root))
    write_offline_cache(cache, "MahmoodLab/hest-bench", _files(bench_root))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))  # the standard cache
    a, b = hest(ids=["TINY2", "TINY0"])
    assert a.uns["mclstexp"]["section"] == "TINY2" and b.n_obs == 16
    assert REVISION in a.uns["mclstexp"]["source"]["h5ad"]
    # query on the newest metadata table, combined with ids
    assert [x.uns["mclstexp"]["section"] for x in hest(query={"oncotree_code": "IDC"})] == [
        "TINY0",
        "TINY1",
    ]
    assert hest(ids=["TINY1", "TINY2"], query={"st_technology": "Visium"})[0].n_obs == 16
    root = hest_bench(tasks=["TINY"])
    assert (root / "TINY" / "var_50genes.json").is_file()
    # a sample that is not cached: an error that says what to do
    with pytest.raises(DatasetAccessError) as err:
        hest(ids=["TENX95"], cache_dir=tmp_path / "empty")
    text = str(err.value)
    for needed in (
        "https://huggingface.co/datasets/MahmoodLab/hest",
        "HF_TOKEN",
        "hf auth login",
        str(tmp_path / "empty"),
        "HF_HUB_OFFLINE is set",
    ):
        assert needed in text
    with pytest.raises(ValueError, match="no metadata column 'organ'"):
        hest(query={"organ": "Breast"})
    with pytest.raises(ValueError, match="HEST-1k is over 1 TB"):
        hest()


def test_a_local_copy_is_read_as_is(tiny) -> None:
    hest_root, bench_root = tiny
    (a,) = hest(hest_root, query={"st_technology": "Xenium"})
    assert a.uns["mclstexp"]["section"] == "TINY1"
    assert hest_bench(bench_root, tasks=["TINY"]) == bench_root
    with pytest.raises(FileNotFoundError, match="not a HEST-1k folder"):
        hest(bench_root, ids=["TINY0"])
    with pytest.raises(FileNotFoundError, match="no HEST-Benchmark task 'IDC'"):
        hest_bench(bench_root, tasks=["IDC"])


@pytest.fixture
def bench_hub(tiny):
    hub = FakeHub("MahmoodLab/hest-bench", _files(tiny[1]))
    yield hub
    hub.close()


def test_download_resumes_files_and_bytes(bench_hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub resumes from the last whole chunk it received (10 MB by default): use
    # 64 KiB chunks so a cut in a 2 MB test file has something to resume from
    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    cache = tmp_path / "cache"
    h5 = "TINY/patches/TINY1.h5"
    bench_hub.fail.add(h5)  # the first run stops at this file
    with pytest.raises(DatasetAccessError, match="the hub refused the request"):
        hest_bench(tasks=["TINY"], cache_dir=cache, endpoint=bench_hub.url)
    done = [rel for rel in bench_hub.files if rel != h5 and bench_hub.gets(rel)]
    assert len(done) >= 1
    bench_hub.fail.clear()
    bench_hub.drop_once.add(h5)  # the second run: its transfer is cut in the middle
    root = hest_bench(tasks=["TINY"], cache_dir=cache, endpoint=bench_hub.url)
    ranges = bench_hub.gets(h5)
    assert ranges[-1] is not None and ranges[-1].startswith("bytes=")  # resumed, not restarted
    for rel in done:  # finished files were not fetched again
        assert len(bench_hub.gets(rel)) == 1
    assert (root / h5).read_bytes() == bench_hub.files[h5].read_bytes()
    assert root.parent.name == "snapshots" and root.name == REVISION
    # then offline, from the cache only
    n = len(bench_hub.log)
    assert hest_bench(tasks=["TINY"], cache_dir=cache, download=False) == root
    assert len(bench_hub.log) == n


def test_gated_dataset_says_what_to_do(tiny, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-token-here"))
    hub = FakeHub("MahmoodLab/hest", _files(tiny[0]))
    hub.gated = True
    try:
        with pytest.raises(DatasetAccessError) as err:
            hest(ids=["TINY0"], cache_dir=tmp_path / "c", endpoint=hub.url)
    finally:
        hub.close()
    text = str(err.value)
    assert "gated" in text and "https://huggingface.co/datasets/MahmoodLab/hest" in text
    assert "HF_TOKEN" in text and "no token was found" in text
