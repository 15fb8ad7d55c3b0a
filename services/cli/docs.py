"""`chime docs`: the AsyncAPI of each service, a JSON Schema per message and the
configuration reference, under docs/.

The AsyncAPI documents come from FastStream's generator (what `faststream docs gen` runs),
fed with each service's real broker; the schemas from the pydantic contracts. `--check`
exits 1 when the committed copies are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from faststream.specification import AsyncAPI

from shared.contracts.catalogue import MESSAGES
from shared.settings import Settings

__all__ = ["docs", "render"]

SERVICES = ("scheduler", "ticker", "acker")


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def _service_app(name: str):
    settings = Settings(kafka_bootstrap_servers="kafka:9092")
    if name == "scheduler":
        from services.scheduler.app import build_app
    elif name == "ticker":
        from services.ticker.app import build_app
    else:
        from services.acker.app import build_app
    return build_app(settings)


def configuration_reference() -> str:
    """docs/configuration.md, from the settings class."""
    lines = [
        "# Configuration",
        "",
        "Every Chime process reads its settings from environment variables with the prefix",
        "`CHIME_` (pydantic-settings; generated from `shared/settings.py` by `chime docs`).",
        "Unset servers mean the embedded defaults that `chime dev` starts.",
        "",
        "Any setting can instead be read from a file: `CHIME_<NAME>_FILE=/run/secrets/x`",
        "(Docker and Kubernetes secrets; a trailing newline is dropped; `CHIME_<NAME>` itself",
        "wins). Use it for passwords, tokens and URLs that carry them. Secrets are never logged",
        "or printed.",
        "Production settings: [security.md](security.md).",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        lines.append(f"| `CHIME_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(lines) + "\n"


def render() -> dict[str, str]:
    """Relative path -> content of every generated document."""
    from shared.contracts import SCHEMA_VERSION

    out: dict[str, str] = {"docs/configuration.md": configuration_reference()}
    for name in SERVICES:
        spec = AsyncAPI(
            _service_app(name).broker,
            title=f"Chime {name}",
            version=f"schema {SCHEMA_VERSION}",
            description=f"Topics the Chime {name} consumes and publishes (default prefix chime.).",
            schema_version="3.0.0",
        ).to_specification()
        out[f"docs/asyncapi/{name}.json"] = _json(spec.to_jsonable())
    for message, model in MESSAGES.items():
        schema = model.model_json_schema(by_alias=True)
        out[f"docs/schemas/{message}.json"] = _json(schema)
    return out


def docs(root: Path, check: bool) -> int:
    stale = []
    for relative, content in render().items():
        path = root / relative
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        stale.append(relative)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if check and stale:
        print(f"chime docs: stale, run `chime docs`: {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"chime docs: {len(stale)} file(s) {'stale' if check else 'written'}")
    return 0
