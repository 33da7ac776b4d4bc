"""Face-LLaVA (../shared/papers/002_*; code ihp-lab/Face-LLaVA, facts in
../shared/references/training.md §1.6): a LLaVA-style model that reads the face's 68
landmarks beside its pixels.

    frames (T per sample: 1 for an image, 8 uniformly sampled for a video)
      -> VisionTower, layer `vision_select_layer` (LLaVA's penultimate), CLS kept or not
      -> mlp2x_gelu projector -> visual tokens h_v (per frame: grid² [+1])
    landmarks (T, 68, 2) -> FRLP -> 9 region tokens per frame (LM width)
    h_v, region tokens -> FRGCA (per frame) -> visual tokens, spliced at the <image> tokens
    prompt -> causal LM -> answer (the LM's cross-entropy)

**FRLP** (face-region landmark projector): the 68 iBUG points, normalised to the crop, are
136 values; nine region slices (jaw 0:17, right brow 17:22, left brow 22:27, nose bridge
27:31, nostrils 31:36, right eye 36:42, left eye 42:48, outer lips 48:60, inner lips 60:68)
each go through their own `Linear(2 n, h)`, and a global `Linear(136, h)` of all points is
broadcast-added to the nine.

**FRGCA** (face-region guided cross-attention): queries are the visual tokens of a frame,
keys and values its nine region tokens.  The region-patch proximity mask is built from the
distances between each patch centre and each region centroid, both as (x = column, y = row)
in crop-normalised units (the public code transposes these axes; a test pins the
orientation).  It is added to the attention scores as the log of `softmax(-distance / τ)`
over the regions (τ = `proximity_temperature`), so attention is proportional to (proximity
prior) x exp(score); the public code adds the probabilities themselves, a bias of at most 1
that barely moves the scores.  A CLS token gets no bias.  The output is
`h_v + branch_scale * Linear(LayerNorm(h_v + attention))`, branch_scale 0.1 as the public code.

**Stages** (`model.stage`), as the paper: 1 trains the landmark modules (FRLP, FRGCA) alone;
2 trains everything but the vision tower (projector, landmark modules, LM).  Stage 2
starts from a stage-1 run with `train.init_from=RUN`.

Not copied from the public code (its pitfalls, ../shared/references/training.md §1.6): the
hard-coded 16 heads, the transposed distance axes, the debug prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from training.config import FaceLlavaConfig
from training.losses import text_loss
from training.models.components import (
    VisionTower,
    every_parameter_used,
    language_model,
    mlp2x_gelu,
    splice_visual,
)

# The nine face regions of the 68 iBUG points (Face-LLaVA's LandmarkRegionProjector order).
REGIONS: tuple[tuple[str, slice], ...] = (
    ("jaw", slice(0, 17)), ("right_brow", slice(17, 22)), ("left_brow", slice(22, 27)),
    ("nose_bridge", slice(27, 31)), ("nostrils", slice(31, 36)), ("right_eye", slice(36, 42)),
    ("left_eye", slice(42, 48)), ("outer_lips", slice(48, 60)), ("inner_lips", slice(60, 68)),
)


@dataclass
class FaceLlavaOutputs:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits: torch.Tensor


class LandmarkProjector(nn.Module):
    """FRLP: (N, 68, 2) landmarks -> (N, 9, dim) region tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.regions = nn.ModuleList(nn.Linear(2 * (s.stop - s.start), dim) for _, s in REGIONS)
        self.global_projection = nn.Linear(136, dim)

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        if landmarks.shape[-2:] != (68, 2):
            raise ValueError(f"landmarks of shape {tuple(landmarks.shape)}; FRLP takes (N, 68, 2)")
        parts = [proj(landmarks[:, s].flatten(1)) for proj, (_, s) in zip(self.regions, REGIONS, strict=True)]
        return torch.stack(parts, dim=1) + self.global_projection(landmarks.flatten(1))[:, None]


def region_centroids(landmarks: torch.Tensor) -> torch.Tensor:
    """(N, 68, 2) -> (N, 9, 2): the mean (x, y) of each region's points."""
    return torch.stack([landmarks[:, s].mean(1) for _, s in REGIONS], dim=1)


