"""What `cdp rebuild --verify` compares: every projection table, as exact reads see it.

A rebuild replays the log into a scratch database; `differences` then compares
each table below with the live one, row for row and value for value (no
rounding: a value that differs in its last digit is a difference). Tables are
read with `FINAL`, so what is compared is the logical current state, not the
physical duplicates ReplacingMergeTree keeps until it merges; `where` narrows a
table to its logical rows where a table also holds bookkeeping rows.

A column is left out only when it cannot be the same in a live run and a
replay although nothing is wrong: the write counter `version` of
ReplacingMergeTree tables (`time.time_ns()` when the row was written; it only
orders a key's rows, and `FINAL` has already used it) and wall-clock times of
when a row was written. Each entry says which columns it leaves out and why.
Tables that are not projections of the log are in `NOT_COMPARED`, with the
reason; every table the migrations create is in one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.store import PROFILE_COLUMNS, ProjectionStore


@dataclass(frozen=True)
class Compared:
    columns: str  # compared columns ("*": all of them)
    order_by: str  # the table's key: rows are compared in this order
    where: str = "1"  # the logical rows of the table
    left_out: str = ""  # columns not compared, and why


COMPARED_TABLES: dict[str, Compared] = {
    # The profiles processor's tables.
    "events": Compared("*", "workspace_id, anchor, timestamp, event_id"),
    "identity_history": Compared("*", "workspace_id, identifier, position"),  # recorded_at is the log entry's time
    "profile_identifiers": Compared(
        "workspace_id, profile_id, identifier, position", "workspace_id, profile_id, identifier",
        left_out="is_deleted: FINAL drops the identifiers that moved away, so every row read has 0",
    ),  # fmt: skip
    "profile_changes": Compared("*", "workspace_id, profile_id, position, change, other_profile_id"),
    "profiles": Compared(
        ", ".join(c for c in PROFILE_COLUMNS if c not in ("version", "is_deleted")), "workspace_id, profile_id",
        left_out="version: write counter; is_deleted: FINAL drops merged-away profiles",
    ),  # fmt: skip
    "workspace_rules": Compared("*", "workspace_id, version"),
    # The KPI processor's tables.
    "kpi_facts": Compared("*", "workspace_id, kind, fact_id"),
    "activity_days": Compared("*", "workspace_id, anchor, day"),
    "identity_moves": Compared("*", "workspace_id, identifier, position"),
    # The tags processor's tables (streams/tags.py). A rebuild follows the evaluation steps the live
    # engine recorded (`tag_steps`): the same pages of the log, timer ticks and backfill pages, in the
    # same order and each with the clock reading the live run used, so history, causes and times are
    # reproduced exactly, timer-driven ones included.
    "tag_definitions": Compared("*", "workspace_id, kind, tag_id, rule_version"),
    "tag_membership": Compared(
        "workspace_id, tag_id, profile_id, kind, rule_version, since, position", "workspace_id, tag_id, profile_id",
        left_out="version: write counter; is_deleted: FINAL drops the members that left",
    ),  # fmt: skip
    "tag_changes": Compared("*", "workspace_id, profile_id, tag_id, position, change"),
    "tag_timers": Compared(
        "workspace_id, tag_id, profile_id, due", "workspace_id, tag_id, profile_id", "due > toDateTime64(0, 3, 'UTC')",
        left_out="version: write counter; rows due at the epoch are cleared timers, the same as no row",
    ),  # fmt: skip
    "tag_backfills": Compared(
        "workspace_id, tag_id, rule_version, state, started_at", "workspace_id, tag_id, rule_version",
        left_out="updated_at: wall-clock time of the progress write (it also orders the rows, FINAL used it); "
        "done, total: how many profiles the backfill went through, which counted a person erased since (the members "
        "it left are compared in tag_membership and tag_changes)",
    ),  # fmt: skip
    "tag_steps": Compared("*", "seq"),  # the replay records the steps it followed again, as they were
    # The predictions processor's tables: the model runs of the log (domain/predictions.py).
    "prediction_models": Compared("*", "workspace_id, model, version"),
    "prediction_scores": Compared("*", "workspace_id, profile_id, model"),
    # Entries still set aside: a rebuild quarantines the same ones (a retried entry that applied is no longer).
    "quarantine": Compared(
        "processor, position, event_id, workspace_id, kind, error", "processor, position",
        "resolved = 0 AND processor != 'relay'",
        left_out="reason, attempts, at, version: how and when it was tried; relay rows: the relay is not rebuilt",
    ),  # fmt: skip
}

NOT_COMPARED: dict[str, str] = {
    "positions": "how far each processor got: a rebuild records its own, and the relay's is not rebuilt",
    "log_origin": "the log's fingerprint, checked against the event store at every start (infra/startup_checks.py)",
    "schema_migrations": "which migrations ran and when; both databases run all of them",
}


def _row(row: tuple[Any, ...] | None) -> str:
    text = "none" if row is None else repr(row)
    return text if len(text) <= 300 else text[:300] + "..."


def differences(live: ProjectionStore, rebuilt: ProjectionStore) -> list[str]:
    """Tables whose exact contents differ between two projection databases (empty: identical)."""
    found = []
    for table, c in COMPARED_TABLES.items():
        a = live.table_snapshot(table, c.columns, c.order_by, c.where)
        b = rebuilt.table_snapshot(table, c.columns, c.order_by, c.where)
        if a != b:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            found.append(
                f"{table}: {len(a)} rows live, {len(b)} rebuilt, first difference at row {first}: "
                f"live {_row(a[first] if first < len(a) else None)}, rebuilt {_row(b[first] if first < len(b) else None)}"
            )
    return found
