"""`facext publish OUTPUT`: export a finished run for the Hub and upload it as one
resumable commit, or only write the tree (`--local-dir`).

The export stages in OUTPUT/_publish and `build_tools.publish.hub_upload` uploads that
folder (resumable: its state lives in the folder's `.facext_upload/`, which re-exporting
keeps).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from build_tools.publish.export import STAGING, PublishError, export_for_hub, read_finished_output


def publish(output: str | os.PathLike, *, repo_id: str | None = None, local_dir: str | os.PathLike | None = None,
            token: str | None = None, private: bool = False, revision: str | None = None,
            endpoint: str | None = None, license: str = "unknown", progress: bool = True) -> dict[str, Any]:
    """Export OUTPUT for the Hub and upload it to `repo_id`, or, with `local_dir`, only
    write the tree there (nothing is uploaded).  Uploads stage in OUTPUT/_publish, kept
    so that an interrupted upload resumes.  Returns the export summary, plus `upload`
    (the uploader's result) when something was uploaded."""
    read_finished_output(output)
    if local_dir is None:
        if not repo_id:
            raise PublishError("name the Hub dataset repo to upload to (--repo-id user/name), or write the files "
                               "locally with --local-dir DIR")
        _check_repo_id(repo_id)
        token = token or _saved_token()
        if not token:
            raise PublishError("uploading needs a Hugging Face token with write access: set HF_TOKEN or log in "
                               "with `hf auth login` (tokens: https://huggingface.co/settings/tokens)")
    dest = Path(local_dir) if local_dir is not None else Path(output) / STAGING
    summary = export_for_hub(output, dest, license=license, repo_id=repo_id, progress=progress)
    summary["uploaded"] = False
    if local_dir is not None:
        return summary
    from build_tools.publish.hub_upload import upload_dataset_folder

    samples = summary["rows"]
    summary["upload"] = upload_dataset_folder(
        dest, repo_id, token=token, private=private, revision=revision, endpoint=endpoint,
        commit_message=f"facext publish: {samples} {summary['title']} samples", progress=progress)
    summary["uploaded"] = True
    return summary


def _saved_token() -> str | None:
    """HF_TOKEN, else the saved login, as huggingface_hub finds them."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception as exc:  # noqa: BLE001 -- an OIDC exchange that failed, an unreadable token file
        raise PublishError(f"could not read a Hugging Face token: {exc}") from None


def _check_repo_id(repo_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id) or ".." in repo_id or "--" in repo_id:
        raise PublishError(f"{repo_id!r} is not a Hub repo id: expected user/name or org/name")
