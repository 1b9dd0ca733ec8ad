"""Property-based fuzzing of the whole HTTP API from its OpenAPI document: no input gets a 5xx.

Schemathesis generates requests for every operation of `/openapi.json` (valid
and invalid bodies, parameters and edge values: its examples, coverage and
fuzzing phases) and sends them over real HTTP to a started platform with the
workspace's keys (and the platform key), so they get past 401 and 403 into the handlers. The only check is
`not_a_server_error`: a 4xx is a fine answer to a bad input; schema conformance
of the answers is not checked here (the routes document few of their responses).

The run is bounded and reproducible: a fixed seed, derandomized generation, at
most MAX_EXAMPLES fuzzed examples per operation, no Hypothesis deadline and no
example database. Afterwards the read side must have applied everything that
was accepted, with nothing quarantined.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from domain.kpis import CATALOGUE
from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import ThreadedServer, create_app
from tests.conftest import Running

MAX_EXAMPLES = 12
SEED = 20260131
# The document of the app as served; building the app starts nothing.
DOC = create_app(Platform(Settings(data_dir=Path("unused")))).openapi()


def _config(coverage: bool) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large", "large_base_example"],
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": coverage, "unexpected-methods": []}},
    })  # fmt: skip


# The coverage phase generates every boundary and invalid case a schema defines. Once is enough for a tag
# definition: PUT and the segments' routes take the same definition through the same code, so they are
# fuzzed only (which keeps the whole run within a few minutes).
SAME_AS_POST_TAGS = {"path": ["/v1/tags/{slug}", "/v1/segments/{slug}", "/v1/segments"], "method": ["PUT", "POST"]}
# /v1/live is an endless stream with no parameters to draw: tests/integration/test_live_http.py covers it.
schema = (schemathesis.openapi.from_dict(DOC, config=_config(coverage=True)).exclude(**SAME_AS_POST_TAGS)
          .exclude(path="/v1/live"))
fuzz_only = schemathesis.openapi.from_dict(DOC, config=_config(coverage=False)).include(**SAME_AS_POST_TAGS)
INGEST = {"/v1/batch", "/v1/identify", "/v1/track", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias"}
READ_POSTS = {"/v1/funnels", "/v1/sql", "/v1/segments/query"}  # reads sent as POST: the read key
PLATFORM = ("/v1/workspaces", "/metrics")  # the platform key's routes (paths starting so)
# Path parameters the fuzzer also draws from existing things (seeded below), to reach past the 404s.
KNOWN = {
    "identifier": ["user_id:fuzz-1", "email:fuzz@example.com", "anonymous_id:fuzz-anon"],
    "slug": ["vip", "active"],
    "tag": ["beta", "vip"],
    "name": sorted(CATALOGUE),
}
STATUSES: dict[str, Counter[int]] = {}
AUTH: dict[str, str] = {}


# A dictionary of values for parameters and body fields of these names, drawn beside the generated ones:
# times inside and at the edges of the window that can be queried (random date-times mostly fall outside
# it, so the handlers past the check are reached), and the times and durations that used to get a 500.
TIMES = ["2026-01-01T00:00:00Z", "1970-01-01", "1900-01-01T00:00:00Z", "2299-12-31T23:59:59.999Z",
         "2030-06-30T12:00:00+02:00", "0999-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00",
         "9999-12-31T23:59:59-05:00", "2300-01-01"]  # fmt: skip
DURATIONS = ["7d", "1s", "3660d", "99999999999999999999w", "1" + "0" * 400 + "d"]
KNOWN_QUERY = {"from": TIMES, "to": TIMES, "as_of": TIMES}
KNOWN_BODY = {"from": TIMES, "to": TIMES, "within": DURATIONS, "id": ["vip", "fuzzed"], "sentAt": TIMES,
              "timestamp": TIMES}  # fmt: skip


def _mixing(known: dict[str, list[Any]]) -> Any:
    """A flatmap_* hook: each generated value, or one of the `known` ones for its name."""

    def hook(context: Any, values: Any) -> Any:
        if not isinstance(values, dict) or not values:
            return st.just(values)
        return st.fixed_dictionaries(
            {k: st.sampled_from([v, *known[k]]) if k in known else st.just(v) for k, v in values.items()}
        )

    return hook


for _schema in (schema, fuzz_only):
    _schema.hook("flatmap_path_parameters")(_mixing(KNOWN))
    _schema.hook("flatmap_query")(_mixing(KNOWN_QUERY))
    _schema.hook("flatmap_body")(_mixing(KNOWN_BODY))


def _seed(running: Running) -> None:
    batch = [
        {"type": "identify", "userId": "fuzz-1", "anonymousId": "fuzz-anon",
         "traits": {"email": "fuzz@example.com", "plan": "pro"}},
        {"type": "track", "userId": "fuzz-1", "event": "Order Completed",
         "properties": {"order_id": "o-1", "revenue": 42.5, "currency": "EUR", "products": [{"sku": "s1", "price": 42.5}]}},
        {"type": "page", "anonymousId": "fuzz-anon", "name": "Home"},
    ]  # fmt: skip
    assert running.send("/v1/batch", {"batch": batch}).status_code == 200
    for path, body in [
        ("/v1/tags", {"id": "vip", "rule": {"computed": "orders_count", "op": ">=", "value": 1}}),
        ("/v1/tags", {"id": "beta", "name": "Beta testers", "rule": {"tag": "vip"}}),
        ("/v1/segments", {"id": "active", "rule": {"last_seen": {"within": "30d"}}}),
    ]:
        assert running.http.post(path, json=body, headers=running.admin_headers).status_code == 201, path
    running.wait_caught_up()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[Running]:
    """One platform for the whole module (the `live` fixture, module-scoped): one start for every operation."""
    settings_ = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data", http_port=free_port(), kafka_port=free_port(),
        kafka_partitions=2, clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
    )  # fmt: skip
    started = ThreadedServer(Platform(settings_)).start()
    try:
        with httpx.Client(base_url=started.url, timeout=30) as client:
            running = Running(started.platform, client)
            _seed(running)
            yield running
    finally:
        started.stop()


def _authorizations(running: Running, method: str, path: str) -> list[str]:
    """The Authorization headers to try, the expected one first (routes added later may take another): the write
    key for ingest, the read key for reads (an admin GET refuses it with a 403, then takes the admin key), the
    admin key for the rest, the platform key for workspaces and metrics."""
    basic = "Basic " + base64.b64encode(f"{running.write_key}:".encode()).decode()
    read, write = f"Bearer {running.read_key}", f"Bearer {running.write_key}"
    admin, platform = f"Bearer {running.admin_key}", f"Bearer {running.platform_key}"
    if path in INGEST:
        return [basic, write]
    if path.startswith(PLATFORM):
        return [platform, admin]
    if method == "GET" or path in READ_POSTS:
        return [read, admin, write, basic, platform]
    return [admin, write, basic, read, platform]


def fuzz(case: Any, server: Running) -> None:
    label = case.operation.label
    candidates = [AUTH[label]] if label in AUTH else _authorizations(server, case.method.upper(), case.operation.path)
    for authorization in candidates:
        response = case.call(base_url=str(server.http.base_url).rstrip("/"), headers={"Authorization": authorization},
                             timeout=30)  # fmt: skip
        if response.status_code not in (401, 403):
            AUTH[label] = authorization  # this route's key: the one it did not refuse
            break
    STATUSES.setdefault(case.operation.label, Counter())[response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: Any, server: Running) -> None:
    fuzz(case, server)


@fuzz_only.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_definition_gets_a_server_error(case: Any, server: Running) -> None:
    fuzz(case, server)


def test_the_read_side_applied_everything_accepted(server: Running) -> None:
    """Whatever ingest and the commands accepted, the projections applied: none stopped, nothing set aside."""
    counts = {label: dict(sorted(c.items())) for label, c in sorted(STATUSES.items())}
    print(f"\nfuzzed {sum(sum(c.values()) for c in STATUSES.values())} requests over {len(STATUSES)} operations:")
    for label, by_status in counts.items():
        print(f"  {label}: {by_status}")
    assert STATUSES, "the fuzz test did not run first"
    only_refused = [label for label, c in STATUSES.items() if set(c) <= {401, 403}]
    assert not only_refused, f"these operations never got past authentication: {only_refused}"
    deadline = time.monotonic() + 60
    while True:
        status = server.platform.status()
        if status["caught_up"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    stopped = {name: p for name, p in status["projections"].items() if p.get("error") or p.get("quarantined")}
    assert status["caught_up"] and not stopped, status
