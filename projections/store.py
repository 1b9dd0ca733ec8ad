"""Reads and writes of the projection tables in ClickHouse.

Every write is idempotent: rows are keyed so that a redelivered message replaces
itself, and profiles are recomputed from the (deduplicated) events table rather
than incremented, so applying a batch twice leaves the same answer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import orjson

EVENT_COLUMNS = [
    "workspace_id", "event_id", "message_id", "profile_id", "position", "type", "event", "name",
    "user_id", "anonymous_id", "email", "group_id", "previous_id", "timestamp", "original_timestamp",
    "sent_at", "received_at", "properties", "traits", "context",
]  # fmt: skip
PROFILE_COLUMNS = [
    "workspace_id", "profile_id", "identifiers", "fragments", "traits", "trait_times", "first_seen", "last_seen",
    "event_count", "counts", "position", "version", "is_deleted",
]  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class ProfileView:
    """One profile as the projection holds it."""

    profile_id: str
    identifiers: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    trait_times: dict[str, datetime] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    position: int = 0


class ProjectionStore:
    """The projection tables of one ClickHouse database."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = database

    # Writes --------------------------------------------------------------------------------

    def insert_events(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.client.insert(f"{self.db}.events", rows, column_names=EVENT_COLUMNS)

    def insert_identities(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (workspace_id, identifier, profile_id, position)."""
        if rows:
            self.client.insert(
                f"{self.db}.identities", rows, column_names=["workspace_id", "identifier", "profile_id", "position"]
            )

    def insert_fragments(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (workspace_id, fragment_id, profile_id, position)."""
        if rows:
            self.client.insert(
                f"{self.db}.profile_fragments",
                rows,
                column_names=["workspace_id", "fragment_id", "profile_id", "position"],
            )

    def insert_fragment_identifiers(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (workspace_id, fragment_id, identifier, position)."""
        if rows:
            self.client.insert(
                f"{self.db}.fragment_identifiers",
                rows,
                column_names=["workspace_id", "fragment_id", "identifier", "position"],
            )

    def delete_profiles(self, workspace_id: str, profile_ids: Iterable[str], position: int) -> None:
        """Tombstone profiles merged into another one."""
        version = time.time_ns()
        rows = [
            [workspace_id, pid, [], [], {}, {}, EPOCH, EPOCH, 0, {}, position, version, 1] for pid in profile_ids
        ]
        if rows:
            self.client.insert(f"{self.db}.profiles", rows, column_names=PROFILE_COLUMNS)

    def refresh_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> None:
        """Recompute the given surviving profiles from their fragments' events and identifiers."""
        views = self.compute_profiles(workspace_id, profile_ids)
        version = time.time_ns()
        rows = [
            [
                workspace_id, v.profile_id, v.identifiers, v.fragments,
                {k: orjson.dumps(x).decode() for k, x in v.traits.items()},
                v.trait_times, v.first_seen or EPOCH, v.last_seen or EPOCH, v.event_count, v.counts, v.position,
                version, 0,
            ]  # fmt: skip
            for v in views.values()
        ]
        if rows:
            self.client.insert(f"{self.db}.profiles", rows, column_names=PROFILE_COLUMNS)

    def save_position(self, name: str, partition: int, position: int) -> None:
        self.client.insert(
            f"{self.db}.positions",
            [[name, partition, position, datetime.now(timezone.utc)]],
            column_names=["name", "partition", "position", "updated_at"],
        )

    # Reads ---------------------------------------------------------------------------------

    def positions(self) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = defaultdict(dict)
        rows = self.client.query(
            f"SELECT name, partition, argMax(position, updated_at) FROM {self.db}.positions GROUP BY name, partition"
        ).result_rows
        for name, partition, position in rows:
            result[name][partition] = position
        return dict(result)

    def canonical_of(self, workspace_id: str, fragment_ids: Iterable[str]) -> dict[str, str]:
        """fragment → the profile it belongs to now."""
        ids = sorted(set(fragment_ids))
        if not ids:
            return {}
        rows = self.client.query(
            f"SELECT toString(fragment_id), toString(argMax(profile_id, position)) FROM {self.db}.profile_fragments "
            "WHERE workspace_id = {ws:String} AND fragment_id IN {ids:Array(UUID)} GROUP BY fragment_id",
            parameters={"ws": workspace_id, "ids": ids},
        ).result_rows
        return dict(rows)

    def fragments_of(self, workspace_id: str, profile_ids: Iterable[str]) -> dict[str, list[str]]:
        """surviving profile → every fragment that belongs to it (itself included)."""
        ids = sorted(set(profile_ids))
        if not ids:
            return {}
        rows = self.client.query(
            f"SELECT toString(fragment_id), toString(argMax(profile_id, position)) AS p "
            f"FROM {self.db}.profile_fragments WHERE workspace_id = {{ws:String}} "
            "GROUP BY fragment_id HAVING p IN {ids:Array(String)}",
            parameters={"ws": workspace_id, "ids": ids},
        ).result_rows
        result: dict[str, list[str]] = {pid: [] for pid in ids}
        for fragment, profile in rows:
            result[profile].append(fragment)
        return {pid: frags for pid, frags in result.items() if frags}

    def compute_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> dict[str, ProfileView]:
        """Profiles as the events and identity tables say they are now."""
        members = self.fragments_of(workspace_id, profile_ids)
        owner = {frag: pid for pid, frags in members.items() for frag in frags}
        if not owner:
            return {}
        views = {pid: ProfileView(profile_id=pid, fragments=sorted(frags)) for pid, frags in members.items()}
        params = {"ws": workspace_id, "frags": sorted(owner)}
        for frag, ident in self.client.query(
            f"SELECT DISTINCT toString(fragment_id), identifier FROM {self.db}.fragment_identifiers "
            "WHERE workspace_id = {ws:String} AND fragment_id IN {frags:Array(UUID)} ORDER BY identifier",
            parameters=params,
        ).result_rows:
            views[owner[frag]].identifiers.append(ident)
        for frag, kind, count, first, last, position in self.client.query(
            f"SELECT toString(profile_id), type, count(), min(timestamp), max(timestamp), max(position) "
            f"FROM {self.db}.events FINAL WHERE workspace_id = {{ws:String}} AND profile_id IN {{frags:Array(UUID)}} "
            "GROUP BY profile_id, type",
            parameters=params,
        ).result_rows:
            view = views[owner[frag]]
            view.counts[kind] = view.counts.get(kind, 0) + count
            view.event_count += count
            first, last = _utc(first), _utc(last)
            view.first_seen = first if view.first_seen is None else min(view.first_seen, first)
            view.last_seen = last if view.last_seen is None else max(view.last_seen, last)
            view.position = max(view.position, position)
        for frag, key, raw, at in self.client.query(
            f"SELECT toString(profile_id), kv.1 AS k, argMax(kv.2, (timestamp, position)), max(timestamp) "
            f"FROM {self.db}.events FINAL ARRAY JOIN JSONExtractKeysAndValuesRaw(traits) AS kv "
            "WHERE workspace_id = {ws:String} AND profile_id IN {frags:Array(UUID)} AND type = 'identify' "
            "GROUP BY profile_id, k",
            parameters=params,
        ).result_rows:
            view = views[owner[frag]]
            at = _utc(at)
            if key not in view.trait_times or at > view.trait_times[key]:
                view.traits[key] = orjson.loads(raw)
                view.trait_times[key] = at
        for view in views.values():
            view.identifiers = sorted(set(view.identifiers))
        return views

    def read_profile(self, workspace_id: str, profile_id: str) -> ProfileView | None:
        rows = self.client.query(
            f"SELECT toString(profile_id), identifiers, arrayMap(x -> toString(x), fragments), traits, trait_times, "
            f"first_seen, last_seen, event_count, counts, position FROM {self.db}.profiles FINAL "
            "WHERE workspace_id = {ws:String} AND profile_id = {pid:UUID}",
            parameters={"ws": workspace_id, "pid": profile_id},
        ).result_rows
        if not rows:
            return None
        pid, idents, fragments, traits, times, first, last, count, counts, position = rows[0]
        return ProfileView(
            profile_id=pid,
            identifiers=list(idents),
            fragments=list(fragments),
            traits={k: orjson.loads(v) for k, v in traits.items()},
            trait_times={k: _utc(v) for k, v in times.items()},
            first_seen=_utc(first),
            last_seen=_utc(last),
            event_count=count,
            counts=dict(counts),
            position=position,
        )

    def profile_for_identifier(self, workspace_id: str, ident: str) -> str | None:
        rows = self.client.query(
            f"SELECT toString(argMax(profile_id, position)) FROM {self.db}.identities "
            "WHERE workspace_id = {ws:String} AND identifier = {ident:String} HAVING count() > 0",
            parameters={"ws": workspace_id, "ident": ident},
        ).result_rows
        return rows[0][0] if rows else None

    def timeline(
        self,
        workspace_id: str,
        fragments: list[str],
        limit: int,
        before: tuple[datetime, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Events of a profile's fragments (itself and what merged into it), newest first, keyset-paginated."""
        condition = ""
        params: dict[str, Any] = {"ws": workspace_id, "frags": fragments, "limit": limit}
        if before is not None:
            condition = "AND (timestamp, event_id) < ({bt:DateTime64(3, 'UTC')}, {bid:UUID})"
            params.update(bt=before[0], bid=before[1])
        result = self.client.query(
            f"SELECT toString(event_id), message_id, type, event, name, timestamp, received_at, position, "
            f"properties, traits, context, user_id, anonymous_id "
            f"FROM {self.db}.events FINAL WHERE workspace_id = {{ws:String}} AND profile_id IN {{frags:Array(UUID)}} "
            f"{condition} ORDER BY timestamp DESC, event_id DESC LIMIT {{limit:UInt32}}",
            parameters=params,
        )
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    def table_snapshot(self, table: str, columns: str, order_by: str) -> list[tuple[Any, ...]]:
        """All rows of a table as exact reads see them (used to compare a live run with a rebuild)."""
        return [tuple(r) for r in self.client.query(
            f"SELECT {columns} FROM {self.db}.{table} FINAL ORDER BY {order_by}"
        ).result_rows]  # fmt: skip


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


# What a rebuild must reproduce exactly: each table as exact reads see it, minus bookkeeping columns.
COMPARED_TABLES = {
    "events": ("*", "workspace_id, profile_id, timestamp, event_id"),
    "identities": ("workspace_id, identifier, profile_id", "workspace_id, identifier"),
    "profile_fragments": ("workspace_id, fragment_id, profile_id", "workspace_id, fragment_id"),
    "fragment_identifiers": ("workspace_id, fragment_id, identifier", "workspace_id, fragment_id, identifier"),
    "profiles": (
        "workspace_id, profile_id, identifiers, fragments, traits, trait_times, first_seen, last_seen, event_count, "
        "counts, position",
        "workspace_id, profile_id",
    ),
}


def differences(live: ProjectionStore, rebuilt: ProjectionStore) -> list[str]:
    """Tables whose exact contents differ between two projection databases (empty: identical)."""
    found = []
    for table, (columns, order_by) in COMPARED_TABLES.items():
        a = live.table_snapshot(table, columns, order_by)
        b = rebuilt.table_snapshot(table, columns, order_by)
        if a != b:
            found.append(f"{table}: {len(a)} rows live, {len(b)} rebuilt, first difference at row "
                         f"{next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))}")
    return found