def patch_centres(grid: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(grid², 2) patch centres as (x = column, y = row), crop-normalised, in row-major
    patch order (the ViT's: patch k is row k // grid, column k % grid)."""
    centres = (torch.arange(grid, device=device, dtype=dtype) + 0.5) / grid
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=-1)


def proximity_bias(landmarks: torch.Tensor, grid: int, has_cls: bool, temperature: float) -> torch.Tensor:
    """(N, [1 +] grid², 9) additive attention bias: log softmax over the regions of
    -distance(patch centre, region centroid) / temperature; zero for a CLS row."""
    centres = patch_centres(grid, landmarks.device, landmarks.dtype)  # (P, 2)
    distance = torch.cdist(centres[None].expand(len(landmarks), -1, -1), region_centroids(landmarks))  # (N, P, 9)
    bias = torch.log_softmax(-distance / temperature, dim=-1)
    if has_cls:
        bias = torch.cat([bias.new_zeros(len(landmarks), 1, bias.shape[-1]), bias], dim=1)
    return bias


class LandmarkCrossAttention(nn.Module):
    """FRGCA over one frame's tokens: (N, Q, dim) visual tokens, (N, 9, dim) region tokens,
    (N, Q, 9) bias -> (N, Q, dim)."""

    def __init__(self, dim: int, heads: int, branch_scale: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"FRGCA: width {dim} is not a multiple of {heads} heads")
        self.heads, self.branch_scale = heads, branch_scale
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, visual: torch.Tensor, regions: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, q_len, dim = visual.shape
        h, d = self.heads, dim // self.heads

        def split(x):
            return x.reshape(n, -1, h, d).transpose(1, 2)  # (N, h, L, d)

        scores = split(self.q(visual)) @ split(self.k(regions)).transpose(-1, -2) / math.sqrt(d)  # (N, h, Q, 9)
        weights = torch.softmax(scores + bias[:, None].to(scores.dtype), dim=-1)
        attended = self.out((weights @ split(self.v(regions))).transpose(1, 2).reshape(n, q_len, dim))
        return visual + self.branch_scale * self.proj(self.norm(visual + attended))


class FaceLlava(nn.Module):
    def __init__(self, cfg: FaceLlavaConfig, vocab_size: int, image_id: int):
        super().__init__()
        self.cfg, self.image_id = cfg, image_id
        self.vision = VisionTower(cfg)
        self.vision.requires_grad_(False)  # both stages leave the vision tower as it is
        self.lm = language_model(cfg, vocab_size)
        hidden = self.lm.config.hidden_size
        self.projector = mlp2x_gelu(cfg.vision_hidden, hidden)
        self.landmark_projector = LandmarkProjector(hidden)
        self.cross_attention = LandmarkCrossAttention(hidden, cfg.landmark_heads, cfg.branch_scale)
        self.set_stage(cfg.stage)

    @property
    def tokens_per_frame(self) -> int:
        return self.vision.grid ** 2 + int(self.cfg.keep_cls)

    def landmark_modules(self) -> list[nn.Module]:
        return [self.landmark_projector, self.cross_attention]

    def set_stage(self, stage: int) -> None:
        """1: the landmark modules alone learn; 2: everything but the vision tower."""
        if stage not in (1, 2):
            raise ValueError(f"model.stage must be 1 or 2, not {stage}")
        self.requires_grad_(stage == 2)
        self.vision.requires_grad_(False)
        for module in self.landmark_modules():
            module.requires_grad_(True)

    def visual_tokens(self, pixel_values: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(ΣT, 3, S, S) frames and (ΣT, 68, 2) landmarks -> (ΣT, tokens_per_frame, h)."""
        states = self.vision.hidden_states(pixel_values)[self.cfg.vision_select_layer]
        if not self.cfg.keep_cls:
            states = states[:, 1:]
        visual = self.projector(states)
        regions = self.landmark_projector(landmarks.to(visual.dtype))
        bias = proximity_bias(landmarks.to(visual.dtype), self.vision.grid, self.cfg.keep_cls,
                              self.cfg.proximity_temperature)
        return self.cross_attention(visual, regions, bias)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, landmarks: torch.Tensor,
              frame_counts: torch.Tensor) -> torch.Tensor:
        """Token embeddings with each sample's image-token run replaced by its frames' tokens
        (frame after frame); samples of a batch may hold different frame counts."""
        tokens = self.visual_tokens(pixel_values, landmarks)
        embeds = self.lm.get_input_embeddings()(input_ids)
        per_sample = torch.split(tokens, frame_counts.tolist())
        rows = []
        for i, frames in enumerate(per_sample):
            rows.append(splice_visual(embeds[i:i + 1], input_ids[i:i + 1], self.image_id,
                                      frames.reshape(1, -1, frames.shape[-1])))
        return torch.cat(rows)

    def forward(self, batch: dict, norms: dict[str, float] | None = None) -> FaceLlavaOutputs:
        embeds = self.embed(batch["input_ids"], batch["pixel_values"], batch["landmarks"], batch["frame_counts"])
        out = self.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
        text = text_loss(out.logits, batch["labels"], (norms or counts(batch))["tokens"])
        return FaceLlavaOutputs(loss=every_parameter_used(text, self), parts={"text": text}, logits=out.logits)


def counts(batch: dict) -> dict[str, float]:
    return {"tokens": max(1.0, float((batch["labels"][:, 1:] != -100).sum()))}


# --- the recipe -----------------------------------------------------------------------------------


def build(config, tokenizer) -> FaceLlava:
    from training.data.tokenizer import IMAGE

    return FaceLlava(config.model, len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE))


def samples_for(config, tokenizer, spec, split: str, train: bool = True):
    from training.data.faceinstruct import FaceInstructSamples

    m = config.model
    return FaceInstructSamples(spec, split=split, image_size=m.image_size,
                               tokens_per_frame=(m.image_size // m.patch_size) ** 2 + int(m.keep_cls),
                               num_frames=m.num_frames, tokenizer=tokenizer)


def texts(spec, split: str):
    from training.data.faceinstruct import face_texts

    return face_texts(spec, split)


def collate_batch(examples, tokenizer) -> dict:
    from training.data.faceinstruct import collate_faces

    return collate_faces(examples, tokenizer.pad_token_id)


@torch.no_grad()
def evaluate(model: FaceLlava, tokenizer, config, data: str, split: str = "test", max_samples: int | None = None,
             max_new_tokens: int = 96) -> dict:
    """Per FaceInstruct task, from the greedy answers: the label each states
    (`metrics.parse_answer`, one documented rule per task) against the row's label
    (`metrics.face_metrics`: expression UAR and WAR, AU F1 per AU and mean, attribute mean
    accuracy, age MAE, deepfake accuracy); an answer that states no label counts as wrong."""
    from training import metrics
    from training.data.text import prompt_ids
    from training.models.components import generate_text

    samples = samples_for(config, tokenizer, data, split, train=False)
    n = len(samples) if max_samples is None else min(len(samples), max_samples)
    rows, examples = [], []
    for i in range(n):
        example = samples[i]
        prompt = prompt_ids(example["input_ids"], example["labels"])[None]
        embeds = model.embed(prompt, example["pixel_values"], example["landmarks"],
                             torch.tensor([len(example["pixel_values"])]))
        answer = generate_text(model.lm, tokenizer, embeds, max_new_tokens)
        rows.append({"task": example["task"], "reference": example["label"],
                     "prediction": metrics.parse_answer(example["task"], answer, example["label"])})
        if len(examples) < 8:
            examples.append({"sample_id": example["sample_id"], "task": example["task"], "answer": answer,
                             "reference": example["conversations"][1]["value"]})
    return {"split": split, "samples": n, "tasks": metrics.face_metrics(rows), "examples": examples}


def _recipe():
    from training.models import Recipe

    return Recipe(build=build, dataset=samples_for, collate=collate_batch, counts=counts, texts=texts,
                  evaluate=evaluate, data="faceinstruct")


RECIPE = _recipe()
