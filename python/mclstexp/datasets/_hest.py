"""HEST-1k and HEST-Benchmark from the Hugging Face hub (``huggingface_hub.snapshot_download``).

Both are dataset repositories: ``MahmoodLab/hest`` (HEST-1k, gated: accept the terms on its page,
then log in) and ``MahmoodLab/hest-bench`` (HEST-Benchmark). Files go to the standard Hugging
Face cache (``HF_HOME`` / ``HF_HUB_CACHE``; or ``cache_dir=``), as HEST's own tutorial downloads
them (``snapshot_download(repo_id, repo_type="dataset", allow_patterns=...)``,
tutorials/1-Downloading-HEST-1k.ipynb and ``hest.bench.benchmark.benchmark`` at commit afd42c3).

Resuming: a download that stops keeps every file it finished in the cache, and the next call
fetches only the missing ones; within a file, ``huggingface_hub`` retries a dropped transfer from
the byte it reached (``Range`` requests). Offline (``HF_HUB_OFFLINE=1`` or ``download=False``),
the cached snapshot is read and nothing touches the network. Every hub failure becomes a
:class:`~mclstexp.exceptions.DatasetAccessError` saying what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anndata import AnnData

from mclstexp.exceptions import DatasetAccessError

#: Hugging Face dataset repositories of HEST-1k and HEST-Benchmark.
HEST_REPO = "MahmoodLab/hest"
HEST_BENCH_REPO = "MahmoodLab/hest-bench"
_CSV = re.compile(r"^HEST_v(\d+)_(\d+)_(\d+)\.csv$")


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as err:  # pragma: no cover - a dependency of timm
        raise ImportError(
            "HEST downloads need huggingface_hub: pip install huggingface_hub"
        ) from err
    return huggingface_hub


def hub_error(exc: BaseException, repo_id: str, cache: str) -> DatasetAccessError | None:
    """The :class:`~mclstexp.exceptions.DatasetAccessError` for a hub failure, or ``None`` when
    ``exc`` is not one.

    Examples
    --------
    >>> hub_error(ValueError("x"), HEST_REPO, "/tmp") is None
    True
    """
    from huggingface_hub import constants, errors, get_token

    if isinstance(exc, errors.GatedRepoError):
        reason = "the dataset is gated and this account has no access to it (or no token was sent)"
    elif isinstance(exc, errors.RevisionNotFoundError):
        reason = "the revision does not exist"
    elif isinstance(exc, errors.RepositoryNotFoundError):
        reason = "the repository does not exist or is not visible without a token"
    elif isinstance(exc, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled):
        reason = "the files are not (all) in the local cache and the hub is not reachable (offline)"
    elif isinstance(exc, errors.HfHubHTTPError):
        reason = f"the hub refused the request ({str(exc).splitlines()[0]})"
    elif isinstance(exc, ConnectionError | TimeoutError) or type(exc).__name__ in (
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RemoteProtocolError",
    ):
        reason = "the hub cannot be reached (no network?) and nothing usable is cached"
    else:
        return None
    token = "a token was found" if get_token() else "no token was found"
    offline = " HF_HUB_OFFLINE is set: only the cache is read." if constants.HF_HUB_OFFLINE else ""
    return DatasetAccessError(
        "\n".join(
            [
                f"cannot get dataset {repo_id}: {reason}",
                f"- dataset page (terms, access request): https://huggingface.co/datasets/{repo_id}",
                f"- gated datasets need an account that accepted the terms and its token ({token}):"
                " set HF_TOKEN=hf_... or run `hf auth login`",
                f"- cache folder: {cache} (set by HF_HOME or HF_HUB_CACHE, or cache_dir=).{offline}"
                f" Without network, download once where there is some (`hf download {repo_id} "
                "--repo-type dataset --include ...`), copy the cache and set HF_HUB_OFFLINE=1",
                "- or pass root= a local copy of the dataset's folder",
            ]
        )
    )


def _snapshot(
    repo_id: str,
    *,
    allow: list[str],
    ignore: list[str] | None = None,
    cache_dir: str | os.PathLike[str] | None,
    revision: str | None,
    download: bool,
    endpoint: str | None,
) -> Path:
    """``snapshot_download`` of ``allow`` into the cache; hub failures as DatasetAccessError."""
    hub = _hub()
    cache = str(cache_dir) if cache_dir is not None else str(hub.constants.HF_HUB_CACHE)
    try:
        folder = hub.snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision,
            allow_patterns=allow,
            ignore_patterns=ignore,
            cache_dir=cache_dir,
            local_files_only=not download,
            endpoint=endpoint,
        )
    except Exception as exc:
        err = hub_error(exc, repo_id, cache)
        if err is None:
            raise
        raise err from exc
    return Path(folder)


def _is_hest_copy(path: Path) -> bool:
    return (path / "st").is_dir() and (path / "metadata").is_dir()


def _metadata_table(folder: Path) -> Any:
    """The samples' metadata: the newest ``HEST_v*.csv`` of the folder, else its JSON files."""
    import json

    import pandas as pd

    csvs = sorted(
        (tuple(map(int, m.groups())), p)
        for p in folder.glob("HEST_v*.csv")
        if (m := _CSV.match(p.name))
    )
    if csvs:
        return pd.read_csv(csvs[-1][1])
    rows = [json.loads(p.read_text()) for p in sorted((folder / "metadata").glob("*.json"))]
    return pd.DataFrame(rows)


