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
class ModelConfig:
    """FiFa-MLLM's sizes (see `training/models/fifa_mllm.py` for what each part is)."""

    name: str = "fifa_mllm"
    # Face encoder: a CLIP-style ViT (FaRL ViT-B/16 in the paper).
    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 64
    vision_checkpoint: str | None = None  # a FaRL checkpoint (OpenAI-CLIP format) or a transformers folder
    freeze_vision: bool = False
    # Language model: any causal LM of transformers (a Llama-style one from config here).
    lm_checkpoint: str | None = None  # a local folder or Hub id; None: built from the sizes below
    lm_hidden: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    lm_intermediate: int = 128
    max_positions: int = 512
    lora_rank: int = 0  # 0: train the LM fully; > 0: LoRA (peft) on q_proj, v_proj
    lora_alpha: int = 16
    gradient_checkpointing: bool = False
    # Multi-task decoder and masks.
    decoder_dim: int = 32
    decoder_layers: int = 2
    decoder_heads: int = 4
    num_categories: int = 4  # schemas.fifa.CATEGORIES
    mask_size: int = 64  # masks are predicted (and compared) at this side
    init_std: float = 0.02


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


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
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
    config = RunConfig()
    for section, values in raw.items():
        for name, value in (values or {}).items():
            _set(config, section, name, value)
    return config


def _set(config: RunConfig, section: str, name: str, value: Any) -> None:
    if section not in {f.name for f in dataclasses.fields(RunConfig)}:
        raise ValueError(f"unknown config section {section!r} (model, loss, data, train)")
    part = getattr(config, section)
    fields = {f.name: f for f in dataclasses.fields(part)}
    if name not in fields:
        import difflib

        close = difflib.get_close_matches(name, fields, n=1)
        raise ValueError(f"unknown key {section}.{name}" + (f" (did you mean {section}.{close[0]}?)" if close else ""))
    setattr(part, name, _coerce(typing.get_type_hints(type(part))[name], value, f"{section}.{name}"))


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
