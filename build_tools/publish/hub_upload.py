"""Publish a dataset folder to the Hugging Face Hub as one commit, resumable after any interruption.

Each file's content is pre-uploaded first (``HfApi.preupload_lfs_files``, a few files at a time),
then one ``create_commit`` references them all, as datatrove's HuggingFaceDatasetWriter does: a
reader never sees half a dataset, and a failure costs no partial commit.

A state file in the folder, ``.facext_upload/<repo>@<revision>.json``, records each file whose
content the Hub already has (size, sha256, upload mode), written after every group of files.  A
re-run after an exception, a killed process or a network failure sends nothing for those files --
no request at all -- pre-uploads the rest and commits.  A file whose sha256 changed is sent again.
After the commit the state records it, so a re-run with the same files does nothing.  The commit
names its parent, so a retry after a lost answer cannot commit twice; before committing, a branch
that already holds every file is taken as done; a commit refused because the Hub dropped objects
sent by an earlier run asks about those files again and sends only what is missing.

Transient failures (connection errors, timeouts, HTTP 408/409/429/5xx) are retried with exponential
backoff and jitter, honouring ``Retry-After`` up to a cap (``pipelines.retry``, with this module's
``BACKOFF_*`` and ``RETRY_AFTER_MAX_S``); huggingface_hub already retries each
HTTP call a few times itself, so an attempt here is a whole step (a group, the commit).  Permanent
ones (400/401/403/404, a README the Hub refuses) raise :class:`HubUploadError` saying what to do.
The token never appears in an error or a log line.

huggingface_hub 1.33 sends the bytes through Xet whenever hf_xet is installed (the client decides,
not the server) and through plain LFS otherwise or with ``HF_HUB_DISABLE_XET=1``; both work here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import disable_progress_bars
from huggingface_hub.utils.sha import git_hash

from pipelines.common.progress import Progress
from pipelines.retry import RetryPolicy, is_transient_status, retry_after_seconds

log = logging.getLogger(__name__)

STATE_DIR = ".facext_upload"
EXCLUDED_DIRS = frozenset({STATE_DIR, ".cache", ".git"})  # our state, download caches; the Hub refuses .git/.cache
DEFAULT_BRANCH = "main"
REPO_TYPE = "dataset"

# A group is pre-uploaded (and recorded) as a unit: small enough that an interruption costs
# little, large enough that many small files do not each pay a round trip.
GROUP_MAX_FILES = 32
GROUP_MAX_BYTES = 256 * 2**20

# The uploader's RetryPolicy, read when an upload starts (tests shorten the backoff).
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 120.0
PATHS_INFO_BATCH = 500  # the Hub's limit on paths per paths-info request
RESUME_HINT = (f"re-run the same command to resume (files already pre-uploaded are recorded in "
               f"the folder's {STATE_DIR}/ and not sent again)")

T = TypeVar("T")


class HubUploadError(RuntimeError):
    """The upload cannot go on; the message names the repo and what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status that stopped it, when there was one


@dataclass(frozen=True)
class UploadResult:
    commit_oid: str
    commit_url: str
    files: int  # files in the folder (state and cache folders left out)
    uploaded: int  # files whose content was pre-uploaded by this run
    skipped: int  # files the state showed the Hub already had
    already_committed: bool  # nothing to commit: the branch already holds these files


@dataclass(frozen=True)
class LocalFile:
    path: str  # relative, POSIX separators: the path in the repo
    abspath: Path
    size: int
    sha256: str


def local_files(folder: str | Path) -> list[LocalFile]:
    """Every regular file under ``folder`` with its sha256, sorted by path; state, cache and
    .git folders are left out."""
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_file():
                continue
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            out.append(LocalFile(path.relative_to(root).as_posix(), path, path.stat().st_size, digest))
    return sorted(out, key=lambda f: f.path)


