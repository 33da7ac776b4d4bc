"""CoRIT, Contrastive Regional Injection Transformer (../shared/papers/001_*; no public code;
facts in ../shared/references/training.md §1.7): a frozen CLIP-style ViT that carries K
region tokens (face, face boundary, background) through its layers, fed by region-pooled
features the contrastive gradient proxy picks out, and a linear real/fake head on the
fused middle- and last-layer tokens; trained with SAM on real crops, their self-blended
fakes (SBI) and the dataset's fakes.

Every input x comes with a **partner** x' that differs from it by a self-blend: a real crop
and its SBI fake are each other's partners (both are training examples), and a fake crop of
the dataset is paired with the SBI of itself (the partner then only serves the proxy).  The
SBI's blend mask gives the K=3 regions R_k (`training.data.sbi.region_masks`).  Both go
through the frozen layers side by side; at each layer l:

* **CGP** (contrastive gradient proxy, Eq. 18): g_i = z_i(x') - z_i(x), the feature
  discrepancy of patch token i.
* **RRM** (region refinement mask, Eq. 19-20): the anchor of region k is the normalised mean
  of g over R_k; a patch stays in the refined region when it lies in R_k and cos(g_i,
  anchor_k) > `coherence` (the paper's coherence coefficient; its value was lost in the
  seed: 0 by default, i.e. "points the same way as its region"); an emptied region falls
  back to R_k.  x and x' share the refined masks (the cosine does not change sign with the
  pair's order).
* **RSI** (regional signal injection, Eq. 22-23): the region tokens join the sequence (CLS,
  patches, regions) through the layer, then each takes the refined region's mean patch
  feature by residual addition.  They start (layer 0) as the mean patch embedding of R_k
  plus a learned region embedding (the seed's initialisation was lost).
* **HRI** (hierarchical representation integration, Eq. 24): the CLS and region tokens of
  layer `fusion_layer` (the middle one by default; the seed's value was lost) and of the
  last layer, each through the tower's final LayerNorm, concatenated -> Linear -> logit.

Only the region embeddings and the head learn; the backbone is frozen as in the paper (and
UniFD, its parent).  With `refine: false` the regions are pooled unrefined (RSI + HRI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.config import CoritConfig, CoritLoss
from training.models.components import VisionTower, every_parameter_used


@dataclass
class CoritOutputs:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits: torch.Tensor  # (M,)
    refined: torch.Tensor  # (M, K, P) the last layer's refined region masks


def refine_regions(x_patches: torch.Tensor, partner_patches: torch.Tensor, regions: torch.Tensor,
                   coherence: float) -> torch.Tensor:
    """RRM: (M, P, D) patch features of x and of its partner, (M, K, P) bool regions ->
    (M, K, P) bool refined regions (a region the rule would empty keeps all its patches)."""
    proxy = (partner_patches - x_patches).float()  # CGP, (M, P, D)
    member = regions.float()
    anchor = F.normalize(torch.einsum("mkp,mpd->mkd", member, proxy) / member.sum(-1, keepdim=True).clamp(min=1),
                         dim=-1)
    cosine = torch.einsum("mpd,mkd->mkp", F.normalize(proxy, dim=-1), anchor)
    refined = regions & (cosine > coherence)
    empty = ~refined.any(-1, keepdim=True)
    return torch.where(empty, regions, refined)


def pool(patches: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N, P, D) patches, (N, K, P) masks -> (N, K, D) masked means (Eq. 21)."""
    weights = masks.to(patches.dtype)
    return torch.einsum("nkp,npd->nkd", weights, patches) / (weights.sum(-1, keepdim=True) + eps)


