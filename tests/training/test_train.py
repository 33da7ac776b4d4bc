"""FiFa-MLLM's recipe on this machine's CPU, on real shards of the bundled sample: the tiny
config learns (every loss part lower, the text loss halved, the mask mIoU well above its
start); a run stopped and resumed logs the losses of the uninterrupted run exactly; two
DDP processes (gloo) learn what one process with their whole batch learns; evaluate
writes every metric; a FaRL (OpenAI-CLIP format) checkpoint loads into the face encoder."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import REPO
from training.config import RunConfig, load_config
from training.train import train

TINY = str(REPO / "training" / "configs" / "fifa_mllm" / "tiny.yaml")
pytestmark = pytest.mark.slow  # minutes of CPU training; still run in CI (the tiny learning test is the point)


def metrics_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def learned(fifa_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("learn") / "run"
    train(["--config", TINY, "--data", str(fifa_shards), "--output_dir", str(out), "--max_steps", "200",
           "train.checkpoint_every=200"])
    return out


def test_the_tiny_config_learns(learned, fifa_shards):
    from training.evaluate import evaluate_model, load_checkpoint_model
    from training.train import model_for, seed_everything

    rows = metrics_of(learned)
    assert [r["step"] for r in rows] == list(range(1, 201))
    first, last = rows[:20], rows[-20:]
    for part in ("det", "cls", "text", "mask"):
        before, after = statistics.mean(r[part] for r in first), statistics.mean(r[part] for r in last)
        assert after < before, (part, before, after)
    assert statistics.mean(r["text"] for r in last) < 0.5 * statistics.mean(r["text"] for r in first)
    # The mask mIoU on the training slice: the trained model against its own initial weights
    # (the same seed, so the same start as the run's).
    _, config, tokenizer, model = load_checkpoint_model(learned)
    end = evaluate_model(model, tokenizer, config, str(fifa_shards), "train", max_texts=0)
    seed_everything(config.train.seed)
    start = evaluate_model(model_for(config, tokenizer), tokenizer, config, str(fifa_shards), "train", max_texts=0)
    assert end["masks"] == start["masks"] > 50
    assert end["mask_miou"] > 5 * start["mask_miou"] and end["mask_miou"] > 0.03, (start, end)


def test_evaluate_writes_every_metric(learned, fifa_shards, capsys):
    from training.evaluate import main

    main(["--checkpoint", str(learned), "--data", str(fifa_shards), "--split", "train", "--max_samples", "48",
          "--max_texts", "3"])
    result = json.loads((learned / "eval.json").read_text())
    for key in ("accuracy", "auc", "acer"):
        assert key in result["detection"]
    for key in ("category_accuracy", "mask_miou", "mask_ciou", "meteor", "concept_precision", "concept_recall"):
        assert key in result
    assert result["texts_generated"] == 3 and result["samples"] == 48
    assert 0.0 <= result["meteor"] <= 1.0
    assert json.loads(capsys.readouterr().out)["samples"] == 48


def test_a_resumed_run_logs_the_uninterrupted_runs_losses(fifa_shards, tmp_path):
    args = ["--config", TINY, "--data", str(fifa_shards), "train.checkpoint_every=4", "train.batch_size=2"]
    train([*args, "--output_dir", str(tmp_path / "whole"), "--max_steps", "10"])
    train([*args, "--output_dir", str(tmp_path / "parts"), "--max_steps", "6"])
    with (tmp_path / "parts" / "metrics.jsonl").open("a") as f:  # what an interrupted run logged past its checkpoint
        f.write(json.dumps({"step": 7, "loss": -1.0}) + "\n")
    (tmp_path / "parts" / "checkpoints" / "step-0000006").rename(tmp_path / "parts" / "checkpoints" / "gone")
    train([*args, "--output_dir", str(tmp_path / "parts"), "--max_steps", "10", "--resume"])  # from step 4
    whole, parts = metrics_of(tmp_path / "whole"), metrics_of(tmp_path / "parts")
    assert [r["step"] for r in parts] == list(range(1, 11))
    assert [r["loss"] for r in parts] == [r["loss"] for r in whole]
    assert [r["mask"] for r in parts] == [r["mask"] for r in whole]
    with pytest.raises(SystemExit, match="--resume"):
        train([*args, "--output_dir", str(tmp_path / "whole"), "--max_steps", "12"])


def test_two_ddp_processes_learn_what_one_process_with_their_batch_learns(fifa_shards, tmp_path):
    common = [str(REPO / "training" / "train.py"), "--config", TINY, "--data", str(fifa_shards), "--max_steps", "3",
              "train.checkpoint_every=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FACEXT_PROGRESS": "0"}
    one = subprocess.run([sys.executable, *common, "--output_dir", str(tmp_path / "one"), "train.batch_size=4"],
                         check=False, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, "--output_dir", str(tmp_path / "two"), "train.batch_size=2"],
                         check=False, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    for a, b in zip(metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two"), strict=True):
        for key in ("loss", "det", "cls", "text", "mask"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)


def openai_clip_state(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP vision state dict in OpenAI CLIP's format, as FaRL ships it
    (written here independently of the loader's renaming)."""
    out = {}
    layers = sorted({int(k.split(".")[2]) for k in hf_state if k.startswith("encoder.layers.")})
    out["visual.conv1.weight"] = hf_state["embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = hf_state["embeddings.class_embedding"]
    out["visual.positional_embedding"] = hf_state["embeddings.position_embedding.weight"]
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for p in ("weight", "bias"):
            out[f"visual.{theirs}.{p}"] = hf_state[f"{ours}.{p}"]
    for i in layers:
        hf, oa = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[oa + f"attn.in_proj_{p}"] = torch.cat([hf_state[hf + f"self_attn.{x}_proj.{p}"] for x in "qkv"])
            out[oa + f"attn.out_proj.{p}"] = hf_state[hf + f"self_attn.out_proj.{p}"]
            out[oa + f"ln_1.{p}"] = hf_state[hf + f"layer_norm1.{p}"]
            out[oa + f"ln_2.{p}"] = hf_state[hf + f"layer_norm2.{p}"]
            out[oa + f"mlp.c_fc.{p}"] = hf_state[hf + f"mlp.fc1.{p}"]
            out[oa + f"mlp.c_proj.{p}"] = hf_state[hf + f"mlp.fc2.{p}"]
    out["visual.proj"] = torch.randn(hf_state["post_layernorm.weight"].shape[0], 8)
    return out


def test_a_farl_checkpoint_loads_into_the_face_encoder(tmp_path):
    from training.models.components import VisionTower

    config = RunConfig().model
    torch.manual_seed(1)
    source = VisionTower(config)
    path = tmp_path / "farl.pth"
    torch.save({"state_dict": openai_clip_state(source.vit.state_dict())}, path)
    torch.manual_seed(2)
    loaded = VisionTower(config)
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    assert not torch.allclose(loaded(pixels), source(pixels))
    loaded.load(str(path))
    assert torch.allclose(loaded(pixels), source(pixels), atol=1e-6)


def test_config_overrides_and_their_errors(tmp_path):
    config = load_config(TINY, ["train.lr=1e-4", "model.lm_layers=3", "train.betas=0.9,0.99", "train.bf16=false"])
    assert (config.train.lr, config.model.lm_layers, config.train.betas, config.train.bf16) == \
        (1e-4, 3, (0.9, 0.99), False)
    assert RunConfig.preset("fifa_mllm", "full").model.vision_layers == 12
    for bad, message in (("train.lrr=1", "did you mean train.lr"), ("optim.lr=1", "unknown config section"),
                         ("train.lr=fast", "is not a float"), ("lr=1", "section.key=value")):
        with pytest.raises(ValueError, match=message):
            load_config(TINY, [bad])
    config.dump(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").to_dict() == config.to_dict()


def test_lora_trains_the_adapters_and_leaves_the_base_weights(fifa_shards, tmp_path):
    from safetensors.torch import load_file

    from training.evaluate import load_checkpoint_model
    from training.train import model_for, seed_everything

    train(["--config", TINY, "--data", str(fifa_shards), "--output_dir", str(tmp_path / "lora"), "--max_steps", "4",
           "model.lora_rank=4", "train.checkpoint_every=4", "train.batch_size=2"])
    folder, config, tokenizer, _ = load_checkpoint_model(tmp_path / "lora")
    trained = load_file(str(folder / "model.safetensors"))
    seed_everything(config.train.seed)
    start = model_for(config, tokenizer).state_dict()
    base = [k for k in trained if "q_proj.base_layer.weight" in k]
    adapters = [k for k in trained if "lora_B" in k]
    assert base and adapters
    assert all(torch.equal(trained[k], start[k]) for k in base)  # frozen
    assert any(not torch.equal(trained[k], start[k]) for k in adapters)  # learnt (lora_B starts at zero)
    embeddings = [k for k in trained if "modules_to_save" in k and "embed_tokens" in k]
    assert embeddings and any(not torch.equal(trained[k], start[k]) for k in embeddings)


def test_gradient_checkpointing_changes_no_loss(fifa_shards, tmp_path):
    runs = {}
    for flag in ("true", "false"):
        out = tmp_path / flag
        train(["--config", TINY, "--data", str(fifa_shards), "--output_dir", str(out), "--max_steps", "3",
               f"model.gradient_checkpointing={flag}", "train.batch_size=2", "train.checkpoint_every=3"])
        runs[flag] = [r[key] for r in metrics_of(out) for key in ("loss", "text", "mask", "det", "cls")]
    assert runs["true"] == pytest.approx(runs["false"], rel=1e-6)
