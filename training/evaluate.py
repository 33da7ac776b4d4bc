"""Evaluate a checkpoint on its data's test split; writes `RUN/eval.json`.

    python training/evaluate.py --checkpoint runs/NAME --data OUT --split test [--max_samples N]

`--checkpoint` is a run folder (its newest checkpoint) or one checkpoint folder; the model
is the one its config names, and its `Recipe.evaluate` gives the task metrics:

* fifa_mllm: detection (accuracy, AUC, ACER), category accuracy, mask mIoU/cIoU, and the
  generated explanations' METEOR and concept precision/recall (FiFa-Bench);
* face_llava: per FaceInstruct task, from the generated answers: expression UAR and WAR, AU
  F1 per AU and mean, attribute mean accuracy, age MAE, deepfake accuracy;
* aap: detection accuracy and F1 of its real/fake head, mask mIoU (teacher forcing);
* corit: accuracy, AUC and ACER overall, per manipulation method and per category.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from training.config import RunConfig, load_config
from training.data.tokenizer import load_tokenizer
from training.models import recipe
from training.train import checkpoint_folder, load_weights_file, model_for


def load_checkpoint_model(path: str | Path) -> tuple[Path, RunConfig, Any, torch.nn.Module]:
    """(the checkpoint folder, its config, tokenizer and model) of a run folder or checkpoint folder."""
    folder = checkpoint_folder(path)
    config = load_config(folder / "config.yaml")
    tokenizer = load_tokenizer(str(folder / "tokenizer")) if (folder / "tokenizer").is_dir() else None
    model = model_for(config, tokenizer)
    load_weights_file(model, folder / "model.safetensors")
    model.eval()
    return folder, config, tokenizer, model


@torch.no_grad()
def evaluate(checkpoint: str | Path, data: str, split: str = "test", max_samples: int | None = None,
             **options) -> dict[str, Any]:
    """Every metric of a checkpoint on a split; written to the run's `eval.json`."""
    folder, config, tokenizer, model = load_checkpoint_model(checkpoint)
    result = {"checkpoint": str(folder), "data": str(data), "model": config.model.name,
              **evaluate_model(model, tokenizer, config, data, split, max_samples, **options)}
    run_folder = folder.parent.parent if folder.parent.name == "checkpoints" else folder
    (run_folder / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@torch.no_grad()
def evaluate_model(model, tokenizer, config: RunConfig, data: str, split: str = "test",
                   max_samples: int | None = None, **options) -> dict[str, Any]:
    """The task metrics of a model in memory (its `Recipe.evaluate`)."""
    model.eval()
    return recipe(config.model.name).evaluate(model, tokenizer, config, data, split, max_samples, **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, help="a run folder (its newest checkpoint) or a checkpoint")
    parser.add_argument("--data", required=True, help="a pipeline output folder, a Hub Parquet export or a Hub id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--max_texts", type=int, default=None,
                        help="fifa_mllm: explanation samples answered by generation (default 32)")
    args = parser.parse_args(argv)
    options = {} if args.max_texts is None else {"max_texts": args.max_texts}
    if options:
        name = load_config(checkpoint_folder(args.checkpoint) / "config.yaml").model.name
        if name != "fifa_mllm":
            parser.error(f"--max_texts applies to fifa_mllm; this checkpoint is {name}")
    result = evaluate(args.checkpoint, args.data, args.split, args.max_samples, **options)
    if not result["samples"]:
        import sys

        print(f"evaluate.py: the {args.split!r} split of {args.data} holds no samples; every metric is null",
              file=sys.stderr)
    print(json.dumps({k: v for k, v in result.items() if k not in ("checkpoint", "data")}, indent=1))


if __name__ == "__main__":
    main()
