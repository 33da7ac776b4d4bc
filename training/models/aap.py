"""AAP, Anchoring Attention Prior (../shared/papers/003_*; no public code; facts in
../shared/references/training.md §1.4): a LISA-style grounding model whose LM's middle layer
is anchored to the frozen vision tower on real images, and whose anchoring error becomes a
dense prompt for the mask decoder.

    image -> frozen VisionTower: penultimate-layer patch features z_a (the truth anchor),
             which (as LLaVA's mm_vision_select_layer -2) also feed the LM via mlp2x_gelu
    prompt + answer -> causal LM (teacher forcing)
      middle layer k, image-patch positions: z_l
      last prompt position, last layer -> cls head -> real/fake logit (L_cls)
      state predicting [SEG] -> Linear-ReLU-Linear -> sparse prompt of the mask decoder
    image -> SAM-style encoder -> image embedding E_enc
    d_p = 1 - cos(P_phi(z_l^p), z_a^p) per patch
      L_arl = mean of d over the patches of REAL images only
      M_e = d detached, (grid x grid) -> bilinear to E_enc's size -> P_psi (small conv) -> E_e
    dense prompt = no-mask embedding + E_e;  mask decoder(E_enc, sparse, dense) -> mask (L_seg)

    L = cls * L_cls + seg * L_seg + arl * L_arl (+ text * LM cross-entropy; see AapLoss)

The error map is made for every image (a model cannot know at inference which one is
fake); for real ones it is what the anchoring drives towards zero.  It is detached: the
mask loss never pulls on the anchoring.  The SAM-style localisation parts are transformers'
`SamVisionEncoder`, `SamPromptEncoder` (its no-mask embedding and positional encoding) and
`SamMaskDecoder`, built small from config (or loaded from a SAM folder: `sam_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.config import AapConfig, AapLoss
from training.losses import mask_loss, text_loss
from training.models.components import (
    VisionTower,
    every_parameter_used,
    image_positions,
    language_model,
    mlp2x_gelu,
    seg_head,
    splice_visual,
)


@dataclass
class AapOutputs:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    cls_logits: torch.Tensor  # (B,)
    mask_logits: list[torch.Tensor]  # per sample (n_i, M, M)
    error_map: torch.Tensor  # (B, grid, grid), detached


def sam_config(cfg: AapConfig):
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(hidden_size=cfg.sam_hidden, output_channels=cfg.sam_hidden,
                             num_hidden_layers=cfg.sam_layers, num_attention_heads=cfg.sam_heads,
                             image_size=cfg.sam_image_size, patch_size=cfg.sam_patch_size, mlp_dim=4 * cfg.sam_hidden,
                             window_size=0, global_attn_indexes=[cfg.sam_layers - 1],
                             num_pos_feats=cfg.sam_hidden // 2)
    prompt = SamPromptEncoderConfig(hidden_size=cfg.sam_hidden, image_size=cfg.sam_image_size,
                                    patch_size=cfg.sam_patch_size, mask_input_channels=max(4, cfg.sam_hidden // 8))
    decoder = SamMaskDecoderConfig(hidden_size=cfg.sam_hidden, mlp_dim=4 * cfg.sam_hidden,
                                   num_hidden_layers=cfg.sam_decoder_layers, num_attention_heads=cfg.sam_heads,
                                   iou_head_hidden_dim=cfg.sam_hidden)
    return SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                     mask_decoder_config=decoder.to_dict())


class Aap(nn.Module):
    def __init__(self, cfg: AapConfig, vocab_size: int, token_ids: dict[str, int], loss: AapLoss | None = None):
        super().__init__()
        from transformers import SamModel

        self.cfg, self.loss_cfg, self.ids = cfg, loss or AapLoss(), dict(token_ids)
        self.vision = VisionTower(cfg)
        self.lm = language_model(cfg, vocab_size)
        hidden, v_dim, c = self.lm.config.hidden_size, cfg.vision_hidden, cfg.sam_hidden
        layers = self.lm.config.num_hidden_layers
        self.arl_layer = cfg.arl_layer if cfg.arl_layer >= 0 else layers // 2
        if not 1 <= self.arl_layer <= layers:
            raise ValueError(f"model.arl_layer {cfg.arl_layer}: the LM has layers 1..{layers}")
        self.projector = mlp2x_gelu(v_dim, hidden)
        self.anchor_projector = mlp2x_gelu(hidden, v_dim)  # P_phi
        self.cls_head = nn.Linear(hidden, 1)
        self.seg_head = seg_head(hidden, c)  # LISA's text_hidden_fcs
        self.error_projector = nn.Sequential(nn.Conv2d(1, c // 4, 3, padding=1), nn.GELU(),
                                             nn.Conv2d(c // 4, c, 1))  # P_psi
        sam = SamModel.from_pretrained(cfg.sam_checkpoint, local_files_only=True) if cfg.sam_checkpoint \
            else SamModel(sam_config(cfg))
        self.sam_encoder, self.prompt_encoder, self.mask_decoder = sam.vision_encoder, sam.prompt_encoder, \
            sam.mask_decoder
        self.sam_positional = sam.shared_image_embedding
        self.sam_embedding_size = sam.config.prompt_encoder_config.image_embedding_size
        if cfg.freeze_sam_encoder:
            self.sam_encoder.requires_grad_(False)
        self.prompt_encoder.requires_grad_(False)
        self.prompt_encoder.no_mask_embed.requires_grad_(True)

    def sam_positions(self) -> torch.Tensor:
        """(1, C, e, e): the positional encoding of the image embedding's grid (as SamModel's)."""
        e = self.sam_embedding_size
        weight = self.sam_positional.positional_embedding
        grid = (torch.arange(e, device=weight.device, dtype=weight.dtype) + 0.5) / e
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        return self.sam_positional(torch.stack([x, y], dim=-1)).permute(2, 0, 1)[None]

    def anchoring(self, lm_states: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """d = 1 - cos(P_phi(z_l), z_a) per patch: (B, N)."""
        return 1 - F.cosine_similarity(self.anchor_projector(lm_states), anchor.to(lm_states.dtype), dim=-1)

    def masks(self, sam_pixels: torch.Tensor, error: torch.Tensor, prompts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Mask logits (n_i, M, M) per sample from its [SEG] prompts (n_i, C) and error map."""
        image = self.sam_encoder(sam_pixels)[0]  # (B, C, e, e)
        e = image.shape[-1]
        error_up = F.interpolate(error[:, None], size=(e, e), mode="bilinear", align_corners=False)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1) + self.error_projector(error_up)
        positions = self.sam_positions().to(image.dtype)
        out = []
        for i, sparse in enumerate(prompts):
            if not len(sparse):
                out.append(image.new_zeros((0, self.cfg.mask_size, self.cfg.mask_size)))
                continue
            logits, _ = self.mask_decoder(image[i:i + 1], positions, sparse[None, :, None].to(image.dtype),
                                          dense[i:i + 1], multimask_output=False)
            out.append(F.interpolate(logits[0, :, 0][:, None], size=(self.cfg.mask_size,) * 2, mode="bilinear",
                                     align_corners=False)[:, 0])
        return out

    def forward(self, batch: dict, norms: dict[str, float] | None = None) -> AapOutputs:
        norms = {k: max(v, 1e-9) for k, v in (norms or counts(batch)).items()}
        pixels = batch["pixel_values"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_vision):
            anchor = self.vision.hidden_states(pixels)[-2][:, 1:]  # z_a: penultimate layer, patches
        ids = batch["input_ids"]
        embeds = splice_visual(self.lm.get_input_embeddings()(ids), ids, self.ids["<image>"], self.projector(anchor))
        lm_out = self.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_hidden_states=True)
        states = lm_out.hidden_states
        positions = image_positions(ids, self.ids["<image>"])  # (B, N)
        rows = torch.arange(len(ids), device=ids.device)[:, None]
        distance = self.anchoring(states[self.arl_layer][rows, positions], anchor)  # (B, N)
        real = batch["is_fake"] == 0
        arl = (distance * real[:, None]).sum() / (norms["real"] * distance.shape[1])
        last = states[-1]
        prompt_end = batch["prompt_end"].to(ids.device)  # the last prompt position of each sample
        cls_logits = self.cls_head(last[rows[:, 0], prompt_end]).squeeze(-1)
        cls = F.binary_cross_entropy_with_logits(cls_logits, batch["is_fake"].to(cls_logits.dtype),
                                                 reduction="sum") / norms["det"]
        text = text_loss(lm_out.logits, batch["labels"], norms["tokens"])
        grid = self.vision.grid
        error = distance.detach().reshape(len(ids), grid, grid)
        prompts = [self.seg_head(last[i, p.to(ids.device)]) for i, p in enumerate(batch["seg_positions"])]
        mask_logits = self.masks(batch["sam_pixel_values"], error, prompts)
        logits = [m for m in mask_logits if len(m)]
        targets = [t.to(pixels.device) for m, t in zip(mask_logits, batch["masks"], strict=True) if len(m)]
        for m, t in zip(mask_logits, batch["masks"], strict=True):
            if len(m) != len(t):
                raise ValueError(f"{len(m)} [SEG] positions for {len(t)} masks")
        c = self.loss_cfg
        seg = mask_loss(torch.cat(logits), torch.cat(targets), c.bce, c.dice, norms["masks"]) if logits \
            else last.sum() * 0.0
        loss = c.cls * cls + c.seg * seg + c.arl * arl + c.text * text
        return AapOutputs(loss=every_parameter_used(loss, self),
                          parts={"cls": cls, "seg": seg, "arl": arl, "text": text},
                          cls_logits=cls_logits, mask_logits=mask_logits, error_map=error)


