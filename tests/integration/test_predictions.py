"""Predictions through HTTP on a real platform (SQLite log, chDB, the bundled broker): a year of simulated
orders sent with the write key, a run with the admin key, the models' evaluation, the scores on the profiles,
the revenue forecast; and the answers without enough history, with the wrong key, and while a run goes on."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from tests.conftest import Running, read_topic

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAYS = 400


def _history(customers: int = 300, seed: int = 7) -> list[dict[str, Any]]:
    """Buy-till-you-die customers: each buys at a rate of their own while alive, and after each purchase may
    drop out for good; every order comes with a page view. Some pay in USD."""
    rng = random.Random(seed)
    calls: list[dict[str, Any]] = []
    for c in range(customers):
        user = f"c{c}"
        first = rng.uniform(0, DAYS - 60)
        rate = rng.gammavariate(0.8, 1 / 20)  # purchases a day
        drop = rng.betavariate(1.0, 4.0)
        spend = rng.gammavariate(6, 10)
        currency = "USD" if c % 10 == 0 else "EUR"
        day, n = first, 0
        while day < DAYS:
            at = (NOW - timedelta(days=DAYS - day)).isoformat()
            calls.append({"type": "page", "userId": user, "name": "Shop", "timestamp": at})
            calls.append({"type": "track", "userId": user, "event": "Order Completed", "timestamp": at,
                          "properties": {"order_id": f"{user}-{n}", "revenue": round(rng.gammavariate(4, spend / 4), 2),
                                         "currency": currency}})  # fmt: skip
            n += 1
            if n == 1 and c % 7 == 0:  # a second order an hour after the first: one purchase day, not two
                calls.append({"type": "track", "userId": user, "event": "Order Completed",
                              "timestamp": (NOW - timedelta(days=DAYS - day, hours=-1)).isoformat(),
                              "properties": {"order_id": f"{user}-same-day", "revenue": 5, "currency": currency}})
            if rng.random() < drop:
                break
            day += rng.expovariate(rate) if rate > 0 else DAYS
    return calls


@pytest.fixture(scope="module")
def calls() -> list[dict[str, Any]]:
    return _history()


def _send(r: Running, calls: list[dict[str, Any]]) -> None:
    for i in range(0, len(calls), 400):
        assert r.send("/v1/batch", {"batch": calls[i:i + 400]}).status_code == 200
    r.wait_caught_up(60)


def test_a_run_trains_evaluates_and_scores_every_model(running: Running, calls: list[dict[str, Any]]) -> None:
    _send(running, calls)
    before = running.http.get("/v1/predictions/models", headers=running.read_headers).json()["models"]
    assert [m["status"] for m in before] == ["never_trained"] * 3
    answer = running.http.post("/v1/predictions/run", headers=running.admin_headers)
    assert answer.status_code == 200, answer.text
    run = {m["model"]: m for m in answer.json()["models"]}
    assert {m: run[m]["status"] for m in run} == {"purchase_propensity": "trained", "churn_risk": "trained",
                                                  "predicted_ltv": "trained"}, run  # fmt: skip
    for name in ("purchase_propensity", "churn_risk"):
        metrics = run[name]["metrics"]
        assert 0.6 < metrics["auc"] <= 1.0, (name, metrics)  # recency and frequency carry the signal here
        assert 0 <= metrics["brier"] < 0.25 and metrics["top_decile_lift"] >= 1.0
        assert run[name]["split"]["evaluated_on_features_as_of"] > run[name]["split"]["trained_on_features_as_of"]
    ltv = run["predicted_ltv"]
    bg = ltv["parameters"]["bgnbd"]
    assert all(bg[p] > 0 for p in ("r", "alpha", "a", "b")) and bg["customers"] > 200
    assert set(ltv["parameters"]["gamma_gamma"]) == {"EUR", "USD"}
    assert ltv["evaluation"]["customers"] > 100 and (ltv["evaluation"]["correlation"] or 0) > 0.3, (ltv["evaluation"], ltv["parameters"])
    models = running.http.get("/v1/predictions/models", headers=running.read_headers).json()["models"]
    assert [(m["model"], m["version"]) for m in models] == [(m, run[m]["version"]) for m in
                                                            ("purchase_propensity", "churn_risk", "predicted_ltv")]

    # The scores are computed traits of the profile, with the model's version.
    profile = running.profile("user_id:c1").json()
    traits = profile["computed_traits"]
    assert 0 <= traits["purchase_propensity"]["probability"] <= 1
    assert 0 <= traits["churn_risk"]["probability"] <= 1
    assert traits["predicted_ltv"]["version"] == run["predicted_ltv"]["version"]
    assert set(traits["predicted_ltv"]["value"]) <= {"EUR", "USD"} and traits["predicted_ltv"]["expected_purchases"] >= 0


def test_the_revenue_forecast_has_intervals_and_its_holdout_error(running: Running, calls: list[dict[str, Any]]) -> None:
    _send(running, calls)
    answer = running.http.get("/v1/forecasts/revenue", params={"granularity": "week", "horizon": 6},
                              headers=running.read_headers)  # fmt: skip
    assert answer.status_code == 200, answer.text
    by_currency = {f["currency"]: f for f in answer.json()["forecasts"]}
    eur = by_currency["EUR"]
    assert eur["status"] == "forecast" and len(eur["points"]) == 6
    assert all(p["lower"] <= p["value"] <= p["upper"] and p["lower"] >= 0 for p in eur["points"])
    assert eur["mape"] is None or eur["mape"] >= 0
    assert eur["holdout_periods"] >= 1
    bad = running.http.get("/v1/forecasts/nps", headers=running.read_headers)
    assert bad.status_code == 404 and bad.json()["code"] == "unknown_forecast"
    daily = running.http.get("/v1/forecasts/revenue", params={"granularity": "day"}, headers=running.read_headers)
    assert daily.status_code in (400, 422) and "granularity" in daily.text


def test_without_enough_history_every_model_says_what_it_needs(running: Running) -> None:
    _send(running, _history(customers=8, seed=3))
    run = running.http.post("/v1/predictions/run", headers=running.admin_headers).json()
    for model in run["models"]:
        assert model["status"] == "not_enough_data" and model["scored_profiles"] == 0
        assert "needs" in model["reason"] or "at least" in model["reason"], model
    assert "computed_traits" in running.profile("user_id:c1").json()
    assert "purchase_propensity" not in running.profile("user_id:c1").json()["computed_traits"]
    forecast = running.http.get("/v1/forecasts/won_revenue", headers=running.read_headers).json()
    assert forecast["forecasts"][0]["status"] == "not_enough_data"


def test_keys_and_a_second_run_at_once(running: Running) -> None:
    assert running.http.post("/v1/predictions/run", headers={"Authorization": f"Bearer {running.read_key}"}
                             ).status_code == 403  # fmt: skip
    assert running.http.post("/v1/predictions/run", auth=(running.write_key, "")).status_code == 401
    assert running.http.get("/v1/predictions/models").status_code == 401
    service = running.platform.services.predictions  # type: ignore[union-attr]
    entered, release = threading.Event(), threading.Event()
    people = service.store.people

    def slow_people(*args: Any) -> Any:  # the first run waits inside, on the real store, until released
        entered.set()
        release.wait(30)
        return people(*args)

    service.store.people = slow_people  # type: ignore[method-assign]
    first = threading.Thread(target=lambda: running.http.post("/v1/predictions/run", headers=running.admin_headers))
    first.start()
    try:
        assert entered.wait(30)
        second = running.http.post("/v1/predictions/run", headers=running.admin_headers)
        assert second.status_code == 409 and second.json()["code"] == "run_in_progress"
    finally:
        release.set()
        first.join(60)
        service.store.people = people  # type: ignore[method-assign]


def test_a_model_that_fails_is_recorded_and_the_others_still_run(running: Running, calls: list[dict[str, Any]]) -> None:
    _send(running, calls)
    service = running.platform.services.predictions  # type: ignore[union-attr]

    def broken(*_: Any) -> Any:
        raise RuntimeError("a fault of the lifetime value model")

    service._ltv = broken  # type: ignore[method-assign]
    answer = running.http.post("/v1/predictions/run", headers=running.admin_headers)
    assert answer.status_code == 200
    run = {m["model"]: m for m in answer.json()["models"]}
    assert run["predicted_ltv"]["status"] == "failed" and "a fault of the lifetime value model" in run["predicted_ltv"]["reason"]
    assert run["purchase_propensity"]["status"] == run["churn_risk"]["status"] == "trained"


def test_first_scores_are_scored_changes_on_the_profile_changes_topic(running: Running,
                                                                      calls: list[dict[str, Any]]) -> None:  # fmt: skip
    _send(running, calls)
    run = running.http.post("/v1/predictions/run", headers=running.admin_headers).json()
    expected = sum(m["scored_profiles"] for m in run["models"])

    def scored(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [v for v in values if v["change"] == "scored"]

    received = read_topic(running.platform.settings.bootstrap_servers, "cdp.profile-changes",
                          lambda got: len(scored(got)) >= expected, timeout=30)  # fmt: skip
    messages = scored([v for _, v in received])
    assert len(messages) == expected and expected > 600
    assert len({(m["profile_id"], m["model"]) for m in messages}) == len(messages)  # one per profile and model
    assert all(m["score"]["old"] is None and m["version"] == run["version"] for m in messages)  # all first scores
    schema = json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.profile-changes.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    for message in messages[:50]:
        assert validator.is_valid(message), [e.message for e in validator.iter_errors(message)]
    c1 = running.profile("user_id:c1").json()
    mine = {m["model"]: m["score"]["new"] for m in messages if m["profile_id"] == c1["profile_id"]}
    assert mine["churn_risk"] == c1["computed_traits"]["churn_risk"]["probability"]


AT_RISK = {"and": [{"computed": "churn_risk", "op": ">", "value": 0.5},
                   {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 100, "within": "365d"}]}  # fmt: skip


def _revenue_365(calls: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each customer's order revenue of the last 365 days per currency, from the calls sent."""
    since = NOW - timedelta(days=365)
    out: dict[str, dict[str, float]] = {}
    for c in calls:
        if c.get("event") == "Order Completed" and datetime.fromisoformat(c["timestamp"]) >= since:
            p = c["properties"]
            mine = out.setdefault(c["userId"], {})
            mine[p["currency"]] = mine.get(p["currency"], 0.0) + p["revenue"]
    return out


