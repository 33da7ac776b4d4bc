"""FiFa-MLLM's losses: the text loss (the LM's cross-entropy on the answer tokens), the
real/fake detection loss, the category loss and the mask loss, weighted as the paper
sets them (Det 0.2, Cls 1.0, Text 0.5, Mask 2.0; `training.config.LossConfig`).

The mask loss has the LISA form (`dvlab-research/LISA:model/LISA.py`): per mask, the
pixel-mean sigmoid BCE and the Dice loss of the sigmoid, each summed over the masks and
divided by their number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per mask, 1 - (2 |p t| + eps) / (|p| + |t| + eps) of p = sigmoid(logits): (n,) for (n, H, W).
    (LISA divides p and t by a scale of 1000 first, which cancels in the ratio but for eps.)"""
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).to(p.dtype)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per mask, the mean over pixels of the sigmoid cross-entropy: (n,) for (n, H, W)."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").flatten(1).mean(1)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, bce: float = 1.0, dice: float = 1.0,
              count: float | None = None) -> torch.Tensor:
    """bce * BCE + dice * Dice summed over the masks and divided by `count` (default: their
    number, LISA's mean; under DDP the global count over the world size, so the processes'
    mean is the mean over every mask); 0 (with a gradient path) for none."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    total = bce * bce_loss(logits, targets).sum() + dice * dice_loss(logits, targets).sum()
    return total / (count if count is not None else logits.shape[0])


def text_loss(logits: torch.Tensor, labels: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """The next-token cross-entropy summed over the answer tokens (labels != -100) and
    divided by `count` (default: their number: the mean, as a causal LM's own loss)."""
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    total = torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                                              ignore_index=-100, reduction="sum")
    n = count if count is not None else max(1, int((targets != -100).sum()))
    return total / n


def counts(batch: dict) -> dict[str, float]:
    """What each loss averages over in a batch: answer tokens, [SEG] masks, region masks,
    labelled categories and samples (summed over DDP processes by the trainer)."""
    regions = sum(len(r) for r, p in zip(batch.get("region_masks") or [], batch["seg_positions"], strict=False)
                  if r is not None and len(r) == len(p))
    return {"tokens": float((batch["labels"][:, 1:] != -100).sum()), "masks": float(sum(len(m) for m in batch["masks"])),
            "regions": float(regions), "cls": float((batch["category"] >= 0).sum()), "det": float(len(batch["labels"]))}
