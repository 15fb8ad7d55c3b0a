"""The committed AsyncAPI and JSON Schemas are what the code generates (`chime docs`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli.docs import docs, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_docs_are_current() -> None:
    stale = [path for path, content in render().items() if (ROOT / path).read_text() != content]
    assert not stale, f"regenerate with `make docs`: {stale}"


def test_chime_docs_writes_what_is_stale_and_check_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert docs(tmp_path, check=True) == 1  # nothing written yet: every file is stale
    err = capsys.readouterr().err
    assert (
        err.startswith("chime docs: stale, run `chime docs`: ")
        and "docs/asyncapi/acker.json" in err
    )
    assert not (tmp_path / "docs").exists()  # a check writes nothing
    assert docs(tmp_path, check=False) == 0
    assert capsys.readouterr().out == f"chime docs: {len(render())} file(s) written\n"
    (tmp_path / "docs/asyncapi/ticker.json").write_text("{}")
    assert docs(tmp_path, check=True) == 1
    assert capsys.readouterr().err.endswith(": docs/asyncapi/ticker.json\n")
    assert docs(tmp_path, check=False) == 0
    assert capsys.readouterr().out == "chime docs: 1 file(s) written\n"
    assert docs(tmp_path, check=True) == 0
    assert capsys.readouterr().out == "chime docs: 0 file(s) stale\n"


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
