"""Evaluate a checkpoint on FiFa-Instruct shards; writes `RUN/eval.json`.

    python training/evaluate.py --checkpoint runs/NAME --data OUT --split test [--max_samples N]

`--checkpoint` is a run folder (its newest checkpoint) or one checkpoint folder.  FiFa-Bench's
metrics (`training/metrics.py`):

* detection: accuracy, AUC and ACER of the real/fake head, once per distinct image;
* categories: accuracy of the category head on fake images;
* masks: mIoU (and cIoU) of every [SEG] mask against the decoded ground truth, the masks
  decoded from the hidden states of the reference answer (teacher forcing, as referring
  segmentation is scored);
* texts: the answers the model generates (greedy) for the explanation tasks (*_toe, *_age),
  scored by a METEOR-style overlap with the reference and by the precision and recall of
  the FICT concepts they name against the sample's flagged concepts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import metrics
from training.config import RunConfig, load_config
from training.data.fifa import IGNORE_INDEX, FifaSamples, collate
from training.data.tokenizer import load_tokenizer
from training.train import latest_checkpoint, model_for

EXPLANATION_SUFFIXES = ("_toe", "_age")


def load_checkpoint_model(path: str | Path) -> tuple[Path, RunConfig, Any, torch.nn.Module]:
    """(the checkpoint folder, its config, tokenizer and model) of a run folder or checkpoint folder."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / "model.safetensors").is_file():
        found = latest_checkpoint(folder)
        if found is None:
            raise SystemExit(f"evaluate.py: no checkpoint in {folder}")
        folder = found
    config = load_config(folder / "config.yaml")
    tokenizer = load_tokenizer(str(folder / "tokenizer"))
    model = model_for(config, tokenizer)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.eval()
    return folder, config, tokenizer, model


def _prompt_ids(input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The tokens before the first answer token."""
    answer = (labels != IGNORE_INDEX).nonzero()
    return input_ids[: int(answer[0]) if len(answer) else len(input_ids)]


@torch.no_grad()
def generate(model, tokenizer, example: dict, max_new_tokens: int) -> str:
    """The model's greedy answer to the example's question."""
    prompt = _prompt_ids(example["input_ids"], example["labels"])[None]
    patches = model.encoder(example["pixel_values"][None])
    has_box = torch.tensor([example.get("bbox") is not None])
    box = example["bbox"][None] if example.get("bbox") is not None else torch.zeros(1, 4)
    embeds = model.embed(prompt, patches, box, has_box)
    out = model.lm.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(prompt),
                            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


@torch.no_grad()
def evaluate(checkpoint: str | Path, data: str, split: str = "test", max_samples: int | None = None,
             max_texts: int = 32, max_new_tokens: int = 64, batch_size: int = 8) -> dict[str, Any]:
    """Every metric of a checkpoint on a split; written to the run's `eval.json`."""
    folder, config, tokenizer, model = load_checkpoint_model(checkpoint)
    result = {"checkpoint": str(folder), "data": str(data),
              **evaluate_model(model, tokenizer, config, data, split, max_samples, max_texts, max_new_tokens,
                               batch_size)}
    run_folder = folder.parent.parent if folder.parent.name == "checkpoints" else folder
    (run_folder / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@torch.no_grad()
def evaluate_model(model, tokenizer, config: RunConfig, data: str, split: str = "test",
                   max_samples: int | None = None, max_texts: int = 32, max_new_tokens: int = 64,
                   batch_size: int = 8) -> dict[str, Any]:
    """The metrics of a model in memory (see the module)."""
    model.eval()
    m = config.model
    samples = FifaSamples(data, split=split, image_size=m.image_size, mask_size=m.mask_size, tokenizer=tokenizer,
                          num_image_tokens=(m.image_size // m.patch_size) ** 2)
    n = len(samples) if max_samples is None else min(len(samples), max_samples)
    scores, fakes, seen = [], [], set()
    predicted, target = [], []
    mask_pairs = []
    for start in range(0, n, batch_size):
        examples = [samples[i] for i in range(start, min(n, start + batch_size))]
        batch = collate(examples, tokenizer.pad_token_id)
        out = model(batch)
        for i, example in enumerate(examples):
            if example["image_id"] not in seen:  # one detection per distinct image
                seen.add(example["image_id"])
                scores.append(float(torch.sigmoid(out.det_logits[i])))
                fakes.append(int(example["is_fake"]))
                if example["category"] >= 0:
                    predicted.append(int(out.cls_logits[i].argmax()))
                    target.append(int(example["category"]))
            for logits, gt in zip(out.mask_logits[i], example["masks"], strict=True):
                mask_pairs.append(((logits > 0).numpy(), gt.numpy().astype(bool)))
    texts = []
    for i in range(n):
        if len(texts) >= max_texts:
            break
        example = samples[i]
        if not example["task"].endswith(EXPLANATION_SUFFIXES) or example["negative"]:
            continue
        answer = generate(model, tokenizer, example, max_new_tokens)
        reference = example["conversations"][1]["value"]
        texts.append({"meteor": metrics.meteor(answer, [_plain(reference)]),
                      **{f"concept_{k}": v for k, v in metrics.concept_mentions(answer, example["concepts"]).items()
                         if k in ("precision", "recall")}})
    return {
        "split": split, "samples": n,
        "detection": metrics.detection_metrics(np.asarray(scores), np.asarray(fakes)) if scores else None,
        "category_accuracy": metrics.category_accuracy(predicted, target) if target else None,
        "mask_miou": metrics.mean_iou(mask_pairs), "mask_ciou": metrics.cumulative_iou(mask_pairs),
        "masks": len(mask_pairs), "texts_generated": len(texts), **metrics.aggregate(texts),
    }


def _plain(text: str) -> str:
    """An answer without its grounding markup, as a reference text."""
    for token in ("<p>", "</p>", "[SEG]"):
        text = text.replace(token, " ")
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, help="a run folder (its newest checkpoint) or a checkpoint")
    parser.add_argument("--data", required=True, help="a pipeline output folder, a Hub Parquet export or a Hub id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--max_texts", type=int, default=32, help="explanation samples answered by generation")
    args = parser.parse_args(argv)
    result = evaluate(args.checkpoint, args.data, args.split, args.max_samples, args.max_texts)
    if not result["samples"]:
        import sys

        print(f"evaluate.py: the {args.split!r} split of {args.data} holds no samples; every metric is null",
              file=sys.stderr)
    print(json.dumps({k: v for k, v in result.items() if k not in ("checkpoint", "data")}, indent=1))


if __name__ == "__main__":
    main()
