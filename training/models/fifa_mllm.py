"""FiFa-MLLM (Fake-in-Facext, ../shared/papers/000_*; facts in ../shared/references/fifa.md §5):
one face encoder feeds both the language model and the mask decoder.

    image -> FaceEncoder (a CLIP-style ViT; FaRL ViT-B/16 in the paper) -> patch features I
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
...): `farl_to_hf` renames it for transformers' `CLIPVisionModel`, whose keys in
transformers 5 have no `vision_model.` prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from training.config import LossConfig, ModelConfig
from training.losses import counts, mask_loss, text_loss


@dataclass
class FifaOutputs:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]  # det, cls, text, mask (weighted sum = loss) and region, artifact
    det_logits: torch.Tensor  # (B,)
    cls_logits: torch.Tensor  # (B, categories)
    mask_logits: list[torch.Tensor]  # per sample (n_i, M, M): the artifact mask of each [SEG]
    region_logits: list[torch.Tensor]  # per sample (n_i, M, M)


def vision_config(cfg: ModelConfig):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_intermediate,
                            num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                            image_size=cfg.image_size, patch_size=cfg.patch_size, initializer_range=cfg.init_std)


def farl_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenAI-CLIP-format visual state dict (FaRL's checkpoints: keys under `visual.`, or
    bare) as `CLIPVisionModel` keys.  The fused attention projection `in_proj` splits into
    q, k, v; `proj` (the CLIP head) is not part of the vision tower and is dropped."""
    out: dict[str, torch.Tensor] = {}
    strip = "visual."
    for key, value in state.items():
        if key.startswith(strip):
            key = key[len(strip):]
        elif any(key.startswith(p) for p in ("transformer.", "token_embedding", "text_projection", "logit_scale",
                                             "ln_final", "positional_embedding")) and "conv1.weight" in state:
            continue  # a whole CLIP model passed bare: its text tower is not ours
        if key == "conv1.weight":
            out["embeddings.patch_embedding.weight"] = value
        elif key == "class_embedding":
            out["embeddings.class_embedding"] = value
        elif key == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_pre."):
            out["pre_layrnorm." + key.split(".", 1)[1]] = value
        elif key.startswith("ln_post."):
            out["post_layernorm." + key.split(".", 1)[1]] = value
        elif key.startswith("transformer.resblocks."):
            _, _, index, *rest = key.split(".")
            name, prefix = ".".join(rest), f"encoder.layers.{index}."
            if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = name.rsplit("_", 1)[1]
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{part}.{kind}"] = chunk.clone()
            else:
                renamed = {"attn.out_proj.weight": "self_attn.out_proj.weight",
                           "attn.out_proj.bias": "self_attn.out_proj.bias",
                           "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
                           "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
                           "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
                           "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias"}.get(name)
                if renamed is None:
                    raise KeyError(f"unknown FaRL/CLIP key {key}")
                out[prefix + renamed] = value
        elif key == "proj":
            continue
        else:
            raise KeyError(f"unknown FaRL/CLIP key {key}")
    return out


class FaceEncoder(nn.Module):
    """A CLIP-style ViT: (B, 3, S, S) -> patch features (B, (S/P)^2, H) (CLS dropped)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from transformers import CLIPVisionModel

        self.vit = CLIPVisionModel(vision_config(cfg))
        self.grid = cfg.image_size // cfg.patch_size
        if cfg.vision_checkpoint:
            self.load(cfg.vision_checkpoint)

    def load(self, path: str) -> None:
        """A FaRL `.pth` (OpenAI-CLIP format, possibly under `state_dict`) or a transformers folder."""
        from pathlib import Path

        if Path(path).is_dir():
            from transformers import CLIPVisionModel

            self.vit = CLIPVisionModel.from_pretrained(path, local_files_only=True)
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        missing, unexpected = self.vit.load_state_dict(farl_to_hf(state), strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).last_hidden_state[:, 1:]


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
        self.encoder = FaceEncoder(cfg)
        self.lm = self._language_model(cfg, vocab_size)
        hidden, dim = self.lm.config.hidden_size, cfg.decoder_dim
        self.projector = nn.Sequential(nn.Linear(cfg.vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.concept_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))
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
        if cfg.freeze_vision:
            self.encoder.requires_grad_(False)

    @staticmethod
    def _language_model(cfg: ModelConfig, vocab_size: int):
        from transformers import AutoModelForCausalLM, LlamaConfig

        if cfg.lm_checkpoint:
            lm = AutoModelForCausalLM.from_pretrained(cfg.lm_checkpoint, local_files_only=True)
        else:
            lm = AutoModelForCausalLM.from_config(LlamaConfig(
                vocab_size=vocab_size, hidden_size=cfg.lm_hidden, intermediate_size=cfg.lm_intermediate,
                num_hidden_layers=cfg.lm_layers, num_attention_heads=cfg.lm_heads, num_key_value_heads=cfg.lm_heads,
                max_position_embeddings=cfg.max_positions, initializer_range=cfg.init_std, tie_word_embeddings=False))
        if lm.get_input_embeddings().num_embeddings != vocab_size:
            lm.resize_token_embeddings(vocab_size)
        if cfg.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
        if cfg.lora_rank:
            from peft import LoraConfig, get_peft_model

            # As LISA: LoRA on q and v, and the embeddings and head trained whole, since the
            # added tokens (<image>, [SEG], ...) start untrained in a pretrained LM.
            lm = get_peft_model(lm, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.05,
                                               target_modules=["q_proj", "v_proj"],
                                               modules_to_save=["embed_tokens", "lm_head"]))
        return lm

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
        embeds = self.lm.get_input_embeddings()(input_ids)
        image = input_ids == self.ids["<image>"]
        projected = self.projector(patches)
        counts = image.sum(1)
        if counts.any():
            if not bool((counts[counts > 0] == patches.shape[1]).all()):
                raise ValueError(f"a sample has {counts.tolist()} <image> tokens; the encoder gives {patches.shape[1]}")
            embeds = embeds.clone()
            embeds[image] = projected[counts > 0].reshape(-1, projected.shape[-1]).to(embeds.dtype)
        box = input_ids == self.ids["<bbox>"]
        if box.any():
            feats = self.projector(self.box_features(patches, boxes)).to(embeds.dtype)
            rows = box.nonzero()[:, 0]
            if not bool(has_box[rows].all()):
                raise ValueError("a <bbox> token in a sample without a box")
            embeds = embeds.clone() if not counts.any() else embeds
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
        # Every trainable parameter takes part in every step (with a zero gradient where a
        # batch has no mask, box or category), so each DDP process reduces the same
        # gradients whatever its batch holds.
        loss = loss + 0.0 * sum(p.reshape(-1)[0] for p in self.parameters() if p.requires_grad)
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