def test_a_tag_on_scores_enters_as_a_run_scores_and_a_rebuild_reproduces_it(running: Running,
                                                                           calls: list[dict[str, Any]]) -> None:  # fmt: skip
    """"At risk, high value": churn risk above 0.5 and revenue over 100 in 365 days, defined before any run.
    The run's scores are entries of the log: the tag's members enter as the run scores them (cause `score`),
    exactly those the scores and the orders say, and a rebuild ends with the same models, scores and tags."""
    from infra.bootstrap import verify_rebuild

    _send(running, calls)
    put = running.http.put("/v1/tags/at-risk", json={"name": "At risk, high value", "rule": AT_RISK},
                           headers=running.admin_headers)  # fmt: skip
    assert put.status_code == 200, put.text
    running.wait_caught_up(60)
    assert running.http.get("/v1/tags/at-risk", headers=running.read_headers).json()["members"] == 0  # no scores yet
    run = running.http.post("/v1/predictions/run", headers=running.admin_headers)
    assert run.status_code == 200, run.text

    revenue = _revenue_365(calls)
    expected, scored, profiles = set(), 0, []
    for user in sorted({c["userId"] for c in calls}):
        profile = running.profile(f"user_id:{user}").json()
        profiles.append(profile)
        risk = profile["computed_traits"].get("churn_risk")
        scored += risk is not None
        if risk and risk["probability"] > 0.5 and any(v > 100 for v in revenue.get(user, {}).values()):
            expected.add(profile["profile_id"])
    assert scored == 300 and 0 < len(expected) < 300, (scored, len(expected))
    # Every form of a score condition selects what the profiles' computed traits say (a segment query).
    forms = {
        "predicted_ltv.EUR": (lambda t: float(t["predicted_ltv"]["value"].get("EUR", "nan")) >= 200, ">=", 200),
        "predicted_ltv": (lambda t: any(float(v) < 50 for v in t["predicted_ltv"]["value"].values()), "<", 50),
        "predicted_ltv.probability_alive": (lambda t: t["predicted_ltv"]["probability_alive"] < 0.5, "<", 0.5),
        "predicted_ltv.expected_purchases": (lambda t: t["predicted_ltv"]["expected_purchases"] > 1, ">", 1),
        "purchase_propensity": (lambda t: t["purchase_propensity"]["probability"] <= 0.1, "<=", 0.1),
    }
    for name, (holds, op, value) in forms.items():
        query = running.http.post("/v1/segments/query", json={"rule": {"computed": name, "op": op, "value": value}},
                                  headers=running.read_headers)  # fmt: skip
        assert query.status_code == 200, query.text
        want = sum(1 for p in profiles if "predicted_ltv" in p["computed_traits"] and holds(p["computed_traits"]))
        assert query.json()["count"] == want and 0 < want < 300, (name, query.json()["count"], want)
    assert running.http.get("/v1/tags/at-risk", headers=running.read_headers).json()["members"] == len(expected)
    changes = read_topic(running.platform.settings.bootstrap_servers, "cdp.tag-changes",
                         lambda got: len([v for v in got if v["tag_id"] == "at-risk"]) >= len(expected), timeout=30)
    entered = [v for _, v in changes if v["tag_id"] == "at-risk"]
    assert {v["profile_id"] for v in entered} == expected
    assert {(v["change"], v["cause"]) for v in entered} == {("entered", "score")}

    # The run is in the log (and on cdp.events, as its schema says): a rebuild has the same models and scores,
    # and the tag's members entered at the same positions with the same cause.
    events = read_topic(running.platform.settings.bootstrap_servers, "cdp.events",
                        lambda got: sum(v["kind"] == "prediction" for v in got) >= 6, timeout=30)
    runs = [v for _, v in events if v["kind"] == "prediction"]
    assert {(v["model"], v["change"]) for v in runs} == {(m, c) for m in ("purchase_propensity", "churn_risk",
                                                                         "predicted_ltv") for c in ("trained", "scored")}
    validator = jsonschema_rs.validator_for(json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.events.schema.json")
                                                       .read_text()))  # fmt: skip
    for message in runs:
        assert validator.is_valid(message), [e.message for e in validator.iter_errors(message)][:3]
    platform = running.platform
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []

    # An erased person's scores go with them, live and in a rebuild (the run stays in the log, by profile id).
    member = sorted(expected)[0]
    user = next(p for p in profiles if p["profile_id"] == member)["identifiers"]["user_id"][0]
    erased = running.http.post("/v1/regulations", json={"type": "delete", "identifiers": [f"user_id:{user}"]},
                               headers=running.admin_headers)  # fmt: skip
    assert erased.status_code == 202, erased.text
    running.wait_caught_up(60)
    left = platform.store.client.query(
        f"SELECT count() FROM {platform.settings.clickhouse_database}.prediction_scores WHERE profile_id = "
        "{p:UUID}", parameters={"p": member}).result_rows[0][0]  # fmt: skip
    assert left == 0
    assert running.http.get("/v1/tags/at-risk", headers=running.read_headers).json()["members"] == len(expected) - 1
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []


