"""Training configs: dataclasses with named presets (litgpt's `Config.from_name`,
torchtune's YAML recipes), YAML files under `training/configs/<model>/<size>.yaml`, and
`key=value` overrides on the command line (`train.lr=1e-4`, `model.lm_layers=4`).

    config = load_config("training/configs/fifa_mllm/tiny.yaml", ["train.max_steps=50"])
    config = RunConfig.preset("fifa_mllm", "tiny")

The resolved config is saved with every run (`OUTPUT_DIR/config.yaml`) and every
checkpoint, so a run can be read back and resumed exactly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class VisionTowerConfig:
    """A CLIP-style ViT built from these sizes (`transformers.CLIPVisionConfig`), or loaded."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 64
    vision_checkpoint: str | None = None  # a FaRL/OpenAI-CLIP .pth or a transformers folder
    freeze_vision: bool = False
    init_std: float = 0.02


@dataclass
class LanguageModelConfig:
    """A causal LM of transformers: loaded from `lm_checkpoint`, else a Llama-style one built
    from these sizes."""

    lm_checkpoint: str | None = None  # a local folder or Hub id; None: built from the sizes below
    lm_hidden: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    lm_intermediate: int = 128
    max_positions: int = 512
    lora_rank: int = 0  # 0: train the LM fully; > 0: LoRA (peft) on q_proj, v_proj
    lora_alpha: int = 16
    gradient_checkpointing: bool = False


@dataclass
class ModelConfig(LanguageModelConfig, VisionTowerConfig):
    """FiFa-MLLM's sizes (see `training/models/fifa_mllm.py` for what each part is)."""

    name: str = "fifa_mllm"
    # Multi-task decoder and masks.
    decoder_dim: int = 32
    decoder_layers: int = 2
    decoder_heads: int = 4
    num_categories: int = 4  # schemas.fifa.CATEGORIES
    mask_size: int = 64  # masks are predicted (and compared) at this side


@dataclass
class FaceLlavaConfig(LanguageModelConfig, VisionTowerConfig):
    """Face-LLaVA (`training/models/face_llava.py`): a LLaVA base with the landmark projector
    (FRLP) and the landmark-guided cross-attention (FRGCA)."""

    name: str = "face_llava"
    image_size: int = 32
    patch_size: int = 8
    vision_select_layer: int = -2  # LLaVA's mm_vision_select_layer: the penultimate layer
    keep_cls: bool = False  # pass the CLS token of each frame to the LM too
    num_frames: int = 8  # a video's frames, sampled uniformly
    landmark_heads: int = 4  # FRGCA's attention heads
    branch_scale: float = 0.1  # FRGCA's residual scale
    proximity_temperature: float = 0.1  # FRGCA's mask: softmax(-distance / this), crop-normalised units
    stage: int = 2  # 1: landmark modules only; 2: everything but the vision tower


@dataclass
class AapConfig(LanguageModelConfig, VisionTowerConfig):
    """AAP (`training/models/aap.py`): a LISA-style grounding model with the anchoring loss and
    the error-map prompt."""

    name: str = "aap"
    image_size: int = 32
    patch_size: int = 8
    freeze_vision: bool = True  # the truth anchor comes from the frozen tower
    arl_layer: int = -1  # the LM layer whose image-patch states are anchored; -1: the middle one
    # The SAM-style localisation encoder and decoder (transformers' SAM classes, built small).
    sam_image_size: int = 64
    sam_patch_size: int = 8
    sam_hidden: int = 32
    sam_layers: int = 2
    sam_heads: int = 4
    sam_decoder_layers: int = 2
    freeze_sam_encoder: bool = False  # LISA freezes SAM's ViT-H; a random tiny one must learn
    sam_checkpoint: str | None = None  # a transformers SAM folder (its vision encoder and decoder)
    mask_size: int = 32


@dataclass
class CoritConfig(VisionTowerConfig):
    """CoRIT (`training/models/corit.py`): a frozen CLIP-style ViT with region tokens (RRM,
    RSI, HRI) and a linear real/fake head, trained with SAM on real, fake and self-blended crops."""

    name: str = "corit"
    image_size: int = 64
    patch_size: int = 8
    freeze_vision: bool = True
    num_regions: int = 3  # face, face boundary, background
    fusion_layer: int = -1  # HRI's intermediate layer (1-based); -1: the middle one
    coherence: float = 0.0  # RRM's threshold on cos(CGP of a token, its region's anchor)
    refine: bool = True  # RRM on; False: plain region pooling
    probe_norm: bool = False  # a BatchNorm without affine before the linear head (MAE's linear probe)
    sbi_size: int = 256  # the side at which a crop is self-blended, before resizing to image_size


@dataclass
class LossConfig:
    """The paper's weights (Det 0.2, Cls 1.0, Text 0.5, Mask 2.0); the mask loss is BCE + Dice
    in the LISA form, per mask and averaged over masks; `region` weighs the auxiliary
    region-mask loss inside Mask."""

    det: float = 0.2
    cls: float = 1.0
    text: float = 0.5
    mask: float = 2.0
    bce: float = 1.0
    dice: float = 1.0
    region: float = 1.0


@dataclass
class FaceLlavaLoss:
    """Face-LLaVA learns from its answers alone: the LM's cross-entropy."""

    text: float = 1.0


