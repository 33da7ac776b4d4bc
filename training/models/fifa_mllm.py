"""FiFa-MLLM (Fake-in-Facext, ../shared/papers/000_*; facts in ../shared/references/fifa.md §5):
one face encoder feeds both the language model and the mask decoder.

    image -> VisionTower (a CLIP-style ViT; FaRL ViT-B/16 in the paper) -> patch features I
    I -> Projector -> I' replaces the <image> tokens of the prompt
    bbox -> BoxEncoder (the patch features inside the box, pooled) -> Projector -> replaces <bbox>
    prompt -> causal LM -> answer tokens (text loss)
    hidden state predicting [SEG] -> ConceptHead -> concept embedding E
    E + A (artifact embedding) -> mask embedding ·  pixel embeddings P -> regional artifact mask
    E + R (region embedding)   -> mask embedding ·  pixel embeddings P -> region mask (auxiliary)
    task queries T (det, cls) -> MultiTaskDecoder over I -> real/fake logit, category logits

The paper leaves the projector, box encoder and decoder shapes open; the choices made here,
each configurable in `training.config.ModelConfig`:

* Projector: LLaVA's `mlp2x_gelu` (Linear, GELU, Linear).
* BoxEncoder: the mean of the patch features whose centres lie in the box (at least the one
  patch under the box centre), then the Projector: an RoI pooling at patch resolution.
* ConceptHead: LISA's `Linear(h, h), ReLU, Linear(h, D)` on the last hidden state.
* Region and artifact embeddings R, A: learned D-vectors added to E ("dual semantic embeddings").
* PixelDecoder: the patch grid, 1x1 conv to D, two stride-2 transposed convs (4x the patch
  grid, Faceptor's MapInterpreter), bilinear to `mask_size`; mask logits are the dot product
  of a mask embedding (MLP of E+A or E+R) with each pixel embedding, over sqrt(D).
* MultiTaskDecoder: `nn.TransformerDecoder` (pre-norm) with two learned queries (det, cls)
  over the projected patch features, then Linear(D, 1) and Linear(D, categories).

A FaRL checkpoint is in OpenAI CLIP's format (`visual.transformer.resblocks.N.attn.in_proj_weight`,
...): `training.models.components.farl_to_hf` renames it for transformers' `CLIPVisionModel`,
whose keys in transformers 5 have no `vision_model.` prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from training.config import LossConfig, ModelConfig
from training.losses import counts, mask_loss, text_loss
from training.models.components import (
    VisionTower,
    every_parameter_used,
    language_model,
    mlp2x_gelu,
    seg_head,
    splice_visual,
)


@dataclass
class FifaOutputs:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]  # det, cls, text, mask (weighted sum = loss) and region, artifact
    det_logits: torch.Tensor  # (B,)
    cls_logits: torch.Tensor  # (B, categories)
    mask_logits: list[torch.Tensor]  # per sample (n_i, M, M): the artifact mask of each [SEG]
    region_logits: list[torch.Tensor]  # per sample (n_i, M, M)


class PixelDecoder(nn.Module):
    """Patch features -> pixel embeddings P (B, D, M, M)."""

    def __init__(self, in_dim: int, dim: int, grid: int, mask_size: int):
        super().__init__()
        self.grid, self.mask_size = grid, mask_size
        self.inp = nn.Conv2d(in_dim, dim, 1)
        self.up = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2), nn.GroupNorm(1, dim), nn.GELU(),
                                nn.ConvTranspose2d(dim, dim, 2, stride=2))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, _, c = patches.shape
        x = patches.transpose(1, 2).reshape(b, c, self.grid, self.grid)
        x = self.up(self.inp(x))
        return nn.functional.interpolate(x, size=(self.mask_size, self.mask_size), mode="bilinear",
                                         align_corners=False)


class FifaMLLM(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, token_ids: dict[str, int], loss: LossConfig | None = None):
        """`token_ids`: the ids of `<image>`, `<bbox>`, `[SEG]` and `pad` in the tokenizer."""
        super().__init__()
        self.cfg, self.loss_cfg, self.ids = cfg, loss or LossConfig(), dict(token_ids)
        self.encoder = VisionTower(cfg)
        self.lm = language_model(cfg, vocab_size)
        hidden, dim = self.lm.config.hidden_size, cfg.decoder_dim
        self.projector = mlp2x_gelu(cfg.vision_hidden, hidden)
        self.concept_head = seg_head(hidden, dim)
        self.region_embedding = nn.Parameter(torch.randn(dim) * cfg.init_std)
        self.artifact_embedding = nn.Parameter(torch.randn(dim) * cfg.init_std)
        self.mask_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.pixels = PixelDecoder(cfg.vision_hidden, dim, self.encoder.grid, cfg.mask_size)
        self.memory = nn.Linear(cfg.vision_hidden, dim)
        self.task_queries = nn.Parameter(torch.randn(2, dim) * cfg.init_std)  # det, cls
        layer = nn.TransformerDecoderLayer(dim, cfg.decoder_heads, 4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers)
        self.det_head = nn.Linear(dim, 1)
        self.cls_head = nn.Linear(dim, cfg.num_categories)

    # -- pieces --------------------------------------------------------------------------

    def box_features(self, patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The mean patch feature inside each box (B, 4) in image pixels: (B, H)."""
        g, size = self.encoder.grid, self.cfg.image_size
        centres = (torch.arange(g, device=patches.device, dtype=patches.dtype) + 0.5) * (size / g)
        x_in = (centres[None] >= boxes[:, 0:1]) & (centres[None] <= boxes[:, 2:3])  # (B, g) columns
        y_in = (centres[None] >= boxes[:, 1:2]) & (centres[None] <= boxes[:, 3:4])  # (B, g) rows
        inside = (y_in[:, :, None] & x_in[:, None, :]).flatten(1).to(patches.dtype)  # (B, g*g), row-major
        cx = ((boxes[:, 0] + boxes[:, 2]) / 2 / size * g).long().clamp(0, g - 1)
        cy = ((boxes[:, 1] + boxes[:, 3]) / 2 / size * g).long().clamp(0, g - 1)
        inside[torch.arange(len(boxes)), cy * g + cx] = 1.0  # at least the patch under the centre
        return (inside[:, :, None] * patches).sum(1) / inside.sum(1, keepdim=True)

    def embed(self, input_ids: torch.Tensor, patches: torch.Tensor, boxes: torch.Tensor,
              has_box: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the <image> run replaced by the projected patches and each
        <bbox> by the projected box feature."""
        embeds = splice_visual(self.lm.get_input_embeddings()(input_ids), input_ids, self.ids["<image>"],
                               self.projector(patches))
        box = input_ids == self.ids["<bbox>"]
        if box.any():
            feats = self.projector(self.box_features(patches, boxes)).to(embeds.dtype)
            rows = box.nonzero()[:, 0]
            if not bool(has_box[rows].all()):
                raise ValueError("a <bbox> token in a sample without a box")
            embeds = embeds.clone()
            embeds[box] = feats[rows]
        return embeds

    def masks_of(self, concept: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(artifact, region) mask logits (n, M, M) of n concept embeddings over one image's pixels."""
        scale = 1.0 / math.sqrt(concept.shape[-1])
        artifact = self.mask_mlp(concept + self.artifact_embedding)
        region = self.mask_mlp(concept + self.region_embedding)
        return (torch.einsum("nd,dhw->nhw", artifact, pixels) * scale,
                torch.einsum("nd,dhw->nhw", region, pixels) * scale)

    # -- forward -------------------------------------------------------------------------

    def forward(self, batch: dict, norms: dict[str, float] | None = None) -> FifaOutputs:
        """The outputs and losses of a batch.  `norms`: what each loss divides its sum by
        (`training.losses.counts`; the trainer passes the counts summed over DDP processes
        and divided by their number, so N processes learn what one with their whole batch
        would); default: this batch's own counts, i.e. plain means."""
        norms = {k: max(v, 1e-9) for k, v in (norms or counts(batch)).items()}
        patches = self.encoder(batch["pixel_values"])
        boxes = batch.get("bbox", torch.zeros(len(patches), 4, device=patches.device))
        has_box = batch.get("has_bbox", torch.zeros(len(patches), dtype=torch.bool, device=patches.device))
        embeds = self.embed(batch["input_ids"], patches, boxes, has_box)
        lm_out = self.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_hidden_states=True)
        hidden = lm_out.hidden_states[-1]
        text = text_loss(lm_out.logits, batch["labels"], norms["tokens"])
        pixels = self.pixels(patches)
        queries = self.task_queries[None].expand(len(patches), -1, -1)
        decoded = self.decoder(queries, self.memory(patches))
        det_logits = self.det_head(decoded[:, 0]).squeeze(-1)
        cls_logits = self.cls_head(decoded[:, 1])

        mask_logits, region_logits, artifact_terms, region_terms = [], [], [], []
        for i, positions in enumerate(batch["seg_positions"]):
            positions = positions.to(hidden.device)
            concept = self.concept_head(hidden[i, positions])
            artifact, region = self.masks_of(concept, pixels[i])
            mask_logits.append(artifact)
            region_logits.append(region)
            target = batch["masks"][i]
            if len(positions) != len(target):
                raise ValueError(f"sample {i}: {len(positions)} [SEG] positions, {len(target)} masks")
            if len(target):
                artifact_terms.append((artifact, target.to(artifact.device)))
            regions = (batch.get("region_masks") or [None] * len(patches))[i]
            if regions is not None and len(regions) == len(positions) and len(regions):
                region_terms.append((region, regions.to(region.device)))
        loss_cfg = self.loss_cfg
        artifact_loss = _masks_loss(artifact_terms, loss_cfg, hidden, norms["masks"])
        region_loss = _masks_loss(region_terms, loss_cfg, hidden, norms["regions"])
        det = nn.functional.binary_cross_entropy_with_logits(det_logits, batch["is_fake"].to(det_logits.dtype),
                                                             reduction="sum") / norms["det"]
        cls = nn.functional.cross_entropy(cls_logits, batch["category"], ignore_index=-1, reduction="sum") / norms["cls"]
        mask = artifact_loss + loss_cfg.region * region_loss
        parts = {"det": det, "cls": cls, "text": text, "mask": mask, "artifact_mask": artifact_loss,
                 "region_mask": region_loss}
        loss = loss_cfg.det * det + loss_cfg.cls * cls + loss_cfg.text * text + loss_cfg.mask * mask
        loss = every_parameter_used(loss, self)
        return FifaOutputs(loss=loss, parts=parts, det_logits=det_logits, cls_logits=cls_logits,
                           mask_logits=mask_logits, region_logits=region_logits)