class Corit(nn.Module):
    def __init__(self, cfg: CoritConfig, loss: CoritLoss | None = None):
        super().__init__()
        self.cfg, self.loss_cfg = cfg, loss or CoritLoss()
        self.vision = VisionTower(cfg)
        layers = cfg.vision_layers
        self.fusion_layer = cfg.fusion_layer if cfg.fusion_layer > 0 else max(1, layers // 2)
        if not 1 <= self.fusion_layer <= layers:
            raise ValueError(f"model.fusion_layer {cfg.fusion_layer}: the tower has layers 1..{layers}")
        width = cfg.vision_hidden
        self.region_embedding = nn.Parameter(torch.randn(cfg.num_regions, width) * cfg.init_std)
        features = 2 * (1 + cfg.num_regions) * width
        # MAE's linear probe: a BatchNorm without affine standardises the frozen features (at
        # inference a fixed affine map, so the head stays linear).
        self.probe_norm = nn.BatchNorm1d(features, affine=False) if cfg.probe_norm else nn.Identity()
        self.head = nn.Linear(features, 1)

    def features(self, pixels: torch.Tensor, partner: torch.Tensor, regions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, F) forensic representations of x (HRI) and the last layer's refined masks."""
        vm = self.vision.vit  # transformers 5: embeddings, pre_layrnorm, encoder, post_layernorm
        m = len(pixels)
        hidden = vm.pre_layrnorm(vm.embeddings(torch.cat([pixels, partner])))  # (2M, 1+P, D)
        n_tokens = hidden.shape[1]
        both = torch.cat([regions, regions])
        tokens = pool(hidden[:, 1:], both) + self.region_embedding
        refined = regions
        fused = None
        for depth, layer in enumerate(vm.encoder.layers, start=1):
            out = layer(torch.cat([hidden, tokens], dim=1), None)
            out = out[0] if isinstance(out, tuple) else out
            hidden, tokens = out[:, :n_tokens], out[:, n_tokens:]
            if self.cfg.refine:
                refined = refine_regions(hidden[:m, 1:].detach(), hidden[m:, 1:].detach(), regions,
                                         self.cfg.coherence)
            tokens = tokens + pool(hidden[:, 1:], torch.cat([refined, refined]))
            if depth == self.fusion_layer:
                fused = torch.cat([hidden[:m, :1], tokens[:m]], dim=1)
        last = torch.cat([hidden[:m, :1], tokens[:m]], dim=1)
        representation = vm.post_layernorm(torch.cat([fused, last], dim=1))
        return representation.flatten(1), refined

    def forward(self, batch: dict, norms: dict[str, float] | None = None) -> CoritOutputs:
        norms = norms or counts(batch)
        regions = batch["regions"].flatten(2)  # (M, K, P)
        representation, refined = self.features(batch["pixel_values"], batch["partner_values"], regions)
        logits = self.head(self.probe_norm(representation)).squeeze(-1)
        cls = F.binary_cross_entropy_with_logits(logits, batch["is_fake"].to(logits.dtype),
                                                 reduction="sum") / max(norms["det"], 1e-9)
        return CoritOutputs(loss=every_parameter_used(self.loss_cfg.cls * cls, self), parts={"cls": cls},
                            logits=logits, refined=refined)


def counts(batch: dict) -> dict[str, float]:
    return {"det": float(len(batch["is_fake"]))}


# --- data: crops, their self-blends and regions --------------------------------------------------


class CoritSamples(torch.utils.data.Dataset):
    """The crops of FiFa-Instruct rows that have a `det` sample, each with a self-blend.

    An item of a real crop gives two examples (the crop, as the blend's target, and its
    SBI fake, each the other's partner); an item of a fake crop gives one (the crop, its
    partner the SBI of itself).  The self-blend is made at `work_size` from the crop and
    its landmarks, then both images go to `image_size`.  `regions` (K, g, g) come from the
    blend mask.  Randomness: a fixed seed per item when `seed` is given (evaluation);
    otherwise numpy's global RNG, which the trainer seeds, `worker_init_fn` seeds apart per
    DataLoader worker, and checkpoints save."""

    COLUMNS = ("image_id", "image", "is_fake", "category", "method", "landmarks", "samples")

    def __init__(self, spec, split: str, image_size: int, patch_size: int, *, work_size: int = 256,
                 seed: int | None = None, sbi=None):
        from training.data.fifa import open_shards, require_columns

        dataset = open_shards(spec, split)
        require_columns(dataset, [c for c in self.COLUMNS if c != "landmarks"], "FiFa-Instruct")
        if "landmarks" not in dataset.column_names:
            raise ValueError(f"{spec}: the shards have no landmarks column (FiFa-Instruct made before it was "
                             "added); re-run the pipeline to train CoRIT")
        table = dataset.select_columns(list(self.COLUMNS)).with_format("arrow")[:]
        import pyarrow.compute as pc

        tasks = table.column("samples").to_pylist()
        keep = [i for i, samples in enumerate(tasks) if any(s["task"] == "det" for s in samples)]
        self.table = table.select([c for c in self.COLUMNS if c != "samples"]).take(keep)
        missing = pc.sum(pc.is_null(self.table.column("landmarks"))).as_py()
        if missing:
            raise ValueError(f"{spec}: {missing} rows have no landmarks")
        bad = [image_id for image_id, points in zip(self.table.column("image_id").to_pylist(),
                                                   self.table.column("landmarks").to_pylist(), strict=True)
               if np.asarray(points, dtype=np.float64).shape != (68, 2)
               or not np.isfinite(np.asarray(points, dtype=np.float64)).all()]
        if bad:
            raise ValueError(f"{spec}: landmarks that are not 68 finite (x, y) points on {', '.join(bad[:5])}"
                             f"{' and more' if len(bad) > 5 else ''}")
        self.image_size, self.grid, self.work_size, self.seed = image_size, image_size // patch_size, work_size, seed
        self.sbi = sbi

    def __len__(self) -> int:
        return self.table.num_rows

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng([self.seed, index])
        return np.random.default_rng(np.random.randint(0, 2**31, size=4))

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        import cv2

        from training.data.fifa import CLIP_MEAN, CLIP_STD

        small = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        array = (small.astype(np.float32) / 255.0 - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> dict:
        import io

        import cv2
        from PIL import Image

        from training.data.sbi import region_masks, self_blend

        row = {name: self.table.column(name)[index].as_py() for name in self.table.column_names}
        with Image.open(io.BytesIO(row["image"]["bytes"])) as opened:
            crop = np.asarray(opened.convert("RGB"))
        crop = cv2.resize(crop, (self.work_size, self.work_size), interpolation=cv2.INTER_AREA)
        points = np.asarray(row["landmarks"], dtype=np.float64) * self.work_size - 0.5
        blend = self_blend(crop, np.clip(points, -0.49, self.work_size - 0.51), self._rng(index), self.sbi)
        regions = torch.from_numpy(region_masks(blend.mask, self.grid))
        return {"real": self._tensor(blend.real), "blended": self._tensor(blend.fake), "regions": regions,
                "is_fake": bool(row["is_fake"]), "image_id": row["image_id"], "method": row["method"],
                "category": row["category"]}


def collate_items(items, tokenizer=None) -> dict:
    """Items -> examples (see `CoritSamples`): `pixel_values`, `partner_values` (M, 3, S, S),
    `regions` (M, K, g, g), `is_fake` (M,), `is_sbi` (M,), and per example `image_id`,
    `method`, `category` (an SBI fake's method is "sbi")."""
    pixels, partners, regions, fake, sbi, ids, methods, categories = [], [], [], [], [], [], [], []

    def add(x, partner, item, is_fake, is_sbi):
        pixels.append(x)
        partners.append(partner)
        regions.append(item["regions"])
        fake.append(is_fake)
        sbi.append(is_sbi)
        ids.append(item["image_id"] + ("/sbi" if is_sbi else ""))
        methods.append("sbi" if is_sbi else item["method"])
        categories.append("sbi" if is_sbi else item["category"])

    for item in items:
        if item["is_fake"]:
            add(item["real"], item["blended"], item, True, False)
        else:
            add(item["real"], item["blended"], item, False, False)
            add(item["blended"], item["real"], item, True, True)
    return {"pixel_values": torch.stack(pixels), "partner_values": torch.stack(partners),
            "regions": torch.stack(regions), "is_fake": torch.tensor(fake, dtype=torch.long),
            "is_sbi": torch.tensor(sbi), "image_id": ids, "method": methods, "category": categories}


# --- the recipe -----------------------------------------------------------------------------------


def build(config, tokenizer=None) -> Corit:
    return Corit(config.model, config.loss)


def samples_for(config, tokenizer, spec, split: str, train: bool = True) -> CoritSamples:
    m = config.model
    return CoritSamples(spec, split, m.image_size, m.patch_size, work_size=m.sbi_size,
                        seed=None if train else config.train.seed)


@torch.no_grad()
def evaluate(model: Corit, tokenizer, config, data: str, split: str = "test", max_samples: int | None = None,
             batch_size: int = 8, with_sbi: bool = False) -> dict:
    """Accuracy, AUC and ACER of the real/fake head (`metrics.detection_metrics`) over the
    split's crops, overall and per manipulation `method` and `category` (each group: its
    fakes with every real crop, so AUC is defined).  Each crop's self-blend partner is made
    with a fixed seed per crop.  `with_sbi` also scores the real crops' SBI fakes (method
    "sbi"); off by default: the dataset's own fakes are the test."""
    from training import metrics

    samples = samples_for(config, tokenizer, data, split, train=False)
    n = len(samples) if max_samples is None else min(len(samples), max_samples)
    scores, labels, methods, categories = [], [], [], []
    for start in range(0, n, batch_size):
        batch = collate_items([samples[i] for i in range(start, min(n, start + batch_size))])
        out = model(batch)
        keep = [i for i, s in enumerate(batch["is_sbi"].tolist()) if with_sbi or not s]
        scores += torch.sigmoid(out.logits[keep]).tolist()
        labels += batch["is_fake"][keep].tolist()
        methods += [batch["method"][i] for i in keep]
        categories += [batch["category"][i] for i in keep]
    scores_a, labels_a = np.asarray(scores), np.asarray(labels)

    def grouped(names: list[str]) -> dict:
        out = {}
        for name in sorted({g for g, y in zip(names, labels, strict=True) if y == 1}):
            pick = np.asarray([(y == 0) or g == name for g, y in zip(names, labels, strict=True)])
            out[name] = metrics.detection_metrics(scores_a[pick], labels_a[pick])
        return out

    return {"split": split, "samples": n, "images": len(scores),
            "overall": metrics.detection_metrics(scores_a, labels_a) if scores else None,
            "per_method": grouped(methods), "per_category": grouped(categories)}


def _recipe():
    from training.models import Recipe

    return Recipe(build=build, dataset=samples_for, collate=collate_items, counts=counts, texts=None,
                  evaluate=evaluate, data="fifa_instruct")


RECIPE = _recipe()
