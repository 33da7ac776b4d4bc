"""The models, one paper per file, and what the trainer needs of each (`Recipe`).

    fifa_mllm    FiFa-MLLM (000)  on FiFa-Instruct        training/models/fifa_mllm.py
    face_llava   Face-LLaVA (002) on FaceInstruct         training/models/face_llava.py
    aap          AAP (003)        on FiFa-Instruct        training/models/aap.py
    corit        CoRIT (001)      on FiFa-Instruct        training/models/corit.py

`train.py` and `evaluate.py` are the same for all four: they look the model's `Recipe` up by
`model.name` and call its parts.  Shared layers live in `components.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from training.config import MODELS


@dataclass(frozen=True)
class Recipe:
    """What the trainer needs of a model.

    * `build(config, tokenizer)`: the model (an `nn.Module` whose `forward(batch, norms)`
      returns an object with `loss` and `parts`, a dict of named loss terms);
    * `dataset(config, tokenizer, spec, split, train)`: the examples of one `--data` source;
    * `collate(examples, tokenizer)`: a batch;
    * `counts(batch)`: what each loss term divides its sum by (summed over DDP processes by
      the trainer, so N processes learn what one with their whole batch would);
    * `texts(spec, split)`: the texts a run's own tokenizer is built from; None: the model
      reads no text (no tokenizer);
    * `evaluate(model, tokenizer, config, data, split, max_samples, **options)`: the
      task metrics, as a dict for `eval.json`;
    * `data`: which dataset `--data` is (fifa_instruct or faceinstruct).
    """

    build: Callable[..., Any]
    dataset: Callable[..., Any]
    collate: Callable[..., dict]
    counts: Callable[[dict], dict[str, float]]
    texts: Callable[[str, str], Iterator[str]] | None
    evaluate: Callable[..., dict]
    data: str


def recipe(name: str) -> Recipe:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return importlib.import_module(f"training.models.{name}").RECIPE
