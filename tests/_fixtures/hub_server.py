"""A local HTTP server on 127.0.0.1 that answers like the Hugging Face Hub, for testing real download code.

It serves repositories from a folder laid out as `<root>/models/<org>/<name>/...` and
`<root>/datasets/<org>/<name>/...`:
- `HEAD|GET /<org>/<name>/resolve/<rev>/<path>` and `/datasets/<org>/<name>/resolve/<rev>/<path>` with the Hub's
  headers (X-Repo-Commit, ETag, Content-Length, Accept-Ranges) and byte ranges (206), or 404 with X-Error-Code;
- `GET /api/models/<org>/<name>[/revision/<rev>]` (repo info with siblings) and `/api/.../tree/<rev>`.

Knobs for failure tests: `ranges=False` ignores Range headers; `cut_after[path] = n` drops the connection after
n bytes of that file, once. `bytes_sent[path]` counts what was served.

`any_commit=True` serves every repo at any 40-hex revision asked for, as that commit (code pinned to a real
commit of a real dataset can then be tested on tiny files). `gated[repo_id] = {tokens}` makes a repo gated as
the Hub does it: 401 with `X-Error-Code: GatedRepo` without a token, 403 with a token that has not accepted the
repo's terms, the files with one of `tokens`.

Uploads (what huggingface_hub's `create_repo`, `create_branch` and `create_commit` send, on the LFS path —
tests set HF_HUB_DISABLE_XET=1): `POST /api/repos/create`, `POST /api/validate-yaml`,
`POST /api/models/<repo>/branch/<branch>`, `POST /api/models/<repo>/preupload/<rev>` (GGUFs, pictures and files
over 10 MiB go to LFS; `oid` of a file already there), `POST /<repo>.git/info/lfs/objects/batch` (an upload
action only for objects the store lacks), `PUT /_lfs/<oid>` (the bytes, checked against their sha256) and
`POST /api/models/<repo>/commit/<rev>` (NDJSON; files land in the repo folder for main, in
`<root>/branches/<repo>/<branch>/` for another branch). `write_tokens` (a set) makes these (but the PUT, whose URL
is its credential, as S3's are) need one of its Bearer tokens (401 otherwise); `fail_lfs_once` (a set of oids)
answers the next PUT of each with a 400; `lfs_puts` lists the oids PUT, `created` the repos made
({repo: private}), `commits` the commits.
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
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_UPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>preupload|commit|branch)/(?P<rev>[^/]+)$")
_LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_PUT = re.compile(r"^/_lfs/(?P<oid>[0-9a-f]{64})$")
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


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, root: Path, ranges: bool = True, any_commit: bool = False):
        self.root = Path(root)
        self.ranges = ranges
        self.any_commit = any_commit
        self.gated: dict[str, set[str]] = {}
        self.cut_after: dict[str, int] = {}
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range header
        self.write_tokens: set[str] = set()
        self.fail_lfs_once: set[str] = set()
        self.lfs_puts: list[str] = []
        self.created: dict[str, bool] = {}
        self.commits: list[dict] = []
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

            def do_POST(self) -> None:
                self._write_route()

            def do_PUT(self) -> None:
                self._write_route()

            def _write_route(self) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, None))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if hub.write_tokens and token not in hub.write_tokens and not _LFS_PUT.match(path):  # as S3's URLs
                    return self._error(401, "", "Invalid credentials in Authorization header")
                if path == "/api/repos/create":
                    return self._create(json.loads(body))
                if path == "/api/validate-yaml":
                    return self._json({"errors": [], "warnings": []})
                if m := _UPLOAD.match(path):
                    if not hub.repo_dir(m["repo"]).is_dir():
                        return self._error(404, "RepoNotFound", f"Repository {m['repo']} not found")
                    handler = {"preupload": self._preupload, "commit": self._commit, "branch": self._branch}[m["what"]]
                    return handler(m["repo"], m["rev"], body)
                if m := _LFS_BATCH.match(path):
                    return self._lfs_batch(json.loads(body))
                if (m := _LFS_PUT.match(path)) and self.command == "PUT":
                    return self._lfs_put(m["oid"], body)
                self._error(404, "EntryNotFound", "not found")

            def _create(self, payload: dict) -> None:
                repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
                folder = hub.repo_dir(repo)
                if folder.is_dir():  # the Hub's 409 names the repo's URL, which create_repo(exist_ok=True) returns
                    body = json.dumps({"error": "You already created this model repo",
                                       "url": f"{hub.endpoint}/{repo}"}).encode()
                    self.send_response(409)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                folder.mkdir(parents=True)
                hub.created[repo] = payload.get("visibility") == "private" or bool(payload.get("private"))
                self._json({"url": f"{hub.endpoint}/{repo}", "name": repo})

            def _branch(self, repo: str, branch: str, body: bytes) -> None:
                folder = hub.root / "branches" / repo / branch
                if folder.is_dir():
                    return self._error(409, "", f"Branch {branch} already exists")
                folder.mkdir(parents=True)
                self._json({})

            def _rev_dir(self, repo: str, rev: str) -> Path:
                return hub.repo_dir(repo) if rev == "main" else hub.root / "branches" / repo / rev

            def _preupload(self, repo: str, rev: str, body: bytes) -> None:
                files = []
                for f in json.loads(body)["files"]:
                    lfs = f["path"].endswith((".gguf", ".png")) or f["size"] > 10 << 20
                    have = self._rev_dir(repo, rev) / f["path"]
                    oid = None
                    if have.is_file():
                        oid = hub.etag(have) if lfs else _git_sha1(have.read_bytes())
                    files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                                  "shouldIgnore": False, "oid": oid})
                self._json({"files": files, "commitOid": hub.commit(repo)})

            def _lfs_batch(self, payload: dict) -> None:
                objects = []
                for o in payload["objects"]:
                    entry = {"oid": o["oid"], "size": o["size"]}
                    if not (hub.root / ".lfs" / o["oid"]).is_file():
                        entry["actions"] = {"upload": {"href": f"{hub.endpoint}/_lfs/{o['oid']}"}}
                    objects.append(entry)
                self._json({"transfer": "basic", "objects": objects})

            def _lfs_put(self, oid: str, body: bytes) -> None:
                if oid in hub.fail_lfs_once:
                    hub.fail_lfs_once.discard(oid)
                    return self._error(400, "", "the upload of this object failed (a test fault)")
                if hashlib.sha256(body).hexdigest() != oid:
                    return self._error(400, "", "the uploaded bytes do not match the oid")
                hub.lfs_puts.append(oid)
                store = hub.root / ".lfs"
                store.mkdir(exist_ok=True)
                (store / oid).write_bytes(body)
                self._json({})

            def _commit(self, repo: str, rev: str, body: bytes) -> None:
                import base64
                import shutil as _shutil

                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                folder = self._rev_dir(repo, rev)
                if not folder.is_dir():
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                paths = []
                for item in lines[1:]:
                    v = item["value"]
                    dest = folder / v["path"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if item["key"] == "file":
                        dest.write_bytes(base64.b64decode(v["content"]))
                    elif item["key"] == "lfsFile":
                        obj = hub.root / ".lfs" / v["oid"]
                        if not obj.is_file():
                            return self._error(400, "", f"LFS object {v['oid']} of {v['path']} was never uploaded")
                        _shutil.copyfile(obj, dest)
                    hub._etags.pop(dest, None)
                    paths.append(v["path"])
                hub.commits.append({"repo": repo, "revision": rev, "summary": lines[0]["value"]["summary"],
                                    "paths": paths})
                oid = hub.commit(repo)
                self._json({"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid,
                            "pullRequestUrl": None})

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

            def _repo(self, kind: str, repo: str, rev: str) -> tuple[Path, str] | None:
                """The repo's folder and the commit `rev` names, or None after answering with the Hub's error."""
                folder = hub.repo_dir(repo, kind)
                if not folder.is_dir():
                    self._error(401, "RepoNotFound", f"Repository {repo} not found")
                    return None
                if repo in hub.gated and not self._may_read(kind, repo):
                    return None
                if hub.any_commit and _COMMIT.match(rev):
                    return folder, rev
                if rev not in ("main", hub.commit(repo, kind)):
                    self._error(404, "RevisionNotFound", f"Revision {rev} not found")
                    return None
                return folder, hub.commit(repo, kind)

            def _may_read(self, kind: str, repo: str) -> bool:
                """The Hub's answers for a gated repo: who did not log in, and who did not accept its terms."""
                auth = self.headers.get("Authorization", "")
                what = "dataset" if kind == "datasets" else "model"
                if not auth.startswith("Bearer "):
                    self._error(401, "GatedRepo", f"Access to {what} {repo} is restricted. You must have access to "
                                                  "it and be authenticated to access it. Please log in.")
                    return False
                if auth.removeprefix("Bearer ") not in hub.gated[repo]:
                    self._error(403, "GatedRepo", f"Access to {what} {repo} is restricted and you are not in the "
                                                  "authorized list. Visit the repo's page to ask for access.")
                    return False
                return True

            def _resolve(self, kind: str, repo: str, rev: str, rel: str, head: bool) -> None:
                found = self._repo(kind, repo, rev)
                if found is None:
                    return
                folder, commit = found
                file = folder / rel
                if not file.is_file():
                    return self._error(404, "EntryNotFound", f"{rel} not found in {repo}", commit)
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
                self.send_header("X-Repo-Commit", commit)
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
                found = self._repo(kind, repo, rev)
                if found is None:
                    return
                folder, commit = found
                siblings = [{"rfilename": str(p.relative_to(folder)), "size": p.stat().st_size}
                            for p in self._files(folder)]
                self._json({"id": repo, "modelId": repo, "sha": commit, "private": False, "gated": repo in hub.gated,
                            "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

            def _tree(self, kind: str, repo: str, rev: str, sub: str) -> None:
                found = self._repo(kind, repo, rev)
                if found is None:
                    return
                folder, _ = found
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

            def _error(self, code: int, error_code: str, message: str, commit: str | None = None) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler
