"""Tenancy isolation, proved over every route of the API: two workspaces with overlapping identifiers,
messageIds, slugs and sources; every key of one (write, read, admin) calls every route, aimed at the other's
profiles, keys, regulations, dead letters, tags and sources, and never sees or changes anything of it; nor does
analyst SQL, an export, the audit log, or a message on the Kafka topics.

A route added to the API without a case here fails `test_every_route_has_a_case`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, read_topic

ROOT = Path(__file__).parents[2]
MAPPING = (ROOT / "infra" / "webhook_mappings" / "stripe.yaml").read_bytes()
CHARGE = (ROOT / "tests" / "fixtures" / "webhooks" / "stripe" / "charge.succeeded.json").read_bytes()
SHARED_EMAIL = "sam.overlap@example.com"
MARK = {"a": "alpha-only-7f3a", "b": "beta-only-2c9d"}  # a trait value only each workspace's person has
SQL_TABLES = ("events", "profiles", "profile_identifiers", "identity_history", "profile_changes", "workspace_rules",
              "kpi_facts", "activity_days", "tag_membership", "tag_changes", "tag_definitions")  # fmt: skip
OUT_OF_SCOPE = {("GET", "/healthz"), ("GET", "/metrics")}  # no workspace data: liveness, platform metrics
# An endless stream: tests/integration/test_live_http.py checks that each workspace's carries only its own.
OUT_OF_SCOPE |= {("GET", "/v1/live")}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Workspace:
    """One workspace's keys and what it holds, seeded with the same identifiers as the other."""

    def __init__(self, r: Running, name: str, keys: dict[str, str], workspace_id: str) -> None:
        self.r, self.name, self.keys, self.id = r, name, keys, workspace_id
        self.profile_id = ""
        self.key_ids: list[str] = []
        self.regulation_id = ""
        self.dead_letter_ids: list[int] = []

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.r.http.request(method, path, headers=bearer(self.keys["admin"]) | kwargs.pop("headers", {}),
                                       **kwargs)  # fmt: skip
        assert response.status_code < 300, (path, response.text)
        return response

    def seed(self) -> None:
        r, mark = self.r, MARK[self.name]
        batch = [
            {"type": "identify", "userId": "u1", "messageId": "m-1", "traits": {"email": SHARED_EMAIL, "secret": mark}},
            {"type": "track", "userId": "u1", "messageId": "m-2", "event": "Order Completed",
             "properties": {"order_id": "o-1", "revenue": 50 if self.name == "a" else 70, "currency": "EUR",
                            "note": mark}},
            {"type": "page", "anonymousId": "anon-1", "messageId": "m-3", "name": "Home"},
        ]  # fmt: skip
        assert r.http.post("/v1/batch", json={"batch": batch}, auth=(self.keys["write"], "")).status_code == 200
        refused = r.http.post("/v1/track", json={"userId": "u1", "messageId": "bad-1", "properties": {"note": mark}},
                              auth=(self.keys["write"], ""))  # fmt: skip
        assert refused.json()["rejected"], refused.text  # no event name: kept as a dead letter
        r.settle()
        self.profile_id = r.http.get("/v1/profiles/user_id:u1", headers=bearer(self.keys["read"])).json()["profile_id"]
        self.admin("PUT", "/v1/tags/vip", json={"name": "VIP", "rule": {"trait": "secret", "op": "=", "value": mark}})
        self.admin("PUT", "/v1/segments/buyers", json={"name": "Buyers", "rule": {"computed": "orders_count",
                                                                                     "op": ">=", "value": 1}})  # fmt: skip
        self.admin("POST", "/v1/profiles/user_id:u1/tags", json={"tag": "manual-" + mark, "reason": mark})
        self.admin("PUT", "/v1/webhooks/stripe/mapping", content=MAPPING, headers={"Content-Type": "application/yaml"})
        self.admin("PUT", "/v1/settings/allowed-origins", json={"origins": [f"https://{mark}.example"]})
        self.admin("PUT", "/v1/settings/consent-defaults", json={"defaults": {"*": "granted"}})
        self.admin("PUT", "/v1/identity/rules", json={})
        made = self.admin("POST", "/v1/keys", json={"kind": "read", "scopes": ["kpis"], "name": "partner-" + mark})
        self.keys["partner"] = made.json()["key"]
        self.regulation_id = self.admin("POST", "/v1/regulations",
                                        json={"type": "suppress", "identifiers": [f"email:{mark}@example.com"]}).json()["id"]  # fmt: skip
        self.key_ids = [k["id"] for k in self.admin("GET", "/v1/keys").json()["keys"]]
        self.dead_letter_ids = [d["id"] for d in self.admin("GET", "/v1/dead-letters").json()["dead_letters"]]
        assert self.dead_letter_ids
        r.settle()

    def secrets(self) -> list[str]:
        """What no answer to the other workspace may contain."""
        return [MARK[self.name], self.profile_id, self.regulation_id, self.id, *self.key_ids,
                *(key for kind, key in self.keys.items())]  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """Everything this workspace can read of itself (its own keys), to compare before and after."""
        read, admin = bearer(self.keys["read"]), bearer(self.keys["admin"])
        get = self.r.http.get
        profile = get("/v1/profiles/user_id:u1", headers=read).json()
        return {
            "profile": {k: profile.get(k) for k in ("profile_id", "identifiers", "traits", "event_count", "tags")},
            "timeline": [e["message_id"] for e in get("/v1/profiles/user_id:u1/events", headers=read).json()["events"]],
            "tags": get("/v1/tags", headers=read).json(), "segments": get("/v1/segments", headers=read).json(),
            "members": get("/v1/segments/buyers/members", headers=read).json(),
            "rules": get("/v1/identity/rules", headers=read).json(),
            "webhooks": get("/v1/webhooks", headers=admin).json(),
            "origins": get("/v1/settings/allowed-origins", headers=admin).json(),
            "consent": get("/v1/settings/consent-defaults", headers=read).json(),
            "keys": get("/v1/keys", headers=admin).json(),
            "dead_letters": get("/v1/dead-letters", headers=admin).json(),
            "regulation": get(f"/v1/regulations/{self.regulation_id}", headers=admin).json()["type"],
            "revenue": get("/v1/kpis/revenue", headers=read).json()["series"],
            "sql": self.r.http.post("/v1/sql", json={"query": "SELECT count() AS n FROM events"}, headers=read).json()["rows"],
            "partner": get("/v1/kpis", headers=bearer(self.keys["partner"])).status_code,
        }  # fmt: skip


@pytest.fixture
def two(running: Running) -> tuple[Workspace, Workspace]:
    r = running
    a = Workspace(r, "a", {"write": r.write_key, "read": r.read_key, "admin": r.admin_key}, r.platform.workspace_id)
    made = r.http.post("/v1/workspaces", json={"name": "beta"}, headers=bearer(r.platform_key)).json()
    b = Workspace(r, "b", {k["kind"]: k["key"] for k in made["keys"]}, made["id"])
    a.seed()
    b.seed()
    return a, b


def cases(victim: Workspace) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each route, with the requests an attacker sends it: aimed at the victim's own ids, and at the identifiers,
    slugs and sources both workspaces have (which must find the attacker's own)."""
    batch = {"batch": [{"type": "track", "userId": "u1", "messageId": "m-2", "event": "Viewed"}]}
    one = {"userId": "u1", "messageId": "m-9", "event": "Viewed", "traits": {"email": SHARED_EMAIL}}
    ingest = {f"/v1/{p}": [{"json": batch if p in ("batch", "b") else {**one, "previousId": "anon-1"}}]
              for p in ("batch", "identify", "track", "page", "screen", "group", "alias", "b", "t", "p", "i", "s", "g",
                        "a")}  # fmt: skip
    ids = [victim.profile_id, "user_id:u1", f"email:{SHARED_EMAIL}"]
    table: dict[tuple[str, str], list[dict[str, Any]]] = {("POST", path): reqs for path, reqs in ingest.items()}
    table.update({("OPTIONS", path): [{"headers": {"Origin": f"https://{MARK[victim.name]}.example",
                                                   "Access-Control-Request-Method": "POST"}}] for path in ingest})  # fmt: skip
    table.update({
        ("GET", "/v1/schemas/events"): [{}],
        ("GET", "/v1/settings/allowed-origins"): [{}],
        ("PUT", "/v1/settings/allowed-origins"): [{"json": {"origins": ["https://attacker.example"]}}],
        ("GET", "/v1/settings/consent-defaults"): [{}],
        ("PUT", "/v1/settings/consent-defaults"): [{"json": {"defaults": {"*": "denied"}}}],
        ("GET", "/v1/dead-letters"): [{}, {"params": {"after": 0}}],
        ("POST", "/v1/dead-letters/replay"): [{"json": {"ids": victim.dead_letter_ids}}],
        ("GET", "/v1/profiles"): [{}, {"params": {"trait.secret": MARK[victim.name]}}],
        ("GET", "/v1/profiles/{identifier}"): [{"path": {"identifier": i}} for i in ids],
        ("GET", "/v1/profiles/{identifier}/events"): [{"path": {"identifier": i}} for i in ids],
        ("GET", "/v1/profiles/{identifier}/consent"): [{"path": {"identifier": i}} for i in ids],
        ("GET", "/v1/profiles/{identifier}/merges"): [{"path": {"identifier": i}} for i in ids],
        ("POST", "/v1/profiles/{identifier}/split"): [
            {"path": {"identifier": victim.profile_id}, "json": {"identifiers": [f"email:{SHARED_EMAIL}"]}}],
        ("GET", "/v1/identity/rules"): [{}],
        ("PUT", "/v1/identity/rules"): [{"json": {"merge": {"max_identifiers": {"email": 1}}}}],
        ("GET", "/v1/status"): [{}],
        ("POST", "/v1/tags"): [{"json": {"slug": "vip", "name": "Hijack", "rule": {"trait": "plan", "op": "=",
                                                                                    "value": "x"}}}],  # fmt: skip
        ("PUT", "/v1/tags/{slug}"): [{"path": {"slug": "vip"}, "json": {"name": "Hijack", "rule": {"trait": "plan",
                                                                                                      "op": "=", "value": "x"}}}],  # fmt: skip
        ("DELETE", "/v1/tags/{slug}"): [{"path": {"slug": "vip"}}],
        ("GET", "/v1/tags"): [{}],
        ("GET", "/v1/tags/{slug}"): [{"path": {"slug": "vip"}}],
        ("GET", "/v1/tags/{slug}/history"): [{"path": {"slug": "vip"}}, {"path": {"slug": "vip"},
                                                                      "params": {"granularity": "month"}}],
        ("POST", "/v1/segments"): [{"json": {"slug": "buyers", "name": "Hijack", "rule": {"computed": "orders_count",
                                                                                           "op": ">=", "value": 9}}}],  # fmt: skip
        ("PUT", "/v1/segments/{slug}"): [{"path": {"slug": "buyers"}, "json": {"name": "Hijack", "rule": {
            "computed": "orders_count", "op": ">=", "value": 9}}}],
        ("DELETE", "/v1/segments/{slug}"): [{"path": {"slug": "buyers"}}],
        ("GET", "/v1/segments"): [{}],
        ("GET", "/v1/segments/{slug}"): [{"path": {"slug": "buyers"}}],
        ("GET", "/v1/segments/{slug}/history"): [{"path": {"slug": "buyers"}}],
        ("POST", "/v1/profiles/{identifier}/tags"): [{"path": {"identifier": i}, "json": {"tag": "hijacked"}} for i in ids],
        ("DELETE", "/v1/profiles/{identifier}/tags/{tag}"): [
            {"path": {"identifier": i, "tag": "manual-" + MARK[victim.name]}} for i in ids],
        ("GET", "/v1/profiles/{identifier}/tag-changes"): [{"path": {"identifier": i}} for i in ids],
        ("POST", "/v1/segments/query"): [{"json": {"rule": {"trait": "secret", "op": "=", "value": MARK[victim.name]}}},
                                         {"json": {"rule": {"computed": "orders_count", "op": ">=", "value": 1}}}],
        ("GET", "/v1/segments/{slug}/members"): [{"path": {"slug": "buyers"}}],
        ("GET", "/v1/segments/{slug}/export"): [{"path": {"slug": "buyers"}}, {"path": {"slug": "buyers"},
                                                                               "params": {"format": "csv"}}],
        ("GET", "/v1/kpis"): [{}],
        ("GET", "/v1/kpis/{name}"): [{"path": {"name": "revenue"}}, {"path": {"name": "revenue"},
                                                                      "params": {"by": "currency"}}],
        ("POST", "/v1/funnels"): [{"json": {"steps": [{"type": "page", "name": "Home"}, {"event": "Order Completed"}],
                                            "within": "7d"}}],  # fmt: skip
        ("GET", "/v1/cohorts/retention"): [{}],
        ("POST", "/v1/sql"): [{"json": {"query": f"SELECT * FROM {t} LIMIT 1000"}} for t in SQL_TABLES] + [
            {"json": {"query": f"SELECT * FROM events WHERE workspace_id = '{victim.id}'"}}],
        ("GET", "/v1/quarantine"): [{}],
        ("POST", "/v1/quarantine/retry"): [{"json": {}}],
        ("POST", "/v1/webhooks/{source}"): [{"path": {"source": "stripe"}, "content": CHARGE,
                                             "headers": {"Content-Type": "application/json"}}],
        ("POST", "/v1/webhooks/{source}/replay"): [{"path": {"source": "stripe"}, "json": {"ids": victim.dead_letter_ids}}],
        ("PUT", "/v1/webhooks/{source}/mapping"): [{"path": {"source": "stripe"}, "content": MAPPING,
                                                    "headers": {"Content-Type": "application/yaml"}}],
        ("GET", "/v1/webhooks/{source}/mapping"): [{"path": {"source": "stripe"}}],
        ("DELETE", "/v1/webhooks/{source}/mapping"): [{"path": {"source": "stripe"}}],
        ("GET", "/v1/webhooks"): [{}],
        ("POST", "/v1/regulations"): [{"json": {"type": "suppress", "identifiers": [victim.profile_id]}},
                                      {"json": {"type": "unsuppress", "identifiers": [
                                          f"email:{MARK[victim.name]}@example.com"]}}],
        ("GET", "/v1/regulations/{regulation_id}"): [{"path": {"regulation_id": victim.regulation_id}}],
        ("POST", "/v1/keys"): [{"json": {"kind": "admin"}}],
        ("GET", "/v1/keys"): [{}],
        ("POST", "/v1/keys/{key_id}/rotate"): [{"path": {"key_id": k}} for k in victim.key_ids],
        ("DELETE", "/v1/keys/{key_id}"): [{"path": {"key_id": k}} for k in victim.key_ids],
        ("GET", "/v1/audit"): [{}, {"params": {"target": victim.profile_id}}],
        ("POST", "/v1/workspaces"): [{"json": {"name": "gamma"}}],
        ("GET", "/v1/workspaces"): [{}],
        ("PATCH", "/v1/workspaces/{workspace_id}"): [{"path": {"workspace_id": victim.id}, "json": {"name": "taken"}}],
        ("GET", "/v1/predictions/models"): [{}],
        ("POST", "/v1/predictions/run"): [{}],
        ("GET", "/v1/forecasts/{kpi}"): [{"path": {"kpi": "revenue"}}, {"path": {"kpi": "won_revenue"},
                                                                         "params": {"granularity": "month"}}],
    })  # fmt: skip
    return table


def routes(r: Running) -> set[tuple[str, str]]:
    paths = r.http.get("/openapi.json").json()["paths"]
    found = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    return found - OUT_OF_SCOPE


def test_every_route_has_a_case(two: tuple[Workspace, Workspace]) -> None:
    a, _ = two
    covered = set(cases(a))
    assert routes(a.r) - covered == set(), "routes without a tenancy case: add them to cases()"


def call(r: Running, key: str, method: str, path: str, request: dict[str, Any]) -> Any:
    request = dict(request)
    url = path.format(**request.pop("path", {}))
    headers = request.pop("headers", {})
    if url.startswith("/v1/webhooks/stripe") and method == "POST" and url.endswith("stripe"):
        request["params"] = {"key": key}
    auth = (key, "") if path in {p for m, p in cases_ingest()} else None
    return r.http.request(method, url, headers=bearer(key) | headers, auth=auth, **request)


def cases_ingest() -> set[tuple[str, str]]:
    return {("POST", f"/v1/{p}") for p in ("batch", "identify", "track", "page", "screen", "group", "alias", "b", "t",
                                            "p", "i", "s", "g", "a")}  # fmt: skip


@pytest.mark.parametrize("direction", ["b-attacks-a", "a-attacks-b"])
def test_no_key_of_one_workspace_sees_or_changes_the_other(two: tuple[Workspace, Workspace], direction: str) -> None:
    a, b = two
    victim, attacker = (a, b) if direction == "b-attacks-a" else (b, a)
    r = victim.r
    before = victim.snapshot()
    hidden = victim.secrets()
    leaks, errors = [], []
    destructive = {"DELETE", "POST", "PUT", "PATCH"}
    table = cases(victim)
    # Reads first, then the changes (a change of the attacker's own state must not hide a leak of a read).
    order = sorted(table.items(), key=lambda item: item[0][0] in destructive)
    for kind in ("write", "read", "admin", "partner"):
        key = attacker.keys[kind]
        for (method, path), requests in order:
            for request in requests:
                answer = call(r, key, method, path, request)
                text = answer.text
                if answer.status_code >= 500:
                    errors.append(f"{kind} {method} {path}: {answer.status_code} {text[:200]}")
                asked = str(request)  # an id the attacker sent may come back in the error: it knew it already
                found = [s for s in hidden if s and s in text and s not in asked]
                if found:
                    at = text.find(found[0])
                    leaks.append(f"{kind} {method} {path} {request.get('path', '')}: {found} in …{text[at - 150:at + 50]}")
        r.settle()
    assert errors == [] and leaks == [], "\n".join(errors + leaks)
    assert victim.snapshot() == before
    status = r.http.get("/v1/status", headers=bearer(attacker.keys["read"])).json()
    assert status["dead_letters"] == r.platform.dead_letters.counts(attacker.id)


def test_streams_keep_each_workspaces_messages_apart(two: tuple[Workspace, Workspace]) -> None:
    a, b = two
    bootstrap = a.r.platform.settings.bootstrap_servers
    for topic in ("cdp.events", "cdp.profile-changes", "cdp.tag-changes", "cdp.audit"):
        records = read_topic(bootstrap, topic, lambda vs: False, timeout=4)
        assert records, topic
        for _, value in records:
            text = str(value)
            for mine, other in ((a, b), (b, a)):
                if MARK[mine.name] in text or mine.profile_id in text:
                    assert value.get("workspace_id") == mine.id, (topic, value)
                    assert MARK[other.name] not in text and other.profile_id not in text, (topic, value)


def test_analyst_sql_sees_only_the_workspace_of_its_key(two: tuple[Workspace, Workspace]) -> None:
    a, b = two
    for me, other in ((a, b), (b, a)):
        for table in SQL_TABLES:
            answer = a.r.http.post("/v1/sql", json={"query": f"SELECT * FROM {table}"}, headers=bearer(me.keys["read"]))
            assert answer.status_code == 200, (table, answer.text)
            assert MARK[other.name] not in answer.text and other.profile_id not in answer.text, table
        mine = a.r.http.post("/v1/sql", json={"query": "SELECT count() AS n FROM events"}, headers=bearer(me.keys["read"]))
        assert mine.json()["rows"] == [[3]], mine.text  # its own identify, order and page