def _masks_loss(terms: list[tuple[torch.Tensor, torch.Tensor]], cfg: LossConfig, anchor: torch.Tensor,
                count: float) -> torch.Tensor:
    """The LISA mask loss over every mask of the batch (each mask weighs the same)."""
    if not terms:
        return anchor.sum() * 0.0
    logits = torch.cat([t[0] for t in terms])
    targets = torch.cat([t[1] for t in terms])
    return mask_loss(logits, targets, cfg.bce, cfg.dice, count)


# --- the recipe: data, batches, evaluation -------------------------------------------------

EXPLANATION_SUFFIXES = ("_toe", "_age")


def build(config, tokenizer) -> FifaMLLM:
    from training.data.tokenizer import BBOX, IMAGE, SEG

    ids = {"<image>": tokenizer.convert_tokens_to_ids(IMAGE), "<bbox>": tokenizer.convert_tokens_to_ids(BBOX),
           "[SEG]": tokenizer.convert_tokens_to_ids(SEG), "pad": tokenizer.pad_token_id}
    return FifaMLLM(config.model, len(tokenizer), ids, config.loss)


def samples_for(config, tokenizer, spec, split: str, train: bool = True):
    from training.data.fifa import FifaSamples

    m = config.model
    return FifaSamples(spec, split=split, image_size=m.image_size, mask_size=m.mask_size, tokenizer=tokenizer,
                       num_image_tokens=(m.image_size // m.patch_size) ** 2)


def texts(spec, split: str):
    from training.data.fifa import ROW_COLUMNS, conversation_texts, open_shards, require_columns

    shards = open_shards(spec, split)
    require_columns(shards, ROW_COLUMNS, "FiFa-Instruct")
    return conversation_texts(shards)


def collate_batch(examples, tokenizer) -> dict:
    from training.data.fifa import collate

    return collate(examples, tokenizer.pad_token_id)


@torch.no_grad()
def generate(model: FifaMLLM, tokenizer, example: dict, max_new_tokens: int) -> str:
    """The model's greedy answer to the example's question."""
    from training.data.text import prompt_ids
    from training.models.components import generate_text

    prompt = prompt_ids(example["input_ids"], example["labels"])[None]
    patches = model.encoder(example["pixel_values"][None])
    has_box = torch.tensor([example.get("bbox") is not None])
    box = example["bbox"][None] if example.get("bbox") is not None else torch.zeros(1, 4)
    return generate_text(model.lm, tokenizer, model.embed(prompt, patches, box, has_box), max_new_tokens)


@torch.no_grad()
def evaluate(model: FifaMLLM, tokenizer, config, data: str, split: str = "test", max_samples: int | None = None,
             max_texts: int = 32, max_new_tokens: int = 64, batch_size: int = 8) -> dict:
    """FiFa-Bench's metrics (`training/metrics.py`):

    * detection: accuracy, AUC and ACER of the real/fake head, once per distinct image;
    * categories: accuracy of the category head on fake images;
    * masks: mIoU (and cIoU) of every [SEG] mask against the decoded ground truth, the masks
      decoded from the hidden states of the reference answer (teacher forcing, as referring
      segmentation is scored);
    * texts: the answers the model generates (greedy) for the explanation tasks (*_toe,
      *_age), scored by a METEOR-style overlap with the reference and by the precision and
      recall of the FICT concepts they name against the sample's flagged concepts."""
    import numpy as np

    from training import metrics
    from training.data.fifa import collate

    samples = samples_for(config, tokenizer, data, split, train=False)
    n = len(samples) if max_samples is None else min(len(samples), max_samples)
    scores, fakes, seen = [], [], set()
    predicted, target = [], []
    mask_pairs = []
    for start in range(0, n, batch_size):
        examples = [samples[i] for i in range(start, min(n, start + batch_size))]
        out = model(collate(examples, tokenizer.pad_token_id))
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
    answers = []
    for i in range(n):
        if len(answers) >= max_texts:
            break
        example = samples[i]
        if not example["task"].endswith(EXPLANATION_SUFFIXES) or example["negative"]:
            continue
        answer = generate(model, tokenizer, example, max_new_tokens)
        reference = example["conversations"][1]["value"]
        answers.append({"meteor": metrics.meteor(answer, [plain_text(reference)]),
                        **{f"concept_{k}": v for k, v in metrics.concept_mentions(answer, example["concepts"]).items()
                           if k in ("precision", "recall")}})
    return {
        "split": split, "samples": n,
        "detection": metrics.detection_metrics(np.asarray(scores), np.asarray(fakes)) if scores else None,
        "category_accuracy": metrics.category_accuracy(predicted, target) if target else None,
        "mask_miou": metrics.mean_iou(mask_pairs), "mask_ciou": metrics.cumulative_iou(mask_pairs),
        "masks": len(mask_pairs), "texts_generated": len(answers), **metrics.aggregate(answers),
    }


def plain_text(text: str) -> str:
    """An answer without its grounding markup, as a reference text."""
    for token in ("<p>", "</p>", "[SEG]"):
        text = text.replace(token, " ")
    return " ".join(text.split())


def _recipe():
    from training.models import Recipe

    return Recipe(build=build, dataset=samples_for, collate=collate_batch, counts=counts, texts=texts,
                  evaluate=evaluate, data="fifa_instruct")


RECIPE = _recipe()