def state_file(folder: str | Path, repo_id: str, revision: str | None) -> Path:
    """Where the upload state of ``repo_id`` at ``revision`` lives inside ``folder``."""
    safe = lambda s: re.sub(r"[^\w.-]+", "--", s)
    return Path(folder) / STATE_DIR / f"{safe(repo_id)}@{safe(revision or DEFAULT_BRANCH)}.json"


def upload_dataset_folder(folder: str | Path, repo_id: str, *, token: str | None, private: bool = False,
                          revision: str | None = None, endpoint: str | None = None,
                          commit_message: str = "Upload dataset with facext", max_attempts: int = 5,
                          progress: bool = True) -> UploadResult:
    """Uploads every file under ``folder`` to the dataset repo ``repo_id`` (created when missing,
    ``private`` then) as one commit on ``revision`` (default main; a missing branch is created from
    main).  Re-running after an interruption sends only what the Hub does not have yet; re-running
    after success with the same files makes no new commit."""
    root = Path(folder)
    if not root.is_dir():
        raise HubUploadError(f"{root} is not a folder")
    policy = RetryPolicy(max_attempts=max_attempts, backoff_base_s=BACKOFF_BASE_S, backoff_max_s=BACKOFF_MAX_S,
                         retry_after_max_s=RETRY_AFTER_MAX_S)  # ValueError when max_attempts < 1
    files = local_files(root)
    if not files:
        raise HubUploadError(f"{root} has no files to upload")
    branch = revision or DEFAULT_BRANCH
    try:  # resolved once (HF_TOKEN, the saved login, OIDC in CI), to say whether one was sent
        token = token or get_token()
    except Exception as exc:
        raise HubUploadError(f"could not get a Hugging Face token: {exc}") from exc
    api = HfApi(endpoint=endpoint, token=token)
    hub = _Target(api.endpoint, repo_id, branch, token, policy)

    path = state_file(root, repo_id, branch)
    state = _load_state(path, api.endpoint, repo_id, branch)
    state["files"] = {f.path: state["files"][f.path] for f in files if _done(state["files"].get(f.path), f)}
    committed = state.get("commit") or {}
    if committed and all(committed.get("files", {}).get(f.path) == f.sha256 for f in files):
        log.info("%s@%s: already committed (%s); nothing to upload", repo_id, branch, committed["oid"])
        return UploadResult(committed["oid"], committed["url"], len(files), 0, len(files), True)

    hub.retry("create the repo", lambda: api.create_repo(repo_id, repo_type=REPO_TYPE, private=private,
                                                         exist_ok=True))
    if private:
        _ensure_private(api, hub)
    if revision is not None:
        _ensure_branch(api, hub)

    pending = [f for f in files if f.path not in state["files"]]
    _send(api, hub, pending, state, path, progress)
    try:
        oid, url, landed = _commit(api, hub, files, state, commit_message)
    except HubUploadError as exc:
        sent = {f.path for f in pending}
        earlier = [f for f in files if f.path not in sent and state["files"][f.path]["mode"] == "lfs"]
        if exc.status not in (400, 422) or not earlier:
            raise
        # The Hub may clean up LFS objects no commit references: ask again about what earlier runs
        # sent (it answers "have it" for each object it kept, so those bytes are not re-sent).
        log.warning("the Hub refused the commit (%s); checking the %d files sent by earlier runs",
                    exc, len(earlier))
        _send(api, hub, earlier, state, path, progress)
        oid, url, landed = _commit(api, hub, files, state, commit_message)
    state["commit"] = {"oid": oid, "url": url, "files": {f.path: f.sha256 for f in files}}
    for f in files:  # what the branch now holds: a later commit leaves these files out unless changed
        entry = state["files"][f.path]
        entry["remote_oid"] = f.sha256 if entry["mode"] == "lfs" else git_hash(f.abspath.read_bytes())
    _save_state(path, state)
    log.info("%s@%s: %s %s", repo_id, branch, "already held these files at" if landed else "committed", oid)
    return UploadResult(oid, url, len(files), len(pending), len(files) - len(pending), landed)


# --------------------------------------------------------------------------------------------
# Steps


