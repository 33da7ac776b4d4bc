"""Hugging Face `Features` (and so the Arrow schema) derived from pydantic models.

A field becomes an `Image` column when its `json_schema_extra` is `HF_IMAGE`; its value
is the encoded image bytes.  Everything else follows the type annotation: str, int,
float, bool, bytes, optional X, list[X] and nested models.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

HF_IMAGE = {"hf_feature": "image"}

_SCALARS = {str: "string", int: "int64", float: "float64", bool: "bool", bytes: "binary"}


def hf_features(model: type[BaseModel]):
    """The `datasets.Features` of a pydantic model, keyed by field alias."""
    from datasets import Features

    return Features(_model_features(model))


def _model_features(model: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("hf_feature") == "image":
            from datasets import Image

            out[key] = Image()
        else:
            out[key] = _feature(field.annotation, f"{model.__name__}.{name}")
    return out


def _feature(annotation: Any, where: str):
    from datasets import List, Value

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: only optional single types map to Arrow, got {annotation}")
        return _feature(args[0], where)  # Arrow columns are nullable anyway
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and len(set(args)) != 1:
            raise TypeError(f"{where}: tuples must be homogeneous, got {annotation}")
        return List(_feature(args[0], where))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_features(annotation)
    if annotation in _SCALARS:
        return Value(_SCALARS[annotation])
    raise TypeError(f"{where}: no Arrow type for {annotation!r}")


def to_row(record: BaseModel) -> dict[str, Any]:
    """A record as a row for `Features.encode_example` (aliases as keys, image as bytes)."""
    row = record.model_dump(by_alias=True)
    for name, field in type(record).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("hf_feature") == "image":
            key = field.alias or name
            row[key] = {"bytes": row[key], "path": None}
    return row
