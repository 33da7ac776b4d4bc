"""Publishing a dataset folder: huggingface_hub's real client against the local Hub server."""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download

from build_tools.fakes.hub_server import Fault, FaultRule, LocalHubServer
from build_tools.publish import hub_upload
from build_tools.publish.hub_upload import HubUploadError, local_files, state_file, upload_dataset_folder

TOKEN = "hf_facext_test_write_5d1c0a7e"
READ_TOKEN = "hf_facext_test_read_91b2e4f3"
REPO = "facext-test/fifa-instruct"
from tests import REPO as ROOT

CARD = "---\nlicense: cc-by-nc-4.0\ntask_categories:\n- visual-question-answering\n---\n# FIFA instruct\n"
SHARD_SIZES = (1_300_000, 1_450_000, 1_600_000, 1_250_000)

# huggingface_hub's LFS upload passes a file as httpx `data=`, which httpx 0.28 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(autouse=True)
def hub_client(monkeypatch, tmp_path):
    """The client talks only to the local server, through plain LFS, with no saved token, and
    retries fast."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub 1.33 uploads through Xet whenever hf_xet is installed, without asking the
    # server; the local server speaks plain LFS (the constant is read at import, hence both).
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_ID_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setenv("FACEXT_PROGRESS", "0")
    monkeypatch.setattr(hub_upload, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(hub_upload, "GROUP_MAX_BYTES", 1_000_000)  # a >1 MB shard is its own group


@pytest.fixture
def server():
    with LocalHubServer(tokens={TOKEN: "write", READ_TOKEN: "read"}) as s:
        yield s


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A published folder: a card and four parquet-like shards, plus a download cache that must
    stay local."""
    folder = tmp_path / "fifa_instruct"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text(CARD)
    for i, size in enumerate(SHARD_SIZES):
        body = hashlib.shake_256(f"shard {i}".encode()).digest(size - 8)
        (folder / "data" / f"train-{i:05d}-of-00004.parquet").write_bytes(b"PAR1" + body + b"PAR1")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("local only")
    return folder


