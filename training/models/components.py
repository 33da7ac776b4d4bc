"""Parts the models share: the CLIP-style vision tower (and FaRL's checkpoint format), the
causal LM (built small from config or loaded, LoRA optional), LLaVA's `mlp2x_gelu`
projector, LISA's [SEG] head, and the splice of visual features into the token embeddings.

Every part is built from a config dataclass (`training.config`), so the tests build tiny
random-init versions and real runs point `vision_checkpoint` / `lm_checkpoint` at weights
on disk (nothing is downloaded at run time).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.config import LanguageModelConfig, VisionTowerConfig


def vision_config(cfg: VisionTowerConfig):
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


class VisionTower(nn.Module):
    """A CLIP-style ViT: (B, 3, S, S) -> patch features (B, (S/P)^2, H) of the last layer, CLS
    dropped (`forward`), or the hidden states of any layer (`hidden_states`)."""

    def __init__(self, cfg: VisionTowerConfig):
        super().__init__()
        from transformers import CLIPVisionModel

        self.vit = CLIPVisionModel(vision_config(cfg))
        self.grid = cfg.image_size // cfg.patch_size
        if cfg.vision_checkpoint:
            self.load(cfg.vision_checkpoint)
        if cfg.freeze_vision:
            self.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.vit.config.hidden_size

    def load(self, path: str) -> None:
        """A FaRL `.pth` (OpenAI-CLIP format, possibly under `state_dict`) or a transformers folder."""
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

    def hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The embeddings' output then each layer's: (layers + 1) x (B, 1 + grid², H), CLS first."""
        return self.vit(pixel_values=pixel_values, output_hidden_states=True).hidden_states

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).last_hidden_state[:, 1:]


def language_model(cfg: LanguageModelConfig, vocab_size: int, *, lora_modules_to_save: tuple[str, ...] = (
        "embed_tokens", "lm_head")):
    """The causal LM: `cfg.lm_checkpoint` (a local folder), else a Llama-style one from the
    sizes; embeddings grown to `vocab_size`; gradient checkpointing and LoRA as configured.
    With LoRA the embeddings and head are trained whole (`lora_modules_to_save`), as LISA
    does, since the added tokens (<image>, [SEG], ...) start untrained in a pretrained LM."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    if cfg.lm_checkpoint:
        lm = AutoModelForCausalLM.from_pretrained(cfg.lm_checkpoint, local_files_only=True)
    else:
        lm = AutoModelForCausalLM.from_config(LlamaConfig(
            vocab_size=vocab_size, hidden_size=cfg.lm_hidden, intermediate_size=cfg.lm_intermediate,
            num_hidden_layers=cfg.lm_layers, num_attention_heads=cfg.lm_heads, num_key_value_heads=cfg.lm_heads,
            max_position_embeddings=cfg.max_positions, initializer_range=getattr(cfg, "init_std", 0.02),
            tie_word_embeddings=False))
    if lm.get_input_embeddings().num_embeddings != vocab_size:
        lm.resize_token_embeddings(vocab_size)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.05,
                                           target_modules=["q_proj", "v_proj"],
                                           modules_to_save=list(lora_modules_to_save)))
    return lm


def mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Sequential:
    """LLaVA-1.5's projector (`mm_projector_type mlp2x_gelu`): Linear, GELU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def seg_head(hidden: int, out_dim: int) -> nn.Sequential:
    """LISA's `text_hidden_fcs`: the hidden state that predicts [SEG] -> Linear, ReLU, Linear."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def splice_visual(embeds: torch.Tensor, input_ids: torch.Tensor, image_id: int,
                  features: torch.Tensor) -> torch.Tensor:
    """Token embeddings (B, L, H) with each sample's run of `image_id` tokens replaced by its
    visual features (B, N, H), in order; a sample without the token keeps its text (its
    features are unused).  A run whose length is not N is a ValueError: the tokens and the
    encoder disagree."""
    image = input_ids == image_id
    counts = image.sum(1)
    if not counts.any():
        return embeds
    if not bool((counts[counts > 0] == features.shape[1]).all()):
        raise ValueError(f"a sample has {counts.tolist()} image tokens; the vision side gives {features.shape[1]}")
    embeds = embeds.clone()
    embeds[image] = features[counts > 0].reshape(-1, features.shape[-1]).to(embeds.dtype)
    return embeds


def image_positions(input_ids: torch.Tensor, image_id: int) -> torch.Tensor:
    """(B, N) positions of each sample's image tokens (every sample must hold the same number)."""
    image = input_ids == image_id
    counts = image.sum(1)
    if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
        raise ValueError(f"image token counts {counts.tolist()}: every sample needs the same non-zero number")
    return image.nonzero()[:, 1].reshape(len(input_ids), -1)


def every_parameter_used(loss: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """`loss` plus zero times one element of every trainable parameter, so that every one
    takes part in every step (a zero gradient where a batch has no mask, box or real image)
    and each DDP process reduces the same gradients whatever its batch holds."""
    return loss + 0.0 * sum(p.reshape(-1)[0] for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def generate_text(lm, tokenizer, embeds: torch.Tensor, max_new_tokens: int) -> str:
    """The LM's greedy answer to one prompt given as embeddings (1, L, H), decoded without
    special tokens."""
    out = lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                                                       device=embeds.device),
                      max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()