def counts(batch: dict) -> dict[str, float]:
    return {"tokens": float((batch["labels"][:, 1:] != -100).sum()), "masks": float(sum(len(m) for m in batch["masks"])),
            "real": float((batch["is_fake"] == 0).sum()), "det": float(len(batch["labels"]))}


# --- the recipe -----------------------------------------------------------------------------------

TASKS = ("det", "i_loc")


def build(config, tokenizer) -> Aap:
    from training.data.tokenizer import IMAGE, SEG

    ids = {"<image>": tokenizer.convert_tokens_to_ids(IMAGE), "[SEG]": tokenizer.convert_tokens_to_ids(SEG)}
    return Aap(config.model, len(tokenizer), ids, config.loss)


class AapSamples(torch.utils.data.Dataset):
    """FiFa-Instruct's `det` and `i_loc` samples (`FifaSamples`), each with its image also at
    the localisation encoder's size (`sam_pixel_values`) and its last prompt position."""

    def __init__(self, config, tokenizer, spec, split: str):
        from training.data.fifa import FifaSamples

        m = config.model
        self.samples = FifaSamples(spec, split=split, image_size=m.image_size, mask_size=m.mask_size,
                                   tokenizer=tokenizer, num_image_tokens=(m.image_size // m.patch_size) ** 2,
                                   tasks=TASKS)
        self.sam_size = m.sam_image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        from training.data.text import prompt_ids

        item = self.samples[index]
        item["sam_pixel_values"] = F.interpolate(item["pixel_values"][None], size=(self.sam_size,) * 2,
                                                 mode="bilinear", align_corners=False)[0]
        item["prompt_end"] = len(prompt_ids(item["input_ids"], item["labels"])) - 1
        return item


def samples_for(config, tokenizer, spec, split: str, train: bool = True) -> AapSamples:
    return AapSamples(config, tokenizer, spec, split)


def collate_batch(examples, tokenizer) -> dict:
    from training.data.fifa import collate

    batch = collate(examples, tokenizer.pad_token_id)
    batch["sam_pixel_values"] = torch.stack([e["sam_pixel_values"] for e in examples])
    batch["prompt_end"] = torch.tensor([e["prompt_end"] for e in examples], dtype=torch.long)
    return batch


def texts(spec, split: str):
    from training.models.fifa_mllm import texts as fifa_texts

    return fifa_texts(spec, split)


@torch.no_grad()
def evaluate(model: Aap, tokenizer, config, data: str, split: str = "test", max_samples: int | None = None,
             batch_size: int = 8) -> dict:
    """Detection accuracy, F1 (fake positive), AUC and ACER of the cls head, once per distinct
    image; mask mIoU and cIoU of the i_loc masks (teacher forcing, as referring segmentation
    is scored); the mean anchoring distance on real and on fake images."""
    import numpy as np

    from training import metrics

    samples = samples_for(config, tokenizer, data, split, train=False)
    n = len(samples) if max_samples is None else min(len(samples), max_samples)
    scores, labels, seen, mask_pairs, distance = [], [], set(), [], {0: [], 1: []}
    for start in range(0, n, batch_size):
        examples = [samples[i] for i in range(start, min(n, start + batch_size))]
        out = model(collate_batch(examples, tokenizer))
        for i, example in enumerate(examples):
            if example["image_id"] not in seen:
                seen.add(example["image_id"])
                scores.append(float(torch.sigmoid(out.cls_logits[i])))
                labels.append(int(example["is_fake"]))
                distance[int(example["is_fake"])].append(float(out.error_map[i].mean()))
            for logits, gt in zip(out.mask_logits[i], example["masks"], strict=True):
                mask_pairs.append(((logits > 0).numpy(), gt.numpy().astype(bool)))
    detection = metrics.detection_metrics(np.asarray(scores), np.asarray(labels)) if scores else None
    predicted = [s >= 0.5 for s in scores]
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    f1 = 2 * tp / (sum(predicted) + sum(labels)) if (sum(predicted) + sum(labels)) else None
    return {"split": split, "samples": n, "images": len(scores), "detection": detection, "detection_f1": f1,
            "mask_miou": metrics.mean_iou(mask_pairs), "mask_ciou": metrics.cumulative_iou(mask_pairs),
            "masks": len(mask_pairs),
            "anchoring_distance": {"real": float(np.mean(distance[0])) if distance[0] else None,
                                   "fake": float(np.mean(distance[1])) if distance[1] else None}}


def _recipe():
    from training.models import Recipe

    return Recipe(build=build, dataset=samples_for, collate=collate_batch, counts=counts, texts=texts,
                  evaluate=evaluate, data="fifa_instruct")


RECIPE = _recipe()
