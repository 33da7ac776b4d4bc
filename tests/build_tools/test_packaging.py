"""The sdist that Beam builds for `--setup_file` is what Dataflow workers install.

The sdist is built by Beam 2.72's own stager (`Stager.create_job_resources`, which calls
`Stager._build_setup_package`), from a copy of the source tree so the checkout is left
alone.  The stager first tries `python -m build --no-isolation --sdist` and, for a
setup.py, falls back to `python setup.py sdist`; both work offline.  The tarball must hold
every module of every package, their data files and the files pip needs to build it
again on a worker; installed with pip, the data files must land next to the code.

pyproject.toml finds the packages itself; the packages expected here are read off the
source tree (every folder with an `__init__.py` outside tests/), not kept by hand.  The
top-level names (`schemas`, `prompts`, `pipelines`, `fict`, ...) are common words that
other distributions on PyPI use too; one installed beside facext would shadow ours for
code run outside the checkout, so no other distribution may provide them.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import REPO as ROOT

# Top-level folders of a checkout that are not part of the source (outputs, caches, venvs).
NOT_SOURCE = {".git", "out", "build", "dist", ".venv", "venv", ".pytest_cache", ".ruff_cache", "sample_pairs",
              "tests"}


def source_packages(root: Path = ROOT) -> list[str]:
    """Every package of the source tree: folders with an __init__.py, below a top-level one."""
    found = []
    for init in sorted(root.glob("*/**/__init__.py")):
        parts = init.parent.relative_to(root).parts
        if parts[0] in NOT_SOURCE or parts[0].startswith(".") or "__pycache__" in parts:
            continue
        if all((root.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts) + 1)):
            found.append(".".join(parts))
    return found


PACKAGES = tuple(source_packages())
TOP_LEVEL = tuple(sorted({p.split(".")[0] for p in PACKAGES}))
DATA_FILES = ("fict/data/fict.yaml", "fict/data/canonical_face.json", "prompts/data/fifa_instructions.yaml",
              "prompts/data/llm_prompts.yaml", "pipelines/llm/data/prices.yaml")


def _folder(package: str) -> str:
    return package.replace(".", "/")
# pip on a worker builds the sdist again: it needs the build config and the readme it names.
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")
def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names
            if n == "__pycache__" or n.endswith((".egg-info", ".pyc")) or (top and n in NOT_SOURCE - {"tests"})}


def _staged(resources) -> dict[str, str]:
    """Staged name -> local file of the stager's artifacts."""
    from apache_beam.portability.api import beam_runner_api_pb2 as pb

    out = {}
    for r in resources:
        role = pb.ArtifactStagingToRolePayload.FromString(r.role_payload)
        out[role.staged_name] = pb.ArtifactFilePayload.FromString(r.type_payload).path
    return out


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The workflow tarball Beam's stager stages for `--setup_file setup.py`."""
    import shutil

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.stager import WORKFLOW_TARBALL_FILE, Stager

    src = tmp_path_factory.mktemp("src") / "facext"
    shutil.copytree(ROOT, src, ignore=_ignore)
    staging = tmp_path_factory.mktemp("staging")
    options = PipelineOptions(["--setup_file", str(src / "setup.py"), "--requirements_cache", "skip"])
    resources = Stager.create_job_resources(options, str(staging), log_submission_env_dependencies=False)
    staged = _staged(resources)
    assert WORKFLOW_TARBALL_FILE in staged, staged
    return Path(staged[WORKFLOW_TARBALL_FILE])


def _members(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    return {n.split("/", 1)[1] for n in names if "/" in n}  # below facext-<version>/


def test_pyproject_finds_every_package_and_nothing_else():
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {"pipelines.common", "pipelines.fifa", "pipelines.llm", "build_tools.publish"} <= set(PACKAGES)
    assert sorted(find_packages(str(ROOT), include=find["include"])) == sorted(PACKAGES)


def shadowing(names, path: list[str] | None = None) -> dict[str, list[str]]:
    """Top-level name -> the distributions other than facext that provide it (on `path`,
    default sys.path)."""
    from importlib.metadata import distributions

    out: dict[str, list[str]] = {}
    for dist in distributions(path=path) if path is not None else distributions():
        name = dist.metadata["Name"]
        if name is None or name.lower() == "facext":
            continue
        provided = set((dist.read_text("top_level.txt") or "").split())
        provided |= {f.parts[0] for f in dist.files or () if f.suffix == ".py" or f.name == "__init__.py"}
        for top in set(names) & provided:
            out.setdefault(top, []).append(name)
    return out


def test_no_other_distribution_provides_our_top_level_names():
    assert TOP_LEVEL == ("build_tools", "fict", "pipelines", "prompts", "schemas", "training")
    assert not shadowing(TOP_LEVEL), "installed distributions shadow facext's packages"


def test_the_shadow_check_finds_a_planted_distribution(tmp_path):
    # A distribution named "schemas" (there is one on PyPI) installed beside facext.
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "__init__.py").write_text("")
    info = tmp_path / "schemas-0.7.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: schemas\nVersion: 0.7.1\n")
    (info / "RECORD").write_text("schemas/__init__.py,,\nschemas-0.7.1.dist-info/METADATA,,\n")
    assert shadowing(TOP_LEVEL, [str(tmp_path)]) == {"schemas": ["schemas"]}


def test_imports_resolve_to_this_checkout_from_anywhere(tmp_path):
    """Run from another folder (so the checkout is not on sys.path first), every top-level
    package still comes from this project's files."""
    code = ("import importlib, json\n"
            f"print(json.dumps({{n: importlib.import_module(n).__file__ for n in {list(TOP_LEVEL)!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path)
    import json

    files = json.loads(done.stdout.strip().splitlines()[-1])
    for name, file in files.items():
        assert Path(file).resolve() == ROOT / name / "__init__.py", (name, file)


def test_sdist_holds_code_data_and_build_files(sdist):
    assert sdist.name.startswith("facext-") and sdist.name.endswith(".tar.gz")
    members = _members(sdist)
    modules = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / _folder(pkg)).glob("*.py")}
    assert {f"{_folder(pkg)}/__init__.py" for pkg in PACKAGES} <= modules
    missing = sorted((modules | set(DATA_FILES) | set(BUILD_FILES)) - members)
    assert not missing, f"not in the sdist: {missing}"


def test_sdist_installs_with_its_data(sdist, tmp_path):
    target = tmp_path / "site"
    # --no-build-isolation: offline, with this venv's setuptools (and wheel, which
    # setuptools < 70.1 needs to build the wheel pip installs).
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(sdist)],
        check=False, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr
                                  + "\n(setuptools < 70.1 needs the `wheel` package for this)")
    for pkg in PACKAGES:
        assert (target / _folder(pkg) / "__init__.py").is_file(), pkg
    for path in DATA_FILES:
        assert (target / path).is_file(), path
    # The installed copy (not the checkout) imports and reads its data through importlib.resources.
    code = (f"import sys; sys.path.insert(0, {str(target)!r})\n"
            "import fict, prompts\n"
            f"assert fict.__file__.startswith({str(target)!r}), fict.__file__\n"
            "from fict import load_tree\n"
            "from fict.canonical import canonical_points\n"
            "from prompts.instructions import load_library\n"
            "from prompts.llm_prompts import load_prompts\n"
            "from pipelines.llm.prices import load_prices\n"
            "load_tree(); canonical_points(); load_library('fifa'); load_prompts(); load_prices()\n")
    check = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                           cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
