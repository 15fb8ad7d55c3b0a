"""pydantic's ValidationError as Chime error items naming the wire field (`data.trigger.hours`)."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from shared.contracts.common import ErrorItem
from shared.contracts.triggers import TRIGGER_KINDS

__all__ = ["errors_from_validation", "field_path"]


def field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """Wire path of a pydantic `loc`; drops the tag pydantic inserts for a tagged union."""
    parts: list[str] = [prefix] if prefix else []
    previous: int | str | None = prefix.rsplit(".", 1)[-1] if prefix else None
    for item in loc:
        if previous == "trigger" and item in TRIGGER_KINDS:
            previous = item
            continue
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(item if item[:1].islower() and "_" not in item else to_camel(item))
        previous = item
    return ".".join(parts)


def _message(err: dict, path: str) -> str:
    name = path.rsplit(".", 1)[-1] if path else "message"
    kind = err["type"]
    text = str(err["msg"])
    if kind == "value_error":
        text = text.removeprefix("Value error, ")
        return text if err["loc"] == () or not err["loc"] else f"{name} {text}"
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"{name} is not a known field: remove it or check its spelling"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"{name} {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern")
        return f"{name} {err.get('input')!r} must match {pattern}"
    return f"{name}: {text[:1].lower()}{text[1:]}"


def errors_from_validation(exc: ValidationError, prefix: str = "") -> list[ErrorItem]:
    """One VALIDATION error item per pydantic error, with the wire path as `field`."""
    items: list[ErrorItem] = []
    for err in exc.errors(include_url=False):
        path = field_path(prefix, tuple(err["loc"]))
        items.append(ErrorItem(code="VALIDATION", message=_message(err, path), field=path or None))
    return items
