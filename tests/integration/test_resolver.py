"""The resolver: what the ingest workers accepted reaches the event log in order, and a fault never stops it."""

from __future__ import annotations

from typing import Any

from tests.conftest import Running


def _track(message_id: str, user: str = "u1") -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Viewed", "messageId": message_id}


def test_a_call_the_resolver_cannot_record_is_dead_lettered_and_the_rest_goes_on(running: Running) -> None:
    resolver = running.platform.resolver
    assert resolver is not None
    record = resolver._record

    def faulty(batches: Any) -> Any:  # a fault of the platform on one call, as a bug in identity would be
        if any(call["messageId"] == "bad" for _, calls in batches for call in calls):
            raise ValueError("identity rules could not be applied")
        return record(batches)

    resolver._record = faulty
    answer = running.send("/v1/batch", {"batch": [_track("a"), _track("bad"), _track("b")]}).json()
    assert answer["stored"] == 3  # accepted: durable in the intake log
    running.wait_caught_up()
    assert running.stored_event_count() == 2
    letters = running.http.get("/v1/dead-letters", headers=running.admin_headers).json()["dead_letters"]
    assert [(d["code"], d["message_id"], d["source"]) for d in letters] == [("unresolvable", "bad", "resolver")]
    assert "ValueError: identity rules could not be applied" in letters[0]["reason"]
    assert running.send("/v1/batch", {"batch": [_track("c")]}).json()["stored"] == 1  # later calls go on
    running.wait_caught_up()
    assert running.stored_event_count() == 3

    resolver._record = record  # the fix is deployed: the replay records it
    replay = running.http.post("/v1/dead-letters/replay", json={"code": "unresolvable"},
                               headers=running.admin_headers)
    assert replay.json()["replayed"] == 1 and replay.json()["results"][0]["outcome"] == "stored"
    running.wait_caught_up()
    assert running.stored_event_count() == 4
    assert running.profile("user_id:u1").json()["event_count"] == 4


def test_a_command_sees_every_call_accepted_before_it(running: Running) -> None:
    """A split right after the calls that made the profile: the resolver records them first."""
    batch = [{"type": "identify", "userId": "u9", "traits": {"email": "nine@example.com"}, "messageId": "i1"},
             {"type": "identify", "userId": "u9", "anonymousId": "dev-1", "messageId": "i2"}]  # fmt: skip
    assert running.send("/v1/batch", {"batch": batch}).json()["stored"] == 2
    app = running.platform.app
    resolver = running.platform.resolver
    assert resolver is not None
    profiles = resolver.run_now(lambda: app.graph.profile_of(running.platform.workspace_id, "user_id:u9"))
    assert profiles is not None