def _ensure_private(api: HfApi, hub: _Target) -> None:
    """Refuses to publish into a repo that exists and is public when private was asked for."""
    info = hub.retry("read the repo", lambda: api.repo_info(hub.repo_id, repo_type=REPO_TYPE))
    if not info.private:
        raise HubUploadError(f"dataset {hub.repo_id} already exists and is public, but a private upload "
                             "was asked for: make it private on the Hub (or publish without --private)")


def _ensure_branch(api: HfApi, hub: _Target) -> None:
    """Creates the target branch from main unless it exists (a tag or a commit is refused)."""
    if hub.branch.startswith("refs/pr/"):
        return  # a pull request's ref exists or the commit fails with a clear 404
    refs = hub.retry("list the branches", lambda: api.list_repo_refs(hub.repo_id, repo_type=REPO_TYPE))
    if any(b.name == hub.branch for b in refs.branches):
        return
    if any(t.name == hub.branch for t in refs.tags) or re.fullmatch(r"[0-9a-f]{40}", hub.branch):
        raise HubUploadError(f"revision {hub.branch!r} of dataset {hub.repo_id} is a tag or a commit, "
                             "not a branch: commits go to branches; pass a branch name")
    hub.retry(f"create branch {hub.branch}", lambda: api.create_branch(
        hub.repo_id, branch=hub.branch, repo_type=REPO_TYPE, exist_ok=True))


def _operation(f: LocalFile) -> CommitOperationAdd:
    op = CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.abspath))
    op.upload_info.sha256 = bytes.fromhex(f.sha256)  # known: spares the library a second read
    return op


def _send(api: HfApi, hub: _Target, files: list[LocalFile], state: dict, path: Path,
          progress: bool) -> None:
    """Pre-uploads ``files`` group by group, recording each group in the state once the Hub has it."""
    if not files:
        return
    with disable_progress_bars(), Progress(total=len(files), desc=f"upload {hub.repo_id}", unit="file",
                                           enabled=None if progress else False) as bar:
        for group in _groups(files):
            ops = hub.retry(f"pre-upload {_describe(group)}", lambda g=group: _preupload(api, hub, g))
            for f, op in zip(group, ops):
                state["files"][f.path] = {"size": f.size, "sha256": f.sha256, "mode": op._upload_mode,
                                          "ignored": bool(op._should_ignore), "remote_oid": op._remote_oid}
            _save_state(path, state)
            for f in group:
                bar.advance(1, size=f.size)


def _preupload(api: HfApi, hub: _Target, group: list[LocalFile]) -> list[CommitOperationAdd]:
    ops = [_operation(f) for f in group]  # fresh each attempt: the library mutates them
    api.preupload_lfs_files(hub.repo_id, ops, repo_type=REPO_TYPE, revision=hub.branch)
    return ops


def _restored(f: LocalFile, entry: dict) -> CommitOperationAdd:
    """An operation whose content the Hub already has, so create_commit makes no request for it.
    The fields are those huggingface_hub's own upload_large_folder restores from its resume
    metadata (``_upload_large_folder._build_hacky_operation``)."""
    op = _operation(f)
    op._upload_mode = entry["mode"]
    op._should_ignore = entry["ignored"]
    op._remote_oid = entry["remote_oid"]
    op._is_uploaded = entry["mode"] == "lfs"
    return op


