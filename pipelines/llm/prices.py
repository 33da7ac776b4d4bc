"""Token prices (`pipelines/llm/data/prices.yaml`) and what a run's tokens cost."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Price:
    model: str  # the table entry that matched
    input_per_m: float
    output_per_m: float


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    batch_discount: float
    models: dict[str, Price]

    def price(self, model: str | None) -> Price | None:
        """The longest entry `model` starts with; None for an unknown model."""
        if not model:
            return None
        name = model.split("/")[-1]  # "models/gemini-2.5-flash", "publishers/google/models/..."
        matches = [entry for entry in self.models if name == entry or name.startswith(entry + "-")]
        return self.models[max(matches, key=len)] if matches else None

    def cost(self, model: str | None, input_tokens: float, output_tokens: float,
             batch: bool = False) -> float | None:
        """US dollars, or None when the model is not in the table."""
        price = self.price(model)
        if price is None:
            return None
        dollars = (input_tokens * price.input_per_m + output_tokens * price.output_per_m) / 1e6
        return dollars * (self.batch_discount if batch else 1.0)


@cache
def load_prices(path: str | None = None) -> PriceTable:
    if path is None:
        text = resources.files("pipelines.llm").joinpath("data/prices.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    try:
        models = {name: Price(name, float(p["input"]), float(p["output"])) for name, p in data["models"].items()}
        return PriceTable(as_of=str(data.get("as_of", "")), batch_discount=float(data.get("batch_discount", 1.0)),
                          models=models)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"price table {path or 'bundled'}: each model needs input and output ({exc})") from None
