"""Rejections: what a command handler raises, and parsing that turns pydantic errors into them."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.contracts import ErrorItem, errors_from_validation

__all__ = ["CommandError", "parse"]

M = TypeVar("M", bound=BaseModel)


class CommandError(Exception):
    """A command that cannot be applied; carries the error items of the rejection."""

    def __init__(self, *items: ErrorItem) -> None:
        super().__init__(items[0].message)
        self.items = list(items)

    @classmethod
    def of(
        cls, code: str, message: str, field: str | None = None, detail: Any = None
    ) -> CommandError:
        return cls(ErrorItem(code=code, message=message, field=field, detail=detail))


def parse(model: type[M], data: dict[str, Any], prefix: str = "data") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandError(*errors_from_validation(exc, prefix)) from None
