"""Reading the log straight from its rows (streams/messages.stored_event_message) gives the mapper's messages."""

from __future__ import annotations

from datetime import datetime, timezone

from domain.privacy import is_sealed
from domain.segment import call_adapter, normalise
from infra.config import Settings
from infra.eventstore import open_event_store
from streams.log_follower import read_messages
from streams.messages import stored_event_message, to_message


def test_rows_read_directly_equal_the_domain_events_messages(settings: Settings) -> None:
    app = open_event_store(settings)
    ws = app.ensure_workspace("default")
    now = datetime.now(timezone.utc)
    raw = [
        {"type": "identify", "userId": "u1", "traits": {"email": "ann@example.com", "n": 1.5}, "messageId": "a"},
        {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "b",
         "properties": {"revenue": 12.25, "currency": "EUR", "products": [{"price": 3, "quantity": 2}]}},
        # A call holding the transcoder's own marker: left to the mapper.
        {"type": "track", "userId": "u2", "event": "Odd", "messageId": "c",
         "properties": {"x": {"_type_": "uuid_hex", "_data_": "00000000000000000000000000000001"}}},
        {"type": "alias", "previousId": "anon-1", "userId": "u1", "messageId": "d"},
        {"type": "page", "anonymousId": "anon-9", "name": "Ünïcode ✓", "messageId": "e"},
    ]  # fmt: skip
    app.record([(ws, [normalise(call_adapter.validate_python(c), now) for c in raw])])
    notifications = app.read_log(0, 1000)
    expected = [m for n in notifications if (m := to_message(app.mapper.to_domain_event(n), n.id)) is not None]
    read, last = read_messages(app, 0, 1000)
    assert read == expected and last == notifications[-1].id
    assert all(is_sealed(n.state) for n in notifications if n.topic.startswith("domain.model:CustomerEvent"))
    direct = [n for n in notifications if stored_event_message(n, app.mapper.plain_state(n.state)) is not None]
    assert len(direct) == 4  # every call but the one with a `_type_` key; identity entries go through the mapper