def _commit(api: HfApi, hub: _Target, files: list[LocalFile], state: dict,
            message: str) -> tuple[str, str, bool]:
    """(oid, url, landed_before) of the one commit holding ``files``.  The commit names its parent,
    so a retry after a lost answer cannot commit twice: the Hub answers 412 and the branch head,
    found to hold our files, is taken as the commit."""
    wanted = [f for f in files if not state["files"][f.path]["ignored"]]
    head = hub.retry("read the branch head", lambda: _head(api, hub))
    if _holds(api, hub, head, wanted, state):
        return head, _commit_url(hub, head), True
    for attempt in range(1, hub.max_attempts + 1):
        ops = [_restored(f, state["files"][f.path]) for f in files]
        try:
            info = api.create_commit(hub.repo_id, ops, commit_message=message, repo_type=REPO_TYPE,
                                     revision=hub.branch, parent_commit=head)
            return info.oid, info.commit_url, False
        except Exception as exc:  # sorted below into a retry or a HubUploadError
            status = _status_of(exc)
            if status != 412 and not _is_transient(exc, status):
                raise hub.refusal("commit", exc, status) from exc
            new_head = hub.retry("read the branch head", lambda: _head(api, hub))
            if new_head != head and _holds(api, hub, new_head, wanted, state):
                return new_head, _commit_url(hub, new_head), False  # our commit landed; its answer was lost
            if attempt == hub.max_attempts:
                raise hub.exhausted("commit", exc, status) from exc
            delay = 0.0 if status == 412 else hub.policy.delay(attempt, _retry_after(exc))
            log.warning("commit to %s: %s; retry %d/%d in %.1fs", hub.repo_id, hub.brief(exc, status),
                        attempt, hub.max_attempts - 1, delay)
            time.sleep(delay)
            head = new_head
    raise AssertionError("unreachable")


def _head(api: HfApi, hub: _Target) -> str:
    return api.repo_info(hub.repo_id, repo_type=REPO_TYPE, revision=hub.branch).sha


def _holds(api: HfApi, hub: _Target, revision: str, files: list[LocalFile], state: dict) -> bool:
    """Whether the repo at ``revision`` holds every file with this content."""
    found = {}
    for start in range(0, len(files), PATHS_INFO_BATCH):
        paths = [f.path for f in files[start:start + PATHS_INFO_BATCH]]
        infos = hub.retry("read the branch's files", lambda p=paths: api.get_paths_info(
            hub.repo_id, p, revision=revision, repo_type=REPO_TYPE))
        found.update({i.path: i for i in infos})
    for f in files:
        info = found.get(f.path)
        if info is None or getattr(info, "size", None) != f.size:
            return False
        lfs = getattr(info, "lfs", None)
        if lfs is not None:
            if lfs.sha256 != f.sha256:
                return False
        elif state["files"][f.path]["mode"] == "lfs" or info.blob_id != git_hash(f.abspath.read_bytes()):
            return False
    return True


def _commit_url(hub: _Target, oid: str) -> str:
    return f"{hub.endpoint.rstrip('/')}/datasets/{hub.repo_id}/commit/{oid}"


def _groups(files: list[LocalFile]) -> Iterator[list[LocalFile]]:
    group: list[LocalFile] = []
    size = 0
    for f in files:
        group.append(f)
        size += f.size
        if len(group) >= GROUP_MAX_FILES or size >= GROUP_MAX_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _describe(group: list[LocalFile]) -> str:
    return group[0].path if len(group) == 1 else f"{len(group)} files ({group[0].path} ...)"


# --------------------------------------------------------------------------------------------
# State


def _done(entry: dict | None, f: LocalFile) -> bool:
    return bool(entry) and entry.get("size") == f.size and entry.get("sha256") == f.sha256 \
        and entry.get("mode") in ("lfs", "regular")


def _load_state(path: Path, endpoint: str, repo_id: str, branch: str) -> dict:
    fresh = {"version": 1, "endpoint": endpoint, "repo_id": repo_id, "repo_type": REPO_TYPE,
             "revision": branch, "files": {}, "commit": None}
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable upload state %s (%s); starting over", path, exc)
        return fresh
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict) or any(
            state.get(k) != fresh[k] for k in ("version", "endpoint", "repo_id", "repo_type", "revision")):
        log.warning("upload state %s is for another target; starting over", path)
        return fresh
    return state


