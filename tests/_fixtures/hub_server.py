"""A local HTTP server on 127.0.0.1 that answers like the Hugging Face Hub, for testing real download code.

It serves repositories from a folder laid out as `<root>/models/<org>/<name>/...` and
`<root>/datasets/<org>/<name>/...`:
- `HEAD|GET /<org>/<name>/resolve/<rev>/<path>` and `/datasets/<org>/<name>/resolve/<rev>/<path>` with the Hub's
  headers (X-Repo-Commit, ETag, Content-Length, Accept-Ranges) and byte ranges (206), or 404 with X-Error-Code;
- `GET /api/models/<org>/<name>[/revision/<rev>]` (repo info with siblings) and `/api/.../tree/<rev>`.

Knobs for failure tests: `ranges=False` ignores Range headers; `cut_after[path] = n` drops the connection after
n bytes of that file, once. `bytes_sent[path]` counts what was served.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets|models)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # the client hung up mid-file, as a client reading only a header does: not an error
        super().handle_error(request, client_address)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FakeHub:
    def __init__(self, root: Path, ranges: bool = True):
        self.root = Path(root)
        self.ranges = ranges
        self.cut_after: dict[str, int] = {}
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range header
        self._etags: dict[Path, str] = {}
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def repo_dir(self, repo_id: str, kind: str = "models") -> Path:
        return self.root / kind / repo_id

    def commit(self, repo_id: str, kind: str = "models") -> str:
        """A stable fake commit sha for a repo (changes when its file list or sizes change)."""
        folder = self.repo_dir(repo_id, kind)
        listing = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
        return hashlib.sha1(json.dumps([repo_id, listing]).encode()).hexdigest()

    def etag(self, path: Path) -> str:
        if path not in self._etags:
            self._etags[path] = _sha256(path)
        return self._etags[path]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._route(head=True)

            def do_GET(self) -> None:
                self._route(head=False)

            def _route(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                if m := _RESOLVE.match(path):
                    return self._resolve(m["kind"] or "models", m["repo"], m["rev"], m["path"], head)
                if m := _TREE.match(path):
                    return self._tree(m["kind"], m["repo"], m["rev"], m["sub"] or "")
                if m := _API.match(path):
                    return self._info(m["kind"], m["repo"], m["rev"] or "main")
                self._error(404, "EntryNotFound", "not found")

            def _repo(self, kind: str, repo: str, rev: str) -> Path | None:
                folder = hub.repo_dir(repo, kind)
                if not folder.is_dir():
                    self._error(401, "RepoNotFound", f"Repository {repo} not found")
                    return None
                if rev not in ("main", hub.commit(repo, kind)):
                    self._error(404, "RevisionNotFound", f"Revision {rev} not found")
                    return None
                return folder

            def _resolve(self, kind: str, repo: str, rev: str, rel: str, head: bool) -> None:
                folder = self._repo(kind, repo, rev)
                if folder is None:
                    return
                file = folder / rel
                if not file.is_file():
                    return self._error(404, "EntryNotFound", f"{rel} not found in {repo}")
                size = file.stat().st_size
                start, end, status = 0, size - 1, 200
                rng = self.headers.get("Range")
                if rng and hub.ranges and not head:
                    m = re.match(r"bytes=(\d*)-(\d*)", rng)
                    if m and m[1]:
                        start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
                    elif m and m[2]:
                        start = max(size - int(m[2]), 0)
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", hub.commit(repo, kind))
                self.send_header("ETag", f'"{hub.etag(file)}"')
                self.send_header("Content-Type", "application/octet-stream")
                if hub.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if not head:
                    self._send_file(file, rel, start, end - start + 1)

            def _send_file(self, file: Path, rel: str, start: int, length: int) -> None:
                cut = hub.cut_after.pop(rel, None)
                with open(file, "rb") as f:
                    f.seek(start)
                    left = length if cut is None else min(length, cut)
                    while left > 0:
                        chunk = f.read(min(left, 1 << 16))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        hub.bytes_sent[rel] += len(chunk)
                        left -= len(chunk)
                if cut is not None and cut < length:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)

            def _files(self, folder: Path) -> list[Path]:
                return sorted(p for p in folder.rglob("*") if p.is_file())

            def _info(self, kind: str, repo: str, rev: str) -> None:
                folder = self._repo(kind, repo, rev)
                if folder is None:
                    return
                siblings = [{"rfilename": str(p.relative_to(folder)), "size": p.stat().st_size}
                            for p in self._files(folder)]
                self._json({"id": repo, "modelId": repo, "sha": hub.commit(repo, kind), "private": False,
                            "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

            def _tree(self, kind: str, repo: str, rev: str, sub: str) -> None:
                folder = self._repo(kind, repo, rev)
                if folder is None:
                    return
                entries = [{"type": "file", "path": str(p.relative_to(folder)), "size": p.stat().st_size,
                            "oid": hub.etag(p)[:40]}
                           for p in self._files(folder / sub if sub else folder)]
                self._json(entries)

            def _json(self, data) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, code: int, error_code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler
