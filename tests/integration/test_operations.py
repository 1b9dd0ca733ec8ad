from tests.conftest import Running


def test_healthz_metrics_and_openapi(running: Running) -> None:
    assert running.http.get("/healthz").json() == {"status": "ok"}
    assert running.send("/v1/track", {"userId": "u", "event": "E", "messageId": "m"}).status_code == 200
    assert running.send("/v1/track", {"userId": "u", "event": "E", "messageId": "m"}).status_code == 200
    assert running.send("/v1/track", {"userId": "u"}).json()["rejected"][0]["field"] == "event"
    assert running.send("/v1/track", {"userId": "u", "event": "E"}, params={"strict": "1"}).status_code == 200
    assert running.send("/v1/track", {"userId": "u"}, params={"strict": "1"}).status_code == 400
    running.wait_caught_up()
    closed = running.http.get("/metrics")  # the platform key, unless CDP_METRICS_OPEN=on
    assert (closed.status_code, closed.json()["code"]) == (401, "unauthorized")
    assert running.http.get("/metrics", headers=running.admin_headers).status_code == 401  # no workspace key opens it
    text = running.http.get("/metrics", headers={"Authorization": f"Bearer {running.platform_key}"}).text
    assert 'cdp_ingest_requests_total{endpoint="track",status="400"}' in text
    assert 'cdp_ingest_events_total{outcome="duplicate"}' in text
    assert 'cdp_ingest_events_total{outcome="rejected"}' in text
    assert 'cdp_dead_letters_total{code="invalid_event"}' in text
    assert "cdp_log_position" in text and 'cdp_projection_lag{projection="profiles"} 0.0' in text
    paths = running.http.get("/openapi.json").json()["paths"]
    assert {"/v1/batch", "/v1/track", "/v1/alias", "/v1/profiles/{identifier}", "/v1/status"} <= set(paths)


def test_status_needs_the_read_key(running: Running) -> None:
    assert running.http.get("/v1/status").status_code == 401
    body = running.http.get("/v1/status", headers=running.read_headers).json()
    assert body["caught_up"] in (True, False) and body["log_position"] >= 2  # workspace and its keys
