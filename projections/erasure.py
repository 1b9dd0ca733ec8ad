"""Deleting an erased person's rows from the projections (a regulation's `ErasureMessage`).

Each store names the tables it writes that hold rows per profile; together they are every
such table of the database (tests/integration/test_regulations.py checks that none is left
out). The deletes are mutations waited for (`mutations_sync`), so a query that follows
no longer sees the rows, and `FINAL` reads cannot bring an older version back.
"""

from __future__ import annotations

from typing import Any, Iterable
from uuid import UUID

PROFILE_TABLES = ("events", "identity_history", "profile_identifiers", "profile_changes", "profiles")
PREDICTION_TABLES = ("prediction_scores",)
KPI_TABLES = ("kpi_facts", "activity_days", "identity_moves")
TAG_TABLES = ("tag_membership", "tag_changes", "tag_timers")


def erase_rows(client: Any, db: str, tables: Iterable[str], workspace_id: str, profile_ids: Iterable[str]) -> None:
    ids = [UUID(p) for p in profile_ids]
    if not ids:
        return
    for table in tables:
        client.command(
            f"ALTER TABLE {db}.{table} DELETE WHERE workspace_id = {{ws:String}} AND profile_id IN {{ids:Array(UUID)}} "
            "SETTINGS mutations_sync = 1",
            parameters={"ws": workspace_id, "ids": ids},
        )
