"""Versioned ClickHouse migrations, applied in order at start.

Each file `NNNN_name.sql` in migrations/ holds statements, each ending with `;` at the end of a line,
with `{db}` standing for the projection database. Applied versions are recorded
in `{db}.schema_migrations`, so a migration runs once per database.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("projections").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    without_comments = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    # A statement ends with `;` at the end of a line, so a `;` inside a COMMENT '...' is text.
    return [part.strip() for part in re.split(r";[ \t]*(?:\n|$)", without_comments) if part.strip()]


def migrate(client: Any, database: str) -> list[int]:
    """Apply pending migrations to `database`; returns the versions applied now."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"ClickHouse database name {database!r} must be a plain identifier")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in _statements(sql.replace("{db}", database)):
            client.command(statement)
        client.insert(f"{database}.schema_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(version)
    return applied