def shards(folder: Path) -> list[Path]:
    return sorted((folder / "data").glob("*.parquet"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload(folder: Path, server: LocalHubServer, **kwargs) -> hub_upload.UploadResult:
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("progress", False)
    return upload_dataset_folder(folder, REPO, endpoint=server.url, **kwargs)


def upload_commits(server: LocalHubServer, repo: str = REPO) -> list:
    """The repo's commits after the initial one the Hub makes with the repo."""
    return server.commits(repo)[1:]


def expected_paths(folder: Path) -> set[str]:
    return {"README.md"} | {f"data/{p.name}" for p in shards(folder)}


def test_clean_upload_makes_one_commit_and_every_file_reads_back(server, dataset, tmp_path, caplog,
                                                                 capsys, monkeypatch):
    monkeypatch.setenv("FACEXT_PROGRESS", "1")
    caplog.set_level(logging.DEBUG)
    result = upload(dataset, server, progress=True)

    assert (result.files, result.uploaded, result.skipped, result.already_committed) == (5, 5, 0, False)
    commits = upload_commits(server)
    assert len(commits) == 1 and commits[0].oid == result.commit_oid
    assert set(commits[0].added) == expected_paths(dataset)  # no .cache/, no .facext_upload/
    assert server.branches(REPO)["main"] == result.commit_oid
    assert result.commit_url.endswith(f"/datasets/{REPO}/commit/{result.commit_oid}")
    assert "upload facext-test/fifa-instruct: 5/5 files" in capsys.readouterr().err

    # Each shard went through LFS once, whole; the card went inline in the commit.
    for shard in shards(dataset):
        oid = sha256(shard)
        assert server.uploads_stored(oid) == 1
        assert server.bytes_received(oid) == shard.stat().st_size
        assert commits[0].tree[f"data/{shard.name}"].sha256 == oid
    assert len(server.requests_of("lfs_upload")) == 4
    assert not commits[0].tree["README.md"].is_lfs
    assert len(server.requests_of("commit")) == 1

    # Read back with the library's own download paths.
    local = snapshot_download(REPO, repo_type="dataset", endpoint=server.url, token=TOKEN,
                              local_dir=tmp_path / "snapshot")
    for path in expected_paths(dataset):
        assert (Path(local) / path).read_bytes() == (dataset / path).read_bytes(), path
    one = hf_hub_download(REPO, "data/train-00002-of-00004.parquet", repo_type="dataset",
                          endpoint=server.url, token=TOKEN, cache_dir=tmp_path / "hf-cache")
    assert Path(one).read_bytes() == shards(dataset)[2].read_bytes()

    # The token is in no record, log line, output or state file.
    state = state_file(dataset, REPO, None)
    texts = [repr(server.requests), caplog.text, capsys.readouterr().err, state.read_text()]
    assert not any(TOKEN in text for text in texts)
    assert json.loads(state.read_text())["commit"]["oid"] == result.commit_oid


def test_refused_third_shard_raises_and_a_rerun_sends_only_the_rest(server, dataset):
    files = shards(dataset)
    third = sha256(files[2])
    # The storage refuses the third shard's bytes (as when the file changes while it is sent):
    # huggingface_hub does not retry a 400, and neither do we.
    server.set_faults([FaultRule("lfs_upload", Fault.status(400, message="BadDigest"), oid=third)])
    with pytest.raises(HubUploadError) as failed:
        upload(dataset, server)
    message = str(failed.value)
    assert "HTTP 400" in message and REPO in message and "train-00002" in message
    assert upload_commits(server) == []
    first_run = len(server.requests)

    server.set_faults(None)
    result = upload(dataset, server)
    assert (result.uploaded, result.skipped) == (2, 3)  # the card and two shards were recorded

    # The second run asked about, and sent, only the third and fourth shards.
    second = server.requests[first_run:]
    asked = {p for r in second if r.kind == "preupload" for p in r.objects}
    assert asked == {f"data/{files[2].name}", f"data/{files[3].name}"}
    for i, shard in enumerate(files):
        oid, size = sha256(shard), shard.stat().st_size
        assert server.uploads_stored(oid) == 1
        assert server.bytes_received(oid) == (2 * size if i == 2 else size)  # refused once, then whole
    commits = upload_commits(server)
    assert len(commits) == 1 and set(commits[0].tree) - {".gitattributes"} == expected_paths(dataset)


_KILLED_UPLOAD = """
import sys
from build_tools.publish import hub_upload
hub_upload.GROUP_MAX_BYTES = 1_000_000
hub_upload.upload_dataset_folder(sys.argv[1], sys.argv[2], token=None, endpoint=sys.argv[3], progress=False)
"""


def test_killed_process_resumes_without_resending_finished_shards(server, dataset, tmp_path):
    files = shards(dataset)
    third = sha256(files[2])
    release = threading.Event()
    server.set_faults([FaultRule("lfs_upload", Fault.hold(release, after_bytes=400_000), oid=third)])
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "FACEXT_PROGRESS": "0",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_UPLOAD, str(dataset), REPO, server.url],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while server.bytes_received(third) < 400_000:  # the third shard is half sent
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "the upload never reached the third shard"
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert upload_commits(server) == []
    assert server.uploads_stored(third) == 0
    state = json.loads(state_file(dataset, REPO, None).read_text())
    assert set(state["files"]) == {"README.md", f"data/{files[0].name}", f"data/{files[1].name}"}

    server.set_faults(None)
    result = upload(dataset, server)
    assert (result.uploaded, result.skipped) == (2, 3)
    for i, shard in enumerate(files):
        oid, size = sha256(shard), shard.stat().st_size
        assert server.uploads_stored(oid) == 1, shard.name
        assert server.bytes_received(oid) == (size + 400_000 if i == 2 else size), shard.name
    commits = upload_commits(server)
    assert len(commits) == 1 and set(commits[0].added) == expected_paths(dataset)


def test_transient_503s_with_retry_after_are_retried(server, dataset):
    second = sha256(shards(dataset)[1])
    server.set_faults([
        FaultRule("lfs_upload", Fault.status(503, retry_after=0), oid=second),  # the library retries
        FaultRule("commit", Fault.status(503, retry_after=1, message="Service Unavailable")),  # we do
    ])
    started = time.monotonic()
    result = upload(dataset, server)
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert [r.status for r in server.requests_of("commit")] == [503, 200]
    assert server.uploads_stored(second) == 1
    assert len(server.requests_of("lfs_upload")) == 5  # four shards, one sent twice
    commits = upload_commits(server)
    assert len(commits) == 1 and commits[0].oid == result.commit_oid


def test_an_http_date_retry_after_is_waited_until_that_date_up_to_the_cap(server, dataset, monkeypatch):
    # The uploader's sleeps are recorded, not slept: the dates are a minute and a day away.
    slept: list[float] = []
    monkeypatch.setattr(hub_upload, "time", SimpleNamespace(sleep=slept.append))
    now = int(time.time())
    server.set_faults([
        FaultRule("commit", Fault.status(503, retry_after=email.utils.formatdate(now + 60, usegmt=True))),
        FaultRule("commit", Fault.status(503, retry_after=email.utils.formatdate(now + 86_400, usegmt=True))),
    ])
    result = upload(dataset, server)
    assert [r.status for r in server.requests_of("commit")] == [503, 503, 200]
    assert [c.oid for c in upload_commits(server)] == [result.commit_oid]
    minute, day = slept
    assert 58.0 <= minute <= 66.0  # until the date (less the second already begun), + up to 10 % jitter
    assert hub_upload.RETRY_AFTER_MAX_S <= day <= 1.1 * hub_upload.RETRY_AFTER_MAX_S  # capped at 120 s


def test_a_lost_commit_answer_does_not_commit_twice(server, dataset):
    server.set_faults([FaultRule("commit", Fault.drop_response())])
    result = upload(dataset, server)
    commits = upload_commits(server)
    assert len(commits) == 1 and commits[0].oid == result.commit_oid
    assert [r.status for r in server.requests_of("commit")] == [0]  # found landed, not re-sent


def test_exhausted_commit_retries_raise_and_a_rerun_only_commits(server, dataset):
    server.set_faults([FaultRule("commit", Fault.status(502, retry_after=0), times=None)])
    with pytest.raises(HubUploadError, match=r"after 2 attempts .*HTTP 502.*re-run"):
        upload(dataset, server, max_attempts=2)
    assert len(server.requests_of("commit")) == 2 and upload_commits(server) == []
    first_run = len(server.requests)

    server.set_faults(None)
    result = upload(dataset, server)
    assert (result.uploaded, result.skipped) == (0, 5)
    kinds = {r.kind for r in server.requests[first_run:]}
    assert not kinds & {"preupload", "lfs_batch", "lfs_upload", "lfs_verify"}
    assert len(upload_commits(server)) == 1


@pytest.mark.parametrize("token, says", [
    (None, "wants a token"),
    ("hf_wrong_token_e3b0c442", "refused the token"),
])
def test_401_names_the_repo_and_the_fix(server, dataset, token, says):
    with pytest.raises(HubUploadError) as failed:
        upload(dataset, server, token=token)
    message = str(failed.value)
    assert says in message and "HTTP 401" in message and REPO in message and "HF_TOKEN" in message
    assert server.requests_of("create_repo")[0].status == 401
    assert server.requests_of("preupload") == []  # stopped at once, nothing retried
    if token:
        text = "".join(traceback.format_exception(failed.value))
        assert token not in text and token not in repr(server.requests)


def test_read_only_token_is_told_to_use_a_write_token(server, dataset):
    with pytest.raises(HubUploadError, match=r"HTTP 403.*write access"):
        upload(dataset, server, token=READ_TOKEN)


def test_rerun_after_success_makes_no_new_commit_and_a_change_sends_one_file(server, dataset):
    first = upload(dataset, server)
    seen = len(server.requests)
    again = upload(dataset, server)
    assert again.already_committed and again.commit_oid == first.commit_oid
    assert (again.uploaded, again.skipped) == (0, 5)
    assert len(server.requests) == seen  # not one request
    assert len(upload_commits(server)) == 1

    changed = shards(dataset)[1]
    changed.write_bytes(changed.read_bytes()[:-4] + b"PAR2")
    third = upload(dataset, server)
    assert (third.uploaded, third.skipped, third.already_committed) == (1, 4, False)
    commits = upload_commits(server)
    assert len(commits) == 2 and commits[-1].added == (f"data/{changed.name}",)
    assert server.file(REPO, f"data/{changed.name}") == changed.read_bytes()


def test_upload_to_a_new_branch_creates_it_and_commits_there(server, dataset, tmp_path):
    HfApi(endpoint=server.url, token=TOKEN).create_repo(REPO, repo_type="dataset")
    initial = server.branches(REPO)["main"]
    result = upload(dataset, server, revision="facext/v1")

    branches = server.branches(REPO)
    assert branches["facext/v1"] == result.commit_oid and branches["main"] == initial
    assert len(server.requests_of("create_branch")) == 1
    assert state_file(dataset, REPO, "facext/v1").exists()
    path = hf_hub_download(REPO, "README.md", repo_type="dataset", revision="facext/v1",
                           endpoint=server.url, token=TOKEN, cache_dir=tmp_path / "hf-cache")
    assert Path(path).read_text() == CARD

    again = upload(dataset, server, revision="facext/v1")
    assert again.already_committed and len(server.requests_of("create_branch")) == 1


def test_local_files_leave_out_state_and_caches(dataset):
    (dataset / ".facext_upload").mkdir()
    (dataset / ".facext_upload" / "x.json").write_text("{}")
    paths = [f.path for f in local_files(dataset)]
    assert paths == sorted(expected_paths(dataset))


def test_server_refuses_bytes_that_do_not_match_the_announced_object(server):
    api = HfApi(endpoint=server.url, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    data = b"x" * 1000
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx.post(f"{server.url}/datasets/{REPO}.git/info/lfs/objects/batch",
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"operation": "upload", "transfers": ["basic"],
                             "objects": [{"oid": oid, "size": len(data)}]}).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert httpx.put(href, content=b"y" * 1000).status_code == 400
    assert not server.has_object(oid)
    assert httpx.put(href, content=data).status_code == 200
    assert server.has_object(oid)


def test_objects_the_hub_dropped_before_the_commit_are_sent_again(server, dataset):
    server.set_faults([FaultRule("commit", Fault.status(502, retry_after=0), times=None)])
    with pytest.raises(HubUploadError):
        upload(dataset, server, max_attempts=1)
    server.set_faults(None)
    server.forget_objects()  # uncommitted LFS objects cleaned up on the Hub's side

    result = upload(dataset, server)
    assert [r.status for r in server.requests_of("commit")] == [502, 400, 200]
    for shard in shards(dataset):
        assert server.uploads_stored(sha256(shard)) == 2
    assert result.uploaded == 0 and len(upload_commits(server)) == 1
    assert server.file(REPO, "data/train-00003-of-00004.parquet") == shards(dataset)[3].read_bytes()


def test_private_upload_creates_a_private_repo_and_refuses_a_public_one(server, dataset):
    upload(dataset, server, private=True)
    assert HfApi(endpoint=server.url, token=TOKEN).repo_info(REPO, repo_type="dataset").private

    HfApi(endpoint=server.url, token=TOKEN).create_repo("facext-test/public", repo_type="dataset")
    with pytest.raises(HubUploadError, match="is public"):
        upload_dataset_folder(dataset, "facext-test/public", token=TOKEN, endpoint=server.url,
                              private=True, progress=False)
    assert upload_commits(server, "facext-test/public") == []
