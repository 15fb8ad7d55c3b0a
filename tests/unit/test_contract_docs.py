"""Contracts are documentation: frozen, extra=forbid, a description and examples on every field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from shared.contracts import catalogue


def models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}

    def walk(model: type[BaseModel]) -> None:
        if model.__name__ in seen:
            return
        seen[model.__name__] = model
        for field in model.model_fields.values():
            for arg in _types(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    for model in catalogue.MESSAGES.values():
        walk(model)
    return list(seen.values())


def _types(annotation: object) -> list[object]:
    args = getattr(annotation, "__args__", ())
    out = [annotation]
    for arg in args:
        out += _types(arg)
    for meta in getattr(annotation, "__metadata__", ()):
        out += _types(meta)
    return out


@pytest.mark.parametrize("model", models(), ids=lambda m: m.__name__)
def test_every_field_is_described_with_examples(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
        assert field.examples, f"{model.__name__}.{name} has no examples"
