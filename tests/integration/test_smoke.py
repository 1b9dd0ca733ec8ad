from tests.conftest import Running


def test_track_is_stored_projected_and_queryable(running: Running) -> None:
    response = running.send("/v1/track", {"userId": "u1", "event": "Signed Up", "messageId": "m1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "stored": 1, "duplicates": 0, "rejected": []}
    running.wait_caught_up()
    profile = running.profile("user_id:u1").json()
    assert profile["counts"] == {"track": 1}
    assert running.stored_event_count() == 1
