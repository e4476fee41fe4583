"""Test helper: a Hugging Face hub on 127.0.0.1 and a fake offline hub cache (never the internet).

The server answers the requests ``huggingface_hub.snapshot_download`` makes (huggingface_hub
2.x, read from its source): ``GET /api/datasets/<repo>/revision/<rev>`` (repository info with the
commit ``sha``), ``GET /api/datasets/<repo>/tree/<sha>`` (the recursive file listing), ``HEAD``
and ``GET /datasets/<repo>/resolve/<sha>/<path>`` (``X-Repo-Commit``, ``ETag``,
``Content-Length``; ``Range`` requests answered with 206). It can cut a file's first transfer in
the middle (``drop_once``), fail a file (``fail``), or answer as a gated repository (``gated``).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from _hub_cache import REVISION, snapshot_dir


def write_offline_cache(
    cache: Path, repo_id: str, files: dict[str, Path], rev: str = REVISION
) -> Path:
    """A hub cache entry as ``huggingface_hub`` leaves it: ``refs/main`` holding the commit and
    ``snapshots/<commit>/<path>`` files (copied here; the hub symlinks them to ``blobs/``)."""
    import shutil

    snap = snapshot_dir(cache, repo_id, kind="dataset", revision=rev)
    for rel, src in files.items():
        dst = snap / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return snap


class FakeHub:
    """Serve ``files`` (repo path -> local file) of one dataset repository ``repo_id``."""

    def __init__(self, repo_id: str, files: dict[str, Path]) -> None:
        self.repo_id = repo_id
        self.files = {k: Path(v) for k, v in files.items()}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_once: set[str] = set()
        self.fail: set[str] = set()
        self.gated = False
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, rel: str) -> list[str | None]:
        """The ``Range`` headers of the GET requests for file ``rel``."""
        return [r for m, p, r in self.log if m == "GET" and p.endswith("/" + rel)]

    # ------------------------------------------------------------------------------ answers
    def _json(self, h: http.server.BaseHTTPRequestHandler, body: object, head: bool) -> None:
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def _error(self, h: http.server.BaseHTTPRequestHandler, code: int, error_code: str) -> None:
        h.send_response(code)
        h.send_header("X-Error-Code", error_code)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _answer(self, h: http.server.BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.log.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        api = f"/api/datasets/{self.repo_id}/"
        resolve = f"/datasets/{self.repo_id}/resolve/"
        if self.gated and (path.startswith(api) or path.startswith(resolve)):
            return self._error(h, 403, "GatedRepo")
        if path.startswith(api + "revision/"):
            siblings = [{"rfilename": k} for k in sorted(self.files)]
            body = {"id": self.repo_id, "sha": REVISION, "siblings": siblings, "private": False}
            return self._json(h, body, head)
        if path.startswith(api + "tree/"):
            tree = [
                {"type": "file", "path": k, "size": p.stat().st_size, "oid": _oid(p)}
                for k, p in sorted(self.files.items())
            ]
            return self._json(h, tree, head)
        if path.startswith(resolve):
            rel = path[len(resolve) :].split("/", 1)[1]
            return self._file(h, rel, head)
        return self._error(h, 404, "EntryNotFound")

    def _file(self, h: http.server.BaseHTTPRequestHandler, rel: str, head: bool) -> None:
        if rel not in self.files:
            return self._error(h, 404, "EntryNotFound")
        if rel in self.fail and not head:
            return self._error(h, 500, "ServerError")
        data = self.files[rel].read_bytes()
        start = 0
        rng = h.headers.get("Range")
        if rng and not head:
            start = int(rng.split("=")[1].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", REVISION)
        h.send_header("ETag", f'"{_oid(self.files[rel])}"')
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        if rel in self.drop_once:  # send half, then close: a dropped connection
            self.drop_once.discard(rel)
            h.wfile.write(data[start : start + (len(data) - start) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data[start:])


def _oid(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
