"""Named SQL queries loaded from `sql/queries.sql` (`-- name: x` blocks)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

__all__ = ["Queries", "grants_sql", "load_queries", "migrations", "parse_queries"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


class Queries(dict[str, str]):
    def __getattr__(self, name: str) -> str:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None


def parse_queries(text: str) -> Queries:
    """The `-- name: x` blocks of a SQL file, by name."""
    queries = Queries()
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


@cache
def load_queries() -> Queries:
    return parse_queries((files("shared.persistence") / "sql" / "queries.sql").read_text())


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every numbered migration, in order."""
    folder = files("shared.persistence") / "sql" / "migrations"
    found = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            found.append((int(m[1]), m[2], entry.read_text()))
    return sorted(found)


def grants_sql(role: str) -> str:
    """grants.sql for `role` (a plain role name, checked here: it is spliced as an identifier)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"database_service_role {role!r} is not a plain role name")
    text = (files("shared.persistence") / "sql" / "grants.sql").read_text()
    return text.replace("{role}", f'"{role}"')
