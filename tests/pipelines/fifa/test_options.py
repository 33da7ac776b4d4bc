"""Pipeline options: a YAML --config under the flags, and the checks of FifaSettings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipelines.common.options import expand_config, known_option_names
from pipelines.fifa.settings import FifaSettings
from pipelines.fifa_annotate import FifaOptions


@pytest.fixture(scope="module")
def known() -> set[str]:
    return known_option_names(FifaOptions)


def _config(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _fifa(argv: list[str]) -> FifaOptions:
    return PipelineOptions(argv).view_as(FifaOptions)


def test_known_names_cover_ours_and_beams(known):
    assert {"input", "output", "describer", "seed", "crop_size", "allow_absolute_paths", "config"} <= known
    assert {"runner", "direct_num_workers", "direct_running_mode"} <= known


def test_no_config_leaves_argv_alone(known):
    argv = ["--seed", "3", "--output", "x"]
    assert expand_config(argv, known) == argv


def test_config_values_become_flags_and_flags_win(tmp_path, known):
    path = _config(tmp_path, "seed: 5\ncrop_size: 256\nallow_absolute_paths: true\n"
                             "--describer: evidence\nmask-threshold: 20.5\noutput: from/file\n")
    argv = ["--config", str(path), "--seed", "7"]
    expanded = expand_config(argv, known)
    assert expanded[-len(argv):] == argv  # the file's options go in front
    options = _fifa(expanded)
    assert options.seed == 7  # the flag beats the file's 5
    assert options.crop_size == 256  # from the file only
    assert options.allow_absolute_paths is True
    assert options.describer == "evidence"
    assert options.mask_threshold == 20.5  # dashes in names are accepted
    assert options.output == "from/file"
    # without the flag, the file's seed holds; `--config=FILE` works as well
    assert _fifa(expand_config([f"--config={path}"], known)).seed == 5


def test_false_and_null_leave_defaults(tmp_path, known):
    path = _config(tmp_path, "allow_absolute_paths: false\ninput: null\nseed: 2\n")
    expanded = expand_config(["--config", str(path)], known)
    assert "--allow_absolute_paths" not in expanded
    assert not any(a.startswith("--input") for a in expanded)
    options = _fifa(expanded)
    assert options.allow_absolute_paths is False
    assert options.input is None
    assert options.seed == 2


def test_empty_config_adds_nothing(tmp_path, known):
    path = _config(tmp_path, "")
    assert expand_config(["--config", str(path), "--seed", "1"], known) == ["--config", str(path), "--seed", "1"]


def test_beam_options_are_accepted(tmp_path, known):
    path = _config(tmp_path, "runner: DirectRunner\ndirect_num_workers: 2\nseed: 4\n")
    options = PipelineOptions(expand_config(["--config", str(path)], known))
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 2
    assert options.view_as(FifaOptions).seed == 4


@pytest.mark.parametrize("text, message", [
    ("seed: 1\nno_such_option: 3\n", "unknown option 'no_such_option'"),
    ("seed:\n  value: 1\n", "must be a scalar, got dict"),
    ("seed: [1, 2]\n", "must be a scalar, got list"),
    ("config: other.yaml\n", "may not name another config"),
    ("- seed\n- 1\n", "must hold a mapping"),
])
def test_bad_config_files_exit_with_a_message(tmp_path, known, text, message):
    path = _config(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        expand_config(["--config", str(path)], known)
    assert message in str(info.value.code)
    assert str(path) in str(info.value.code)


def test_missing_config_file_exits(tmp_path, known):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SystemExit) as info:
        expand_config(["--config", str(missing)], known)
    assert "does not exist" in str(info.value.code) and str(missing) in str(info.value.code)


# --- FifaSettings ------------------------------------------------------------------------------


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "pairs" / "manifest.jsonl"
    path.parent.mkdir()
    rows = [{"real": f"{i}_real.png", "fake": f"{i}_fake.png"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _settings(manifest: Path, *flags: str) -> FifaSettings:
    return FifaSettings.from_options(_fifa(["--input", str(manifest), *flags]))


def test_settings_from_options(manifest, tmp_path):
    settings = _settings(manifest, "--output", str(tmp_path / "out"), "--seed", "9", "--crop_size", "256")
    assert settings.manifests == (str(manifest),)
    assert settings.expected_inputs == 3
    assert settings.input_pattern == str(manifest)
    assert (settings.seed, settings.crop_size, settings.output) == (9, 256, str(tmp_path / "out"))
    assert settings.analysis_config().face.crop_size == 256
    assert settings.sample_config().seed == 9


def test_unknown_backend_is_refused_with_the_choices(manifest, capsys):
    with pytest.raises(SystemExit):
        _settings(manifest, "--describer", "nope")
    err = capsys.readouterr().err
    assert "--describer" in err and "'evidence', 'gemini', 'openai', 'openai-compatible'" in err


@pytest.mark.parametrize("flags, message", [
    (["--rater", "openai-compatible", "--llm_model", "m"], "--llm_base_url"),
    (["--describer", "openai-compatible", "--llm_base_url", "http://x/v1"], "--llm_model"),
    (["--min_rating", "11"], "--min_rating"),
    (["--llm_concurrency", "0"], "--llm_concurrency"),
    (["--llm_batch", "submit"], "--llm_batch"),
    (["--max_rows_per_shard", "0"], "--max_rows_per_shard"),
    (["--test_fraction", "2"], "--test_fraction"),
    (["--test_fraction", "-0.1"], "--test_fraction"),
    (["--crop_size", "32"], "--crop_size"),
])
def test_settings_reject_bad_values(manifest, flags, message):
    with pytest.raises(SystemExit) as info:
        _settings(manifest, *flags)
    assert message in str(info.value.code)


def test_settings_reject_missing_input(tmp_path):
    with pytest.raises(SystemExit) as info:
        FifaSettings.from_options(_fifa(["--input", str(tmp_path / "none-*.jsonl")]))
    assert "--input" in str(info.value.code) and "no manifest matches" in str(info.value.code)


def test_options_hash_follows_what_shapes_samples(manifest, tmp_path):
    base = _settings(manifest, "--seed", "1", "--output", str(tmp_path / "a")).options_hash()
    assert _settings(manifest, "--seed", "1", "--output", str(tmp_path / "a")).options_hash() == base
    assert _settings(manifest, "--seed", "2", "--output", str(tmp_path / "a")).options_hash() != base
    assert _settings(manifest, "--seed", "1", "--output", str(tmp_path / "b")).options_hash() == base
    assert _settings(manifest, "--seed", "1", "--output", str(tmp_path / "a"),
                     "--max_rows_per_shard", "7").options_hash() == base
    assert _settings(manifest, "--seed", "1", "--output", str(tmp_path / "a"),
                     "--crop_size", "256").options_hash() != base
