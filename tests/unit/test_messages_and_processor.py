"""Log entries → messages → projection rows, with a fake projection writer (no ClickHouse)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable
from uuid import UUID

from domain.model import CustomerEvent, Profile
from domain.segment import call_adapter, normalise
from streams.messages import decode, encode, to_message
from streams.processors import ProfileProcessor, event_row


class FakeWriter:
    """Records what the processor writes; fragments map to themselves unless merged."""

    def __init__(self) -> None:
        self.rows: dict[str, list[list[Any]]] = {"events": [], "identities": [], "fragments": [], "frag_ids": []}
        self.refreshed: list[set[str]] = []
        self.deleted: list[set[str]] = []
        self.canonical: dict[str, str] = {}

    def insert_events(self, rows: list[list[Any]]) -> None:
        self.rows["events"] += rows

    def insert_identities(self, rows: list[list[Any]]) -> None:
        self.rows["identities"] += rows

    def insert_fragments(self, rows: list[list[Any]]) -> None:
        self.rows["fragments"] += rows
        for _, fragment, profile, _ in rows:
            self.canonical[str(fragment)] = str(profile)

    def insert_fragment_identifiers(self, rows: list[list[Any]]) -> None:
        self.rows["frag_ids"] += rows

    def canonical_of(self, workspace_id: str, fragment_ids: Iterable[str]) -> dict[str, str]:
        return {f: self.canonical.get(f, f) for f in fragment_ids}

    def refresh_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> None:
        self.refreshed.append(set(profile_ids))

    def delete_profiles(self, workspace_id: str, profile_ids: Iterable[str], position: int) -> None:
        self.deleted.append(set(profile_ids))


def _call(**raw: Any) -> dict[str, Any]:
    return normalise(call_adapter.validate_python(raw), datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_event_message_and_row() -> None:
    call = _call(type="identify", userId="u1", traits={"email": " Ann@X.com "}, messageId="m1")
    recorded = CustomerEvent("ws", "m1", "6fbd8143-d2d2-531d-9509-4e63f2e4d41c", call)
    message = to_message(recorded.collect_events()[0], 7)
    assert message is not None
    assert decode(encode(message)) == message
    assert message["kind"] == "event" and message["position"] == 7 and message["event_id"] == str(recorded.id)
    row = event_row(message)
    assert row[0] == "ws" and row[1] == recorded.id and row[4] == 7 and row[5] == "identify"
    assert row[8] == "u1" and row[10] == "ann@x.com"  # email column is normalised
    assert row[13] == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_identity_messages_carry_workspace_and_change() -> None:
    a = Profile("ws", ["user_id:u1"], "e1")
    b = Profile("ws", ["anonymous_id:x"], "e2")
    a.absorb("ws", str(b.id), [str(b.id)], ["anonymous_id:x"], "e3", "shared")
    b.merge_into("ws", str(a.id), "e3", "shared")
    events = a.collect_events() + b.collect_events()
    messages = [to_message(e, i + 1) for i, e in enumerate(events)]
    assert [m["change"] for m in messages] == ["created", "absorbed", "created", "merged_into"]
    assert all(m["workspace_id"] == "ws" and m["kind"] == "identity" for m in messages)
    assert messages[1]["fragments"] == [str(b.id)] and messages[3]["survivor_id"] == str(a.id)
    assert len({m["event_id"] for m in messages}) == 4


def test_processor_rows_refreshes_and_tombstones() -> None:
    a = Profile("ws", ["user_id:u1"], "e1")
    b = Profile("ws", ["anonymous_id:x"], "e2")
    created = a.collect_events() + b.collect_events()
    a.absorb("ws", str(b.id), [str(b.id)], ["anonymous_id:x"], "e3", "shared")
    b.merge_into("ws", str(a.id), "e3", "shared")
    merge = a.collect_events() + b.collect_events()
    track = CustomerEvent("ws", "m1", str(b.id), _call(type="track", anonymousId="x", event="E", messageId="m1"))
    log = [to_message(e, i + 1) for i, e in enumerate(created + track.collect_events() + merge)]
    writer = FakeWriter()
    assert ProfileProcessor(writer).process([m for m in log if m]) == 5
    assert len(writer.rows["events"]) == 1
    assert sorted(r[1] for r in writer.rows["identities"]) == ["anonymous_id:x", "anonymous_id:x", "user_id:u1"]
    assert writer.canonical[str(b.id)] == str(a.id)
    assert writer.refreshed == [{str(a.id)}]  # b's event and the merge both land on the survivor
    assert writer.deleted == [{str(b.id)}]
    assert ProfileProcessor(writer).process([]) == 0
    assert isinstance(writer.rows["fragments"][0][1], UUID)
