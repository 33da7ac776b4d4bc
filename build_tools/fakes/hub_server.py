"""A local stand-in for the Hugging Face Hub's HTTP API, for tests of `facext publish`.

``LocalHubServer`` answers the endpoints that huggingface_hub 1.33's ``HfApi`` calls to create a
repo or a branch, pre-upload files and commit them, with the real Hub's JSON shapes, so the
library's own client runs against it unchanged: ``HfApi(endpoint=server.url, token=...)``.

* repos: ``POST /api/repos/create``, ``GET /api/{type}s/{repo}[/revision/{rev}]``,
  ``GET .../refs``, ``POST|DELETE .../branch/{branch}``, ``GET .../commits/{rev}``,
  ``GET /api/whoami-v2``, ``POST /api/validate-yaml``;
* upload: ``POST .../preupload/{rev}`` (``regular`` or ``lfs`` per file), the LFS batch API
  ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` ("basic" transfer; upload and verify actions
  point back at this server), the signed ``PUT /lfs-storage/{signature}`` (no token, as for S3)
  and ``POST /{prefix}{repo}.git/info/lfs/objects/verify``;
* ``POST .../commit/{rev}`` with the ndjson body (header, file, lfsFile, deletedFile,
  deletedFolder lines; ``parentCommit`` is checked: 412 when the branch moved);
* reading back: ``GET .../tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}`` and
  ``HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}``, so ``hf_hub_download`` and
  ``snapshot_download`` work.

It speaks plain LFS, never Xet.  huggingface_hub 1.33 picks Xet on the client side whenever
hf_xet is installed (no question to the server), so a client must run with
``HF_HUB_DISABLE_XET=1`` (or ``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``) here.

LFS objects are kept by sha256; an upload whose bytes do not hash to the announced oid and size
is refused (400).  Repos, branches and commits live in memory; a new repo gets an initial commit
with a ``.gitattributes``, as on the Hub.

Every request becomes a :class:`HubRequest` in ``server.requests`` (method, path, kind, oid, body
bytes received, status; whether a token was valid, never the token).  ``faults`` -- a callable
``HubRequest -> Fault | None`` or a list of :class:`FaultRule` -- may answer a request with an
HTTP error (with ``Retry-After``), drop the connection part-way through its body, hold it until
released, or apply it and then drop the connection before the answer.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from build_tools.fakes.local_http import LocalHttpServer, QuietHandler

DEFAULT_TOKEN = "hf_localhub_write_0123456789"
DEFAULT_USER = "local-user"
REGULAR_MAX_BYTES = 10 * 1000 * 1000  # the Hub stores text files up to 10 MB in git, larger in LFS
HOLD_MAX_S = 60.0  # a held request gives up waiting for its release after this long

# What a new repo's .gitattributes sends to LFS (the Hub's default list, shortened).
LFS_PATTERNS = ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.gz", "*.h5", "*.jpg", "*.jpeg", "*.npy",
                "*.npz", "*.onnx", "*.parquet", "*.pkl", "*.png", "*.pt", "*.pth", "*.safetensors",
                "*.tar", "*.tfrecord", "*.webp", "*.zip", "*.zst")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()

URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
REPO_TYPE_OF = {"models": "model", "datasets": "dataset", "spaces": "space"}


# --------------------------------------------------------------------------------------------
# Faults and records


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request; build one with the class methods."""

    kind: str  # "status" | "disconnect" | "hold" | "drop_response"
    code: int = 500
    retry_after: float | str | None = None
    message: str | None = None
    after_bytes: int | None = None
    release: threading.Event | None = field(default=None, compare=False)

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None,
               message: str | None = None) -> Fault:
        """Answer HTTP ``code`` (the body is read first), with ``Retry-After`` when given."""
        return cls("status", code=int(code), retry_after=retry_after, message=message)

    @classmethod
    def disconnect(cls, after_bytes: int | None = None) -> Fault:
        """Read ``after_bytes`` of the body (default: half of it), then close the connection."""
        return cls("disconnect", after_bytes=after_bytes)

    @classmethod
    def hold(cls, release: threading.Event, after_bytes: int | None = None) -> Fault:
        """Read ``after_bytes`` of the body (default: half), wait for ``release``, then close the
        connection: the request is in flight for as long as a test needs (to kill its client)."""
        return cls("hold", after_bytes=after_bytes, release=release)

    @classmethod
    def drop_response(cls) -> Fault:
        """Do the work (store the object, make the commit), then close without an answer."""
        return cls("drop_response")