def _save_state(path: Path, state: dict) -> None:
    """Writes atomically, so a process killed mid-write leaves the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Errors and retries


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an error: from the response, or from hf_xet's message text."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(e, (HfHubHTTPError, httpx.HTTPStatusError)) and response is not None:
            return response.status_code
        m = re.search(r"status (?:client|server) error \((\d{3})", str(e))
        if m:
            return int(m.group(1))
    return None


def _is_transient(exc: BaseException, status: int | None) -> bool:
    """An HTTP status worth another try, or no answer at all (a dropped connection, a timeout)."""
    if status is not None:
        return is_transient_status(status)
    return any(isinstance(e, (httpx.TransportError, ConnectionError, TimeoutError)) for e in _chain(exc))


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date), from the first
    response in the exception's chain that says; uncapped (the policy caps)."""
    for e in _chain(exc):
        seconds = retry_after_seconds(getattr(getattr(e, "response", None), "headers", None))
        if seconds is not None:
            return seconds
    return None


@dataclass
class _Target:
    """Where the upload goes, and how its errors read."""

    endpoint: str
    repo_id: str
    branch: str
    token: str | None
    policy: RetryPolicy

    @property
    def max_attempts(self) -> int:
        return self.policy.max_attempts

    def scrub(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token and len(self.token) >= 4 else text

    def brief(self, exc: BaseException, status: int | None) -> str:
        if status is not None:
            detail = next((getattr(e, "server_message", None) for e in _chain(exc)
                           if getattr(e, "server_message", None)), None)
            return self.scrub(f"HTTP {status}" + (f": {detail.strip()}" if detail else ""))
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return self.scrub(f"{type(exc).__name__}: {first}")

    def retry(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, retried on transient errors; other errors become HubUploadError."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except HubUploadError:
                raise
            except Exception as exc:  # sorted below into a retry or a HubUploadError
                status = _status_of(exc)
                if not _is_transient(exc, status):
                    raise self.refusal(what, exc, status) from exc
                if attempt == self.max_attempts:
                    raise self.exhausted(what, exc, status) from exc
                delay = self.policy.delay(attempt, _retry_after(exc))
                log.warning("%s (%s): %s; retry %d/%d in %.1fs", what, self.repo_id,
                            self.brief(exc, status), attempt, self.max_attempts - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def exhausted(self, what: str, exc: BaseException, status: int | None) -> HubUploadError:
        return HubUploadError(
            f"could not {what} for dataset {self.repo_id} at {self.endpoint} after {self.max_attempts} "
            f"attempts ({self.brief(exc, status)}): {RESUME_HINT}", status)

    def refusal(self, what: str, exc: BaseException, status: int | None) -> HubUploadError:
        repo, brief = f"dataset {self.repo_id}", self.brief(exc, status)
        if status == 401 and not self.token:
            head, fix = (f"the Hub at {self.endpoint} wants a token for {repo}",
                         "set HF_TOKEN (or pass --token) to a token with write access")
        elif status == 401:
            head, fix = (f"the Hub at {self.endpoint} refused the token for {repo}",
                         "set HF_TOKEN to a valid token with write access")
        elif status == 403:
            head, fix = (f"the token may not write to {repo}",
                         f"set HF_TOKEN to a token with write access to {self.repo_id.split('/')[0]}")
        elif status == 404:
            head, fix = (f"{repo} or its revision {self.branch!r} was not found",
                         "check the repo id and that the token can see it")
        elif status == 412:
            head, fix = (f"branch {self.branch!r} of {repo} kept moving",
                         "another writer is committing; re-run when it is done")
        elif status is not None:
            head, fix = f"the Hub refused a request for {repo}", RESUME_HINT
        else:
            head, fix = f"the upload to {repo} failed", RESUME_HINT
        text = f"{head} while trying to {what} ({brief}): {fix}"
        if "xet" in str(exc).lower():
            text += ("; huggingface_hub uploads through Xet when hf_xet is installed: against a Hub "
                     "without Xet set HF_HUB_DISABLE_XET=1")
        return HubUploadError(self.scrub(text), status)


__all__ = ["HubUploadError", "LocalFile", "UploadResult", "local_files", "state_file",
           "upload_dataset_folder"]