def test_the_features_count_each_call_type_in_the_last_30_days_and_the_30_before(running: Running) -> None:
    """The trend features, for a person whose visitor history was merged into them by an identify."""
    def at(days: float) -> str:
        return (NOW - timedelta(days=days)).isoformat()

    calls = [{"type": "page", "anonymousId": "v1", "name": "Home", "timestamp": at(d)} for d in (1, 2, 3, 40)]
    calls += [{"type": "track", "userId": "t1", "event": "Viewed", "timestamp": at(d)} for d in (45, 50, 59, 61)]
    calls += [{"type": "screen", "userId": "t1", "name": "Cart", "timestamp": at(5)},
              {"type": "identify", "userId": "t1", "anonymousId": "v1", "timestamp": at(0.5)}]  # fmt: skip
    assert running.send("/v1/batch", {"batch": calls}).status_code == 200
    running.wait_caught_up(60)
    pid = running.profile("user_id:t1").json()["profile_id"]
    store = running.platform.services.predictions.store  # type: ignore[union-attr]
    features = store.people(running.platform.workspace_id, NOW)[pid].features
    assert {k: features[k] for k in ("pages_30", "pages_prev_30", "screens_30", "screens_prev_30", "tracks_30",
                                     "tracks_prev_30")} == {"pages_30": 3, "pages_prev_30": 1, "screens_30": 1,
                                                            "screens_prev_30": 0, "tracks_30": 0,
                                                            "tracks_prev_30": 3}  # fmt: skip