def select_hest_ids(table: Any, query: Mapping[str, Any]) -> list[str]:
    """Sample ids of the metadata ``table`` whose columns equal ``query``'s values (a value or
    a list of accepted values per column).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"id": ["A", "B", "C"], "organ": ["Breast", "Lung", "Breast"]})
    >>> select_hest_ids(t, {"organ": "Breast"})
    ['A', 'C']
    """
    import numpy as np

    mask = np.ones(len(table), dtype=bool)
    for column, wanted in query.items():
        if column not in table:
            raise ValueError(f"query: no metadata column {column!r} (columns: {list(table)})")
        values = [wanted] if isinstance(wanted, str | int | float) else list(wanted)
        mask &= table[column].isin(values).to_numpy()
    return [str(i) for i in table.loc[mask, "id"]]


def hest(
    root: str | os.PathLike[str] | None = None,
    *,
    ids: Sequence[str] | None = None,
    query: Mapping[str, Any] | None = None,
    patches: bool = True,
    download: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> list[AnnData]:
    """HEST-1k samples by id or by metadata, read with :func:`mclstexp.io.read_hest`.

    Parameters
    ----------
    root
        A local copy of HEST-1k (holding ``st/``, ``metadata/``, ``wsis/``): read as is, never
        downloaded to. Default: the hub, through the Hugging Face cache.
    ids
        Sample ids, e.g. ``["TENX95", "TENX99"]``.
    query
        Metadata filter, column -> value or list of values (``{"oncotree_code": "IDC",
        "st_technology": ["Visium", "Xenium"]}``), over ``HEST_v*.csv`` (downloaded first) or,
        for a local copy without it, the ``metadata/*.json`` files. Combined with ``ids`` (both
        must hold).
    patches
        Also fetch HEST's 224 px patches (``patches/<id>.h5``).
    download
        ``False``: the cache only (as ``HF_HUB_OFFLINE=1``).
    revision, cache_dir, endpoint
        Passed to ``snapshot_download`` (a pinned commit; another cache; a hub mirror).

    Returns
    -------
    list of AnnData
        One per sample, in the order of ``ids`` (else of the metadata table).

    Raises
    ------
    mclstexp.exceptions.DatasetAccessError
        Gated without access, offline with the files missing, no network (message says what to do).

    Examples
    --------
    >>> samples = hest(ids=["TENX95"])  # needs access to MahmoodLab/hest  # doctest: +SKIP
    >>> samples = hest("hest_data", query={"oncotree_code": "IDC"})  # doctest: +SKIP
    """
    from mclstexp.io.hest import read_hest

    if ids is None and query is None:
        raise ValueError("ids / query: say which samples (HEST-1k is over 1 TB)")
    local = Path(root).expanduser() if root is not None else None
    if local is not None and not _is_hest_copy(local):
        raise FileNotFoundError(
            f"{local}: not a HEST-1k folder (no st/ and metadata/); omit root to download into "
            "the Hugging Face cache (cache_dir= to choose it)"
        )
    get = {"cache_dir": cache_dir, "revision": revision, "download": download}
    folder = local
    wanted = list(ids) if ids is not None else None
    if query is not None:
        if folder is None:
            folder = _snapshot(HEST_REPO, allow=["HEST_v*.csv"], endpoint=endpoint, **get)
        chosen = select_hest_ids(_metadata_table(folder), query)
        wanted = chosen if wanted is None else [i for i in wanted if i in set(chosen)]
    assert wanted is not None
    if local is None and wanted:
        files = ["st/{}.h5ad", "wsis/{}.tif", "metadata/{}.json", *(["patches/{}.h5"] * patches)]
        allow = [f.format(i) for i in wanted for f in files]
        folder = _snapshot(HEST_REPO, allow=allow, endpoint=endpoint, **get)
    assert folder is not None or not wanted
    missing = [i for i in wanted if folder is None or not (folder / "st" / f"{i}.h5ad").is_file()]
    if missing:
        raise ValueError(f"ids: {missing} are not HEST-1k samples (no st/<id>.h5ad in {folder})")
    return [read_hest(folder, i) for i in wanted] if folder is not None else []


def hest_bench(
    root: str | os.PathLike[str] | None = None,
    *,
    tasks: Sequence[str] | None = None,
    download: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> Path:
    """The HEST-Benchmark folder holding ``tasks`` (each checked with
    :func:`mclstexp.io.read_hest_task`): ``root`` when it is a local copy, else the cached
    snapshot of ``MahmoodLab/hest-bench`` (downloaded as needed; HEST's ``fm_v1/`` weights and
    ``patches_vis/`` previews are not fetched).

    Examples
    --------
    >>> root = hest_bench(tasks=["IDC", "LUNG"])  # doctest: +SKIP
    >>> # then: mclstexp bench hest --root ROOT --tasks IDC LUNG --encoders resnet50
    """
    from mclstexp.io.hest_bench import HEST_BENCH_TASKS, read_hest_task

    tasks = list(HEST_BENCH_TASKS if tasks is None else tasks)
    if isinstance(tasks, str) or not tasks:
        raise ValueError("tasks: pass a list of task names, e.g. ['IDC', 'LUNG']")
    local = Path(root).expanduser() if root is not None else None
    if local is not None:
        folder = local
    else:
        folder = _snapshot(
            HEST_BENCH_REPO,
            allow=[f"{t}/*" for t in tasks],
            ignore=["fm_v1/*", "*/patches_vis/*"],
            cache_dir=cache_dir,
            revision=revision,
            download=download,
            endpoint=endpoint,
        )
    for t in tasks:
        read_hest_task(folder, t)
    return folder