@dataclass
class AapLoss:
    """The paper's `1.0 cls + 1.0 seg + 3.0 arl`; seg is BCE + Dice in the LISA form.  `text`
    (the LM's cross-entropy on the answers, LISA's `ce` term) is what teaches the LM to say
    [SEG] at inference; the paper's objective lists the three terms only."""

    cls: float = 1.0
    seg: float = 1.0
    arl: float = 3.0
    text: float = 1.0
    bce: float = 1.0
    dice: float = 1.0


@dataclass
class CoritLoss:
    """The real/fake head's binary cross-entropy."""

    cls: float = 1.0


# The model and loss sections of each `model.name`.
MODELS: dict[str, tuple[type, type]] = {
    "fifa_mllm": (ModelConfig, LossConfig),
    "face_llava": (FaceLlavaConfig, FaceLlavaLoss),
    "aap": (AapConfig, AapLoss),
    "corit": (CoritConfig, CoritLoss),
}


@dataclass
class DataConfig:
    data: list[str] = field(default_factory=list)  # --data: shard folders, Parquet folders or Hub ids
    weights: list[float] = field(default_factory=list)  # sampling weights of the --data sources (default equal)
    split: str = "train"
    tokenizer: str | None = None  # a local tokenizer folder or Hub id; None: build one from the shards' text
    vocab_size: int = 2048  # of the tokenizer built from the shards
    max_length: int = 320
    num_workers: int = 0


@dataclass
class TrainConfig:
    output_dir: str = "runs/fifa_mllm"
    seed: int = 0
    max_steps: int = 200
    batch_size: int = 4  # per process and step; the global batch is batch_size * world * grad_accum
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # the cosine schedule ends at lr * this
    clip_grad: float = 1.0
    bf16: bool = True  # autocast on CUDA; ignored on CPU
    strategy: str = "ddp"  # ddp | fsdp (under torchrun)
    log_every: int = 1
    checkpoint_every: int = 20
    keep_checkpoints: int = 2
    optimizer: str = "adamw"  # adamw | sgd, each alone or inside SAM (sam: true)
    sam: bool = False  # sharpness-aware minimisation (training/optim.py): two passes per step
    sam_rho: float = 0.05
    momentum: float = 0.9  # of sgd
    init_from: str | None = None  # start from these weights (a run or checkpoint folder), e.g. a stage-1 run


OPTIMIZERS = ("adamw", "sgd")


@dataclass
class RunConfig:
    """A run's whole config.  `model` and `loss` are the sections of `model.name`
    (`MODELS`): `ModelConfig`/`LossConfig` for fifa_mllm, `FaceLlavaConfig`/`FaceLlavaLoss`, ..."""

    model: Any = field(default_factory=ModelConfig)
    loss: Any = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def preset(cls, model: str, size: str) -> RunConfig:
        path = CONFIG_DIR / model / f"{size}.yaml"
        if not path.is_file():
            known = sorted(f"{p.parent.name}/{p.stem}" for p in CONFIG_DIR.glob("*/*.yaml"))
            raise ValueError(f"no preset {model}/{size}; known: {', '.join(known)}")
        return load_config(path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))


CONFIG_DIR = Path(__file__).parent / "configs"


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """A YAML file (sections model, loss, data, train), then `section.key=value` overrides;
    an unknown section or key is a ValueError naming it."""
    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    config = from_dict(raw or {})
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ValueError(f"override {item!r}: expected section.key=value, e.g. train.lr=1e-4")
        section, name = key.split(".", 1)
        _set(config, section, name, yaml.safe_load(value))
    return config


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """A config from its sections; `model.name` (default fifa_mllm) picks the model and loss
    sections' dataclasses."""
    name = ((raw or {}).get("model") or {}).get("name", "fifa_mllm")
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; known: {', '.join(MODELS)}")
    model_cls, loss_cls = MODELS[name]
    config = RunConfig(model=model_cls(), loss=loss_cls())
    for section, values in raw.items():
        for name, value in (values or {}).items():
            _set(config, section, name, value)
    return config


def _set(config: RunConfig, section: str, name: str, value: Any) -> None:
    if section not in {f.name for f in dataclasses.fields(RunConfig)}:
        raise ValueError(f"unknown config section {section!r} (model, loss, data, train)")
    part = getattr(config, section)
    if section == "model" and name == "name" and value != part.name:
        raise ValueError(f"model.name is {part.name!r} in this config; a config of {value!r} starts from "
                         f"its own preset (training/configs/{value}/)")
    fields = {f.name: f for f in dataclasses.fields(part)}
    if name not in fields:
        import difflib

        close = difflib.get_close_matches(name, fields, n=1)
        raise ValueError(f"unknown key {section}.{name}" + (f" (did you mean {section}.{close[0]}?)" if close else ""))
    setattr(part, name, _coerce(typing.get_type_hints(type(part))[name], value, f"{section}.{name}"))
    if section == "train" and name == "optimizer" and part.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer: {part.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def _coerce(hint, value, where: str):
    """The value as the field's type: YAML's `1e-4` is a string to PyYAML, `[0.9, 0.95]` a list."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(kinds[0], value, where)
    if origin in (list, tuple):
        inner = typing.get_args(hint)[0]
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
        out = [_coerce(inner, v, where) for v in items]
        return tuple(out) if origin is tuple else out
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        return hint(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a {getattr(hint, '__name__', hint)}") from None
