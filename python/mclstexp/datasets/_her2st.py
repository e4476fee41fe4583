"""The public her2st dataset (Andersson et al. 2021): a local copy, or a checked download (pooch).

The package ships a registry (``mclstexp/data/her2st_registry.tsv``: path, bytes, sha256) of the
files the readers use: counts, spot files, the five H&E images (sections C2-C6) and the labels.
Downloads go to ``<cache>/her2st`` (see :func:`mclstexp.datasets.default_cache_dir`) and every file
is checked against its sha256; a file that does not match is an error, never used.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from anndata import AnnData

from mclstexp.io.her2st import read_her2st

#: Base URL of the public her2st repository; the registry paths (``data/ST-cnts/A1.tsv.gz``, ...)
#: are appended to it. Override with ``url=`` or ``$MCLSTEXP_HER2ST_URL`` (e.g. a mirror).
DEFAULT_URL = "https://github.com/almaan/her2st/raw/master/"


def her2st_registry() -> dict[str, tuple[int, str]]:
    """The shipped registry: relative path -> (bytes, sha256).

    Examples
    --------
    >>> reg = her2st_registry()
    >>> reg["data/ST-cnts/C2.tsv.gz"][0]
    821408
    """
    text = resources.files("mclstexp").joinpath("data", "her2st_registry.tsv").read_text()
    out: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        rel, size, sha = line.split("\t")
        out[rel] = (int(size), sha)
    return out


def _files_for(section: str, registry: dict[str, tuple[int, str]], labels: bool) -> list[str]:
    files = [f"data/ST-cnts/{section}.tsv.gz", f"data/ST-spotfiles/{section}_selection.tsv"]
    missing = [f for f in files if f not in registry]
    if missing:
        known = sorted(
            p.split("/")[-1].removesuffix(".tsv.gz") for p in registry if "/ST-cnts/" in p
        )
        raise ValueError(f"sections: {section!r} is not in the her2st registry; known: {known}")
    files += sorted(p for p in registry if p.startswith(f"data/ST-imgs/{section[:1]}/{section}/"))
    label = f"data/ST-pat/lbl/{section}_labeled_coordinates.tsv"
    if labels and label in registry:
        files.append(label)
    return files


def _has_layout(path: Path) -> Path | None:
    for cand in (path, path / "data", path / "her2st" / "data"):
        if (cand / "ST-cnts").is_dir():
            return cand
    return None


def her2st(
    path: str | os.PathLike[str] | None = None,
    *,
    sections: list[str] | tuple[str, ...] | None = None,
    url: str | None = None,
    labels: bool = True,
    download: bool = True,
    progress: bool = False,
    retries: int = 2,
) -> list[AnnData]:
    """Load the her2st sections, from a local copy or downloaded with checksums.

    Parameters
    ----------
    path
        A local copy (the her2st repository, its ``data`` folder, or a folder holding ``her2st``)
        is read as is. Otherwise ``path`` is where downloads go (default ``<cache>/her2st``).
    sections
        Section ids to load (default: every section with counts: the whole local copy, or the
        whole registry when downloading).
    url
        Base URL to download from (default ``$MCLSTEXP_HER2ST_URL`` or :data:`DEFAULT_URL`).
    labels
        Attach (and download) pathologist labels where available.
    download
        Allow downloading missing files; ``False`` raises ``FileNotFoundError`` instead.
    progress
        Show download progress bars.
    retries
        How many times a failed download (network error or checksum mismatch) is retried.

    Returns
    -------
    list of AnnData
        One per section (see :func:`mclstexp.io.read_her2st`), in the order of ``sections``.

    Examples
    --------
    >>> sections = her2st("../shared/data/her2st", sections=["C2", "C3"])  # doctest: +SKIP
    >>> sections = her2st(sections=["B1"])  # downloads ~0.7 MB  # doctest: +SKIP
    """
    if isinstance(sections, str):
        sections = [sections]
    if path is not None:
        local = _has_layout(Path(path).expanduser())
        if local is not None:
            if sections is None:
                sections = sorted(
                    p.name.removesuffix(".tsv.gz") for p in (local / "ST-cnts").glob("*.tsv.gz")
                )
            return [read_her2st(local, s, labels=labels) for s in sections]
    from mclstexp.datasets._synthetic import default_cache_dir

    target = Path(path).expanduser() if path is not None else default_cache_dir() / "her2st"
    registry = her2st_registry()
    if sections is None:
        sections = sorted(
            p.split("/")[-1].removesuffix(".tsv.gz") for p in registry if "/ST-cnts/" in p
        )
    wanted = [f for s in sections for f in _files_for(s, registry, labels)]
    _fetch(target, wanted, registry, url, download=download, progress=progress, retries=retries)
    return [read_her2st(target / "data", s, labels=labels) for s in sections]


def _fetch(
    target: Path,
    files: list[str],
    registry: dict[str, tuple[int, str]],
    url: str | None,
    *,
    download: bool,
    progress: bool,
    retries: int,
) -> None:
    try:
        import pooch
    except ImportError as err:  # pragma: no cover - pooch is a dependency
        raise ImportError("downloading her2st needs pooch: pip install pooch") from err
    base = url or os.environ.get("MCLSTEXP_HER2ST_URL") or DEFAULT_URL
    if not base.endswith("/"):
        base += "/"
    if not download:
        absent = [
            f
            for f in files
            if not (target / f).is_file() or pooch.file_hash(str(target / f)) != registry[f][1]
        ]
        if absent:
            raise FileNotFoundError(
                f"{target}: {len(absent)} her2st file(s) missing or not matching their sha256 "
                f"(e.g. {absent[:3]}) and download=False; pass download=True or a local copy"
            )
        return
    store = pooch.create(
        path=target,
        base_url=base,
        registry={f: f"sha256:{registry[f][1]}" for f in files},
        retry_if_failed=max(0, int(retries)),
    )
    for f in files:
        try:
            store.fetch(f, progressbar=progress)
        except ValueError as err:  # pooch: hash mismatch
            raise ValueError(
                f"{base}{f}: the downloaded file does not match the registry's sha256 ({err}); "
                "the source changed or is corrupt: try another url= (a mirror) or a local copy"
            ) from err
        except Exception as err:  # requests/pooch network errors
            raise OSError(f"{base}{f}: download failed ({type(err).__name__}: {err})") from err