def test_the_won_revenue_forecast_comes_with_the_open_pipeline(running: Running) -> None:
    """Deals won every week for 30 weeks (the series), and deals open now (what is in flight): the forecast
    of won revenue has its points, and beside them the open pipeline as the pipeline_value KPI weighs it."""
    rng = random.Random(5)
    calls: list[dict[str, Any]] = []

    def stage(deal: str, name: str, amount: float, probability: float, days_ago: float) -> None:
        calls.append({"type": "track", "userId": f"buyer-{deal}", "event": "Opportunity Stage Changed",
                      "timestamp": (NOW - timedelta(days=days_ago)).isoformat(),
                      "properties": {"opportunity_id": deal, "stage": name, "amount": amount,
                                     "probability": probability, "currency": "EUR", "owner": "rep-1"}})  # fmt: skip

    for week in range(30):
        for n in range(3):
            deal, amount = f"won-{week}-{n}", float(rng.randint(800, 1200))
            stage(deal, "Proposal", amount, 0.5, 7 * week + 20)
            stage(deal, "Closed Won" if n < 2 else "Closed Lost", amount, 1.0 if n < 2 else 0.0, 7 * week + 3)
    for n in range(4):
        stage(f"open-{n}", "Proposal", 2000.0, 0.25, 5)
    for i in range(0, len(calls), 400):
        assert running.send("/v1/batch", {"batch": calls[i:i + 400]}).status_code == 200
    running.wait_caught_up(60)

    answer = running.http.get("/v1/forecasts/won_revenue", params={"granularity": "week", "horizon": 4,
                                                                   "history": 26}, headers=running.read_headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    eur = next(f for f in body["forecasts"] if f.get("currency") == "EUR")
    assert eur["status"] == "forecast" and len(eur["points"]) == 4, eur
    assert all(p["lower"] <= p["value"] <= p["upper"] for p in eur["points"])
    [pipeline] = body["open_pipeline"]
    assert pipeline["currency"] == "EUR" and pipeline["open_opportunities"] == 4
    assert float(pipeline["weighted_value"]) == pytest.approx(4 * 2000 * 0.25)
    assert pipeline["win_rate"] == pytest.approx(2 / 3, abs=0.01)
    assert pipeline["average_sales_cycle_days"] == pytest.approx(17.0, abs=0.1)
    assert "open_pipeline" not in running.http.get("/v1/forecasts/revenue", headers=running.read_headers).json()