@dataclass
class HubRequest:
    """One request the server saw.  ``kind`` names the endpoint (``create_repo``, ``repo_info``,
    ``refs``, ``create_branch``, ``delete_branch``, ``commits``, ``preupload``, ``lfs_batch``,
    ``lfs_upload``, ``lfs_verify``, ``commit``, ``tree``, ``paths_info``, ``resolve``, ``whoami``,
    ``validate_yaml`` or ``unknown``); ``attempt`` counts requests of that kind for the same oid
    (LFS) or repo (others), from 1."""

    index: int
    method: str
    path: str
    kind: str
    repo_type: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    oid: str | None = None
    objects: tuple[str, ...] = ()  # the paths a preupload asked about, the oids an LFS batch named
    attempt: int = 1
    auth: str = "none"  # "none" | "valid" | "invalid": whether a token came and was known
    expected: int | None = None  # declared body length (None: chunked or no body)
    received: int = 0  # body bytes read so far
    status: int | None = None  # the HTTP status sent; 0: the connection was closed instead
    fault: Fault | None = None
    started: float = 0.0
    finished: float | None = None


Faults = Callable[[HubRequest], "Fault | None"]


@dataclass
class FaultRule:
    """Give ``fault`` to requests of ``kind`` (and ``oid`` / ``repo_id`` when set): skip the first
    ``skip`` that match, then fault the next ``times`` (``None``: every one after)."""

    kind: str
    fault: Fault
    oid: str | None = None
    repo_id: str | None = None
    skip: int = 0
    times: int | None = 1
    seen: int = 0

    def __call__(self, request: HubRequest) -> Fault | None:
        if request.kind != self.kind or (self.oid and request.oid != self.oid) or (
                self.repo_id and request.repo_id != self.repo_id):
            return None
        self.seen += 1
        n = self.seen - self.skip
        if n >= 1 and (self.times is None or n <= self.times):
            return self.fault
        return None


def _fault_plan(faults: Faults | Sequence[FaultRule] | None) -> Faults | None:
    if faults is None or callable(faults):
        return faults
    rules = list(faults)
    lock = threading.Lock()

    def plan(request: HubRequest) -> Fault | None:
        with lock:
            for rule in rules:
                fault = rule(request)
                if fault is not None:
                    return fault
        return None

    return plan


# --------------------------------------------------------------------------------------------
# Repos, commits and objects


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class HubFile:
    """A file in a commit's tree: regular (``data`` kept) or LFS (``sha256``; bytes in the store)."""

    size: int
    blob_id: str
    sha256: str | None = None
    data: bytes | None = field(default=None, repr=False)

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass
class HubCommit:
    oid: str
    parent: str | None
    branch: str
    title: str
    description: str
    date: str
    added: tuple[str, ...]  # paths written (new or changed) by this commit
    deleted: tuple[str, ...]
    tree: dict[str, HubFile] = field(repr=False)


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, HubCommit] = field(default_factory=dict)  # in creation order
    lfs: dict[str, int] = field(default_factory=dict)  # sha256 -> size of objects uploaded here

    @property
    def prefix(self) -> str:
        return URL_PREFIX[self.repo_type]


