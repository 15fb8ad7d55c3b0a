"""The committed AsyncAPI and JSON Schemas are what the code generates (`chime docs`)."""

from __future__ import annotations

import json
from pathlib import Path

from services.cli.docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_docs_are_current() -> None:
    stale = [path for path, content in render().items() if (ROOT / path).read_text() != content]
    assert not stale, f"regenerate with `make docs`: {stale}"


def test_asyncapi_documents_each_service_topics_and_payloads() -> None:
    scheduler = json.loads((ROOT / "docs/asyncapi/scheduler.json").read_text())
    assert scheduler["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in scheduler["channels"].values()}
    assert {"chime.commands", "chime.command-results", "chime.dlq"} <= addresses
    assert "CommandEnvelope" in scheduler["components"]["schemas"]
    ticker = json.loads((ROOT / "docs/asyncapi/ticker.json").read_text())
    assert "ActionDue" in ticker["components"]["schemas"]
    acker = json.loads((ROOT / "docs/asyncapi/acker.json").read_text())
    assert "ActionAck" in acker["components"]["schemas"]
    schema = json.loads((ROOT / "docs/schemas/schedule.create.data.json").read_text())
    assert "displayName" in schema["properties"]  # camelCase, as on the wire


def test_configuration_reference_names_every_setting() -> None:
    from shared.settings import Settings

    text = (ROOT / "docs/configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`CHIME_{name.upper()}`" in text


def test_readme_quick_start_counts_every_migration() -> None:
    """The quick start shows what a first `chime dev` prints: every migration applied."""
    from shared.persistence.migrate import migrations

    text = (ROOT / "README.md").read_text()
    count = len(list(migrations()))
    assert f"chime dev: database ready ({count} migration(s) applied)" in text