class _HttpError(Exception):
    def __init__(self, code: int, message: str, *, error_code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.error_code = code, message, error_code
        self.headers = dict(headers or {})


@dataclass
class _Answer:
    code: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _json(code: int, payload: Any, headers: dict[str, str] | None = None,
          content_type: str = "application/json") -> _Answer:
    return _Answer(code, json.dumps(payload).encode(), dict(headers or {}), content_type)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --------------------------------------------------------------------------------------------
# The server


class LocalHubServer(LocalHttpServer):
    """Hub-compatible HTTP server on 127.0.0.1 (a free port), run in a daemon thread.  Use as a
    context manager or call :meth:`start` / :meth:`stop`."""

    handler_attribute = "hub"
    thread_name = "local-hub-server"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def __init__(self, *, token: str = DEFAULT_TOKEN, tokens: dict[str, str] | None = None,
                 faults: Faults | Sequence[FaultRule] | None = None, user: str = DEFAULT_USER,
                 regular_max_bytes: int = REGULAR_MAX_BYTES, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        """``tokens`` maps each accepted token to its role, "write" or "read" (default: ``token``
        with write access); ``faults`` see the module doc; files above ``regular_max_bytes``,
        binary files and files matching the LFS patterns are answered "lfs" by preupload."""
        self.tokens = dict(tokens) if tokens is not None else {token: "write"}
        self.faults: Faults | None = _fault_plan(faults)
        self.user = user
        self.regular_max_bytes = int(regular_max_bytes)
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._requests: list[HubRequest] = []
        self._attempts: dict[tuple, int] = {}
        self._index = itertools.count()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._objects: dict[str, bytes] = {}  # sha256 -> content, shared by all repos
        self._signatures: dict[str, tuple[tuple[str, str], str, int]] = {}  # sig -> repo, oid, size
        self._held: list[threading.Event] = []

    def before_stop(self) -> None:
        for event in self._held:  # let held requests end
            event.set()

    def set_faults(self, faults: Faults | Sequence[FaultRule] | None) -> None:
        """Replaces the faults (``None``: none) for the requests still to come."""
        self.faults = _fault_plan(faults)

    # ---- what tests read

    @property
    def requests(self) -> list[HubRequest]:
        """Every request seen so far (a snapshot), in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_of(self, kind: str) -> list[HubRequest]:
        return [r for r in self.requests if r.kind == kind]

    def bytes_received(self, oid: str) -> int:
        """Body bytes received by all upload PUTs of the LFS object ``oid``."""
        return sum(r.received for r in self.requests_of("lfs_upload") if r.oid == oid)

    def uploads_stored(self, oid: str) -> int:
        """How many PUTs of ``oid`` arrived whole and were stored."""
        return sum(1 for r in self.requests_of("lfs_upload") if r.oid == oid and r.status == 200)

    def has_object(self, oid: str) -> bool:
        with self._lock:
            return oid in self._objects

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[HubCommit]:
        """The repo's commits in creation order (the initial commit first)."""
        with self._lock:
            return list(self._repo(repo_type, repo_id).commits.values())

    def branches(self, repo_id: str, repo_type: str = "dataset") -> dict[str, str]:
        with self._lock:
            return dict(self._repo(repo_type, repo_id).branches)

    def file(self, repo_id: str, path: str, revision: str = "main",
             repo_type: str = "dataset") -> bytes:
        """The content of ``path`` at ``revision`` (KeyError when absent)."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            entry = self._commit_at(repo, revision).tree[path]
            return entry.data if entry.data is not None else self._objects[entry.sha256]

    def forget_objects(self) -> None:
        """Lose every LFS object not referenced by a commit (as storage clean-up would)."""
        with self._lock:
            kept = {f.sha256 for repo in self._repos.values() for c in repo.commits.values()
                    for f in c.tree.values() if f.is_lfs}
            self._objects = {k: v for k, v in self._objects.items() if k in kept}
            for repo in self._repos.values():
                repo.lfs = {k: v for k, v in repo.lfs.items() if k in kept}

    # ---- bookkeeping (called with the lock held unless said otherwise)

    def _record(self, request: HubRequest) -> None:
        with self._lock:
            key = (request.kind, request.oid or request.repo_id)
            self._attempts[key] = self._attempts.get(key, 0) + 1
            request.attempt = self._attempts[key]
            request.index = next(self._index)
            self._requests.append(request)

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HttpError(404, "Repository not found", error_code="RepoNotFound")
        return repo

    def _commit_at(self, repo: _Repo, revision: str) -> HubCommit:
        oid = repo.branches.get(revision)
        if oid is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            found = [c for c in repo.commits if c.startswith(revision)]
            oid = found[0] if len(found) == 1 else None
        if oid is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return repo.commits[oid]

    def _new_commit(self, repo: _Repo, branch: str, parent: HubCommit | None, title: str,
                    description: str, added: dict[str, HubFile], deleted: list[str]) -> HubCommit:
        tree = dict(parent.tree) if parent is not None else {}
        for path in deleted:
            tree.pop(path, None)
        tree.update(added)
        oid = hashlib.sha1(f"{repo.repo_id}:{len(repo.commits)}:{secrets.token_hex(8)}".encode()
                           ).hexdigest()
        commit = HubCommit(oid, parent.oid if parent else None, branch, title, description, _now(),
                           tuple(added), tuple(deleted), tree)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _regular(self, data: bytes) -> HubFile:
        return HubFile(len(data), git_blob_id(data), data=data)

    def _lfs_file(self, sha256: str, size: int) -> HubFile:
        return HubFile(size, git_blob_id(lfs_pointer(sha256, size)), sha256=sha256)

    def _upload_mode(self, path: str, size: int, sample: bytes, tree: dict[str, HubFile]) -> str:
        attributes = tree.get(".gitattributes")
        patterns = LFS_PATTERNS
        if attributes is not None and attributes.data is not None:
            patterns = tuple(line.split()[0] for line in attributes.data.decode(errors="replace")
                             .splitlines() if "filter=lfs" in line and line.split())
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns):
            return "lfs"
        if size > self.regular_max_bytes or b"\0" in sample:
            return "lfs"
        return "regular"


_API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+?)(/.*)?$")
_GIT_LFS = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_STORAGE = re.compile(r"^/lfs-storage/([0-9a-f]+)$")
_REST = {  # first segment after /api/{type}s/{repo}/ (a revision follows): endpoint kind, method
    "revision": ("repo_info", "GET"), "commits": ("commits", "GET"),
    "preupload": ("preupload", "POST"), "commit": ("commit", "POST"), "tree": ("tree", "GET"),
    "paths-info": ("paths_info", "POST"),
}
_WRITE_KINDS = {"create_repo", "create_branch", "delete_branch", "preupload", "lfs_batch",
                "lfs_verify", "commit"}


class _Handler(QuietHandler):
    server_version = "LocalHub/1.0"
    hub: LocalHubServer  # set on the bound subclass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- plumbing

    def _route(self, method: str, path: str) -> HubRequest:
        """Names the endpoint of a request (no side effects)."""
        req = HubRequest(index=-1, method=method, path=path, kind="unknown",
                         started=time.monotonic())
        segments = lambda s: [unquote(p) for p in s.split("/") if p]
        if path == "/api/repos/create" and method == "POST":
            req.kind = "create_repo"
        elif path == "/api/whoami-v2" and method == "GET":
            req.kind = "whoami"
        elif path == "/api/validate-yaml" and method == "POST":
            req.kind = "validate_yaml"
        elif m := _STORAGE.match(path):
            req.kind = "lfs_upload" if method == "PUT" else "unknown"
            with self.hub._lock:
                signed = self.hub._signatures.get(m.group(1))
            if signed is not None:
                (req.repo_type, req.repo_id), req.oid = signed[0], signed[1]
        elif m := _GIT_LFS.match(path):
            req.repo_type = {"datasets": "dataset", "spaces": "space"}.get(m.group(1), "model")
            req.repo_id = unquote(m.group(2))
            req.kind = ("lfs_batch" if m.group(3) == "batch" else "lfs_verify") if method == "POST" \
                else "unknown"
        elif m := _RESOLVE.match(path):
            req.repo_type = {"datasets": "dataset", "spaces": "space"}.get(m.group(1), "model")
            req.repo_id = unquote(m.group(2))
            req.revision = unquote(m.group(3))
            req.kind = "resolve" if method in ("GET", "HEAD") else "unknown"
        elif m := _API_REPO.match(path):
            req.repo_type = REPO_TYPE_OF[m.group(1)]
            req.repo_id = unquote(m.group(2))
            rest = segments(m.group(3) or "")
            if not rest:
                req.kind = "repo_info" if method == "GET" else "unknown"
                req.revision = None
            elif rest[0] == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
                req.kind = "create_branch" if method == "POST" else "delete_branch"
                req.revision = rest[1]
            elif rest[0] in _REST and len(rest) >= 2 and method == _REST[rest[0]][1]:
                req.kind = _REST[rest[0]][0]
                req.revision = rest[1]
            elif rest == ["refs"] and method == "GET":
                req.kind = "refs"
        return req

    def _read(self, req: HubRequest, limit: int | None = None) -> bytes:
        """Reads the body (Content-Length or chunked), at most ``limit`` bytes, counting them."""
        out = bytearray()
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            while limit is None or len(out) < limit:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                while size:
                    piece = self.rfile.read(min(size, 65536, (limit - len(out)) if limit else size))
                    if not piece:
                        return bytes(out)
                    out += piece
                    size -= len(piece)
                    req.received = len(out)
                    if limit is not None and len(out) >= limit:
                        return bytes(out)
                self.rfile.readline()
            return bytes(out)
        length = req.expected or 0
        want = length if limit is None else min(length, limit)
        while len(out) < want:
            piece = self.rfile.read(min(65536, want - len(out)))
            if not piece:
                break
            out += piece
            req.received = len(out)
        return bytes(out)

    def _close(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, answer: _Answer, head_only: bool = False) -> None:
        self.send_response(answer.code)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("X-Request-Id", f"Root=local-{secrets.token_hex(6)}")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(answer.body)

    def _auth(self, req: HubRequest) -> str | None:
        """The role of the request's token; raises 401 for an unknown token."""
        header = self.headers.get("Authorization") or ""
        if not header.lower().startswith("bearer "):
            return None
        role = self.hub.tokens.get(header[7:].strip())
        req.auth = "valid" if role else "invalid"
        if role is None:
            message = "Invalid credentials in Authorization header"
            raise _HttpError(401, message, headers={"X-Error-Message": message})
        return role

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        parts = urlsplit(self.path)
        req = self._route(method, parts.path)
        length = self.headers.get("Content-Length")
        req.expected = int(length) if length and length.isdigit() else None
        hub._record(req)
        fault = hub.faults(req) if hub.faults is not None else None
        req.fault = fault
        try:
            if fault is not None and fault.kind in ("disconnect", "hold"):
                half = (req.expected or 0) // 2
                self._read(req, fault.after_bytes if fault.after_bytes is not None else half)
                if fault.kind == "hold" and fault.release is not None:
                    hub._held.append(fault.release)
                    fault.release.wait(HOLD_MAX_S)
                req.status, req.finished = 0, time.monotonic()
                self._close()
                return
            body = self._read(req) if method in ("POST", "PUT") else b""
            if fault is not None and fault.kind == "status":
                headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                raise _HttpError(fault.code, fault.message or f"injected HTTP {fault.code}",
                                 headers=headers)
            answer = self._answer(req, parse_qs(parts.query), body)
            if fault is not None and fault.kind == "drop_response":
                req.status, req.finished = 0, time.monotonic()
                self._close()
                return
        except _HttpError as exc:
            headers = dict(exc.headers)
            if exc.error_code:
                headers["X-Error-Code"] = exc.error_code
            answer = _json(exc.code, {"error": exc.message}, headers)
        except Exception as exc:  # noqa: BLE001 -- a bug in the server answers 500
            answer = _json(500, {"error": f"local hub error: {type(exc).__name__}: {exc}"})
        req.status = answer.code
        req.finished = time.monotonic()
        try:
            self._send(answer, head_only=method == "HEAD")
        except OSError:
            req.status = 0
            self.close_connection = True

    # ---- endpoints

    def _answer(self, req: HubRequest, query: dict[str, list[str]], body: bytes) -> _Answer:
        hub = self.hub
        if req.kind == "unknown":
            raise _HttpError(404, f"no such endpoint: {req.method} {req.path}")
        if req.kind == "lfs_upload":
            return self._lfs_upload(req, body)
        role = self._auth(req)
        if req.kind in _WRITE_KINDS and role != "write":
            if role is None:
                raise _HttpError(401, "You must be authenticated to do this: send a token "
                                      "(Authorization: Bearer hf_...)")
            if req.kind != "create_repo":  # a read token may still look at the repo
                with hub._lock:
                    hub._repo(req.repo_type, req.repo_id)
            raise _HttpError(403, "You don't have the rights to write to this repo: "
                                  "use a token with the write role")
        if req.kind == "whoami":
            if role is None:
                raise _HttpError(401, "Invalid user token.")
            return _json(200, {"type": "user", "id": "local", "name": hub.user, "fullname": hub.user,
                               "orgs": [], "auth": {"type": "access_token", "accessToken": {
                                   "displayName": "local", "role": role}}})
        if req.kind == "validate_yaml":
            return self._validate_yaml(body)
        if req.kind == "create_repo":
            return self._create_repo(body)
        with hub._lock:
            repo = hub._repo(req.repo_type, req.repo_id)
            if repo.private and role is None:
                raise _HttpError(404, "Repository not found", error_code="RepoNotFound")
            handler = getattr(self, f"_{req.kind}")
            return handler(req, repo, query, body)

    def _json_body(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise _HttpError(400, "The request body is not valid JSON.") from None

    def _validate_yaml(self, body: bytes) -> _Answer:
        content = str(self._json_body(body).get("content") or "")
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end < 0:
                return _json(400, {"errors": [{"message": "metadata block is not closed"}],
                                   "warnings": []})
            try:
                import yaml

                meta = yaml.safe_load(content[3:end])
            except Exception as exc:  # noqa: BLE001 -- any YAML error is the client's
                return _json(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
            if meta is not None and not isinstance(meta, dict):
                return _json(400, {"errors": [{"message": "metadata must be a mapping"}],
                                   "warnings": []})
        return _json(200, {"errors": [], "warnings": []})

    def _create_repo(self, body: bytes) -> _Answer:
        hub = self.hub
        payload = self._json_body(body)
        name, org = payload.get("name"), payload.get("organization") or hub.user
        repo_type = payload.get("type") or "model"
        if not name or repo_type not in URL_PREFIX or not re.fullmatch(r"[\w.-]+", name) or \
                not re.fullmatch(r"[\w.-]+", org):
            raise _HttpError(400, "Invalid repo name or type")
        repo_id = f"{org}/{name}"
        url = f"{hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        with hub._lock:
            if (repo_type, repo_id) in hub._repos:
                return _json(409, {"error": "You already created this repo", "url": url})
            repo = _Repo(repo_type, repo_id, private, _now())
            hub._repos[(repo_type, repo_id)] = repo
            hub._new_commit(repo, "main", None, "initial commit", "",
                            {".gitattributes": hub._regular(GITATTRIBUTES)}, [])
        return _json(200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def _repo_info(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        commit = self.hub._commit_at(repo, req.revision or "main")
        blobs = (query.get("blobs") or ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.tree):
            entry = commit.tree[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.is_lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                      "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        return _json(200, {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "createdAt": repo.created, "lastModified": commit.date, "siblings": siblings,
        })

    def _refs(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo.branches.items())]
        out: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if query.get("include_prs"):
            out["pullRequests"] = []
        return _json(200, out)

    def _create_branch(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        branch = req.revision or ""
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
        if not re.fullmatch(r"[\w.][\w./-]*", branch) or branch.startswith("refs/"):
            raise _HttpError(400, f"Invalid branch name: {branch}")
        start = self._json_body(body).get("startingPoint") or "main"
        repo.branches[branch] = self.hub._commit_at(repo, start).oid
        return _json(200, {})

    def _delete_branch(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        if req.revision not in repo.branches or req.revision == "main":
            raise _HttpError(404, f"Invalid rev id: {req.revision}", error_code="RevisionNotFound")
        del repo.branches[req.revision]
        return _json(200, {})

    def _commits(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        commit: HubCommit | None = self.hub._commit_at(repo, req.revision or "main")
        out = []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.description,
                        "authors": [{"user": self.hub.user}], "date": commit.date})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return _json(200, out)

    def _preupload(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        commit = self.hub._commit_at(repo, req.revision or "main")
        payload = self._json_body(body)
        ignore = [line.strip() for line in str(payload.get("gitIgnore") or "").splitlines()
                  if line.strip() and not line.startswith("#")]
        files = []
        req.objects = tuple(str(item.get("path")) for item in payload.get("files") or [])
        for item in payload.get("files") or []:
            path, size = item.get("path"), item.get("size")
            if not isinstance(path, str) or not isinstance(size, int):
                raise _HttpError(400, "each file needs a path and a size")
            sample = base64.b64decode(item.get("sample") or "")
            mode = self.hub._upload_mode(path, size, sample, commit.tree)
            info: dict[str, Any] = {
                "path": path, "uploadMode": mode,
                "shouldIgnore": any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(
                    path.rsplit("/", 1)[-1], p) for p in ignore)}
            existing = commit.tree.get(path)
            if existing is not None:
                info["oid"] = existing.sha256 if existing.is_lfs else existing.blob_id
            files.append(info)
        return _json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        hub = self.hub
        payload = self._json_body(body)
        if payload.get("operation") != "upload":
            raise _HttpError(400, "only the upload operation is served here")
        transfers = payload.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise _HttpError(422, f"no supported transfer among {transfers}: this server "
                                  "speaks basic LFS only")
        objects = []
        req.objects = tuple(str(item.get("oid")) for item in payload.get("objects") or [])
        for item in payload.get("objects") or []:
            oid, size = item.get("oid"), item.get("size")
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid)
                    and isinstance(size, int) and size >= 0):
                raise _HttpError(400, "each object needs a sha256 oid and a size")
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if repo.lfs.get(oid) == size and oid in hub._objects:
                objects.append(entry)  # already here: no action, nothing to send
                continue
            signature = secrets.token_hex(16)
            hub._signatures[signature] = ((repo.repo_type, repo.repo_id), oid, size)
            entry["authenticated"] = True
            entry["actions"] = {
                "upload": {"href": f"{hub.url}/lfs-storage/{signature}",
                           "expires_at": "2099-01-01T00:00:00Z"},
                "verify": {"href": f"{hub.url}/{repo.prefix}{repo.repo_id}.git/info/lfs/objects/verify"},
            }
            objects.append(entry)
        return _json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                     content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, req: HubRequest, body: bytes) -> _Answer:
        hub = self.hub
        signature = _STORAGE.match(req.path).group(1)
        with hub._lock:
            signed = hub._signatures.get(signature)
        if signed is None:
            raise _HttpError(403, "Request has expired or the signature does not match",
                             error_code="AccessDenied")
        key, oid, size = signed
        digest = hashlib.sha256(body).hexdigest()
        if len(body) != size or digest != oid:
            raise _HttpError(400, f"The content does not match the announced object: got "
                                  f"{len(body)} bytes with sha256 {digest}, expected {size} bytes "
                                  f"with sha256 {oid}", error_code="BadDigest")
        with hub._lock:
            hub._objects[oid] = body
            repo = hub._repos.get(key)
            if repo is not None:
                repo.lfs[oid] = size
        return _Answer(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        payload = self._json_body(body)
        oid, size = payload.get("oid"), payload.get("size")
        if repo.lfs.get(oid) != size or oid not in self.hub._objects:
            raise _HttpError(422, f"Object {oid} of size {size} was not uploaded to this repo")
        return _json(200, {"success": True})

    def _commit(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        hub = self.hub
        if query.get("create_pr"):
            raise _HttpError(400, "pull requests are not served by the local hub")
        branch = req.revision or "main"
        if branch not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
        head = repo.commits[repo.branches[branch]]
        lines = [line for line in body.decode("utf-8", "replace").splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except ValueError:
            raise _HttpError(400, "The commit body is not valid ndjson.") from None
        if not items or items[0].get("key") != "header":
            raise _HttpError(400, "The first line of a commit must be its header.")
        header = items[0].get("value") or {}
        parent = header.get("parentCommit")
        if parent and not head.oid.startswith(parent):
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        title = str(header.get("summary") or "").strip()
        if not title:
            raise _HttpError(400, "A commit needs a summary.")
        added: dict[str, HubFile] = {}
        deleted: list[str] = []
        for item in items[1:]:
            key, value = item.get("key"), item.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or not path or ".." in path.split("/"):
                raise _HttpError(400, f"Invalid path in commit: {path!r}")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, "file content must be base64")
                added[path] = hub._regular(base64.b64decode(value.get("content") or ""))
            elif key == "lfsFile":
                oid = value.get("oid")
                size = value.get("size", repo.lfs.get(oid))
                if value.get("algo", "sha256") != "sha256" or repo.lfs.get(oid) != size \
                        or oid not in hub._objects:
                    raise _HttpError(400, f"Your push was rejected because an LFS pointer pointed "
                                          f"to a file that does not exist: {path} ({oid})")
                added[path] = hub._lfs_file(oid, size)
            elif key == "deletedFile":
                if path not in head.tree:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}",
                                     error_code="EntryNotFound")
                deleted.append(path)
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                deleted.extend(p for p in head.tree if p.startswith(prefix))
            else:
                raise _HttpError(400, f"Unknown commit line key: {key!r}")
        commit = hub._new_commit(repo, branch, head, title, str(header.get("description") or ""),
                                 added, deleted)
        return _json(200, {"success": True, "commitOid": commit.oid,
                           "commitUrl": f"{hub.url}/{repo.prefix}{repo.repo_id}/commit/{commit.oid}",
                           "hookOutput": "", "pullRequestUrl": None})

    def _entries(self, tree: dict[str, HubFile], paths: list[str], recursive: bool,
                 children_of: str | None) -> list[dict]:
        """Tree entries: the files and folders among ``paths`` (paths-info) or under
        ``children_of`` ("" for the root; every level when ``recursive``)."""
        folders = {"/".join(p.split("/")[:i]) for p in tree for i in range(1, p.count("/") + 1)}

        def file_entry(path: str) -> dict:
            entry = tree[path]
            out: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size,
                                   "path": path}
            if entry.is_lfs:
                out["lfs"] = {"oid": entry.sha256, "size": entry.size,
                              "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            return out

        def folder_entry(path: str) -> dict:
            inside = sorted(p for p in tree if p.startswith(path + "/"))
            oid = hashlib.sha1("".join(tree[p].blob_id for p in inside).encode()).hexdigest()
            return {"type": "directory", "oid": oid, "size": 0, "path": path}

        if children_of is None:
            chosen = paths
        else:
            base = children_of.strip("/")
            under = [p for p in sorted(set(tree) | folders) if not base or p.startswith(base + "/")]
            depth = base.count("/") + 1 if base else 0
            chosen = under if recursive else [p for p in under if p.count("/") == depth]
        return [file_entry(p) if p in tree else folder_entry(p) for p in chosen
                if p in tree or p in folders]

    def _tree(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        rest = [unquote(p) for p in req.path.split("/tree/", 1)[1].split("/") if p]
        commit = self.hub._commit_at(repo, rest[0])
        base = "/".join(rest[1:])
        folders = {"/".join(p.split("/")[:i]) for p in commit.tree for i in range(1, p.count("/") + 1)}
        if base and base not in folders:
            raise _HttpError(404, f"Entry not found: {base}", error_code="EntryNotFound")
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        return _json(200, self._entries(commit.tree, [], recursive, base))

    def _paths_info(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        commit = self.hub._commit_at(repo, req.revision or "main")
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            paths = self._json_body(body).get("paths") or []
        else:
            paths = parse_qs(body.decode("utf-8", "replace")).get("paths") or []
        return _json(200, self._entries(commit.tree, [p.strip("/") for p in paths], False, None))

    def _resolve(self, req: HubRequest, repo: _Repo, query: dict, body: bytes) -> _Answer:
        hub = self.hub
        m = _RESOLVE.match(req.path)
        path = "/".join(unquote(p) for p in m.group(4).split("/"))
        commit = hub._commit_at(repo, req.revision or "main")
        entry = commit.tree.get(path)
        if entry is None:
            raise _HttpError(404, f"Entry not found: {path}", error_code="EntryNotFound",
                             headers={"X-Repo-Commit": commit.oid})
        data = entry.data if entry.data is not None else hub._objects[entry.sha256]
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                   "ETag": f'"{entry.sha256 or entry.blob_id}"'}
        if entry.is_lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        code = 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if ranged and req.method == "GET":
            start = int(ranged.group(1))
            end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                raise _HttpError(416, "Range Not Satisfiable",
                                 headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, code = data[start:end + 1], 206
        return _Answer(code, data, headers, "application/octet-stream")


def dataset_url(server: LocalHubServer, repo_id: str, revision: str, path: str) -> str:
    """The resolve URL of a file in a dataset repo on ``server``."""
    return f"{server.url}/datasets/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


__all__ = ["DEFAULT_TOKEN", "Fault", "FaultRule", "HubCommit", "HubFile", "HubRequest",
           "LocalHubServer", "dataset_url", "git_blob_id", "lfs_pointer"]
