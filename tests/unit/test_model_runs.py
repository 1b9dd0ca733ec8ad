"""A model run as log entries (domain/predictions.py) and as messages (streams/messages.py), and the rule
conditions that read its scores (domain/tags.py)."""

from __future__ import annotations

import uuid

import pytest

from domain.predictions import SCORES_PER_ENTRY, ModelRun, record_run
from domain.tags import RuleError, parse_rule, scores_read
from streams.messages import PredictionMessage, decode, encode, to_message

WS = "cf0e1651-4d5e-53df-8732-fe37936ca048"
VERSION = "2026-12-03T09:00:00+00:00"


def _scores(n: int) -> list[tuple[str, float, dict[str, object]]]:
    return [(str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))), i / n, {"probability": i / n, "horizon_days": 30})
            for i in range(n)]  # fmt: skip


def test_a_run_is_its_evaluation_then_pages_of_scores() -> None:
    scores = _scores(2 * SCORES_PER_ENTRY + 1)
    run = record_run(WS, "churn_risk", VERSION, "trained", {"metrics": {"auc": 0.8}}, scores)
    entries = run.collect_events()
    assert [type(e) for e in entries] == [ModelRun.Trained] + [ModelRun.Scored] * 3
    assert [len(e.scores) for e in entries[1:]] == [SCORES_PER_ENTRY, SCORES_PER_ENTRY, 1]
    assert run.scored == len(scores)
    # The same run, recorded again, is the same aggregate: a second save of it is refused by the log.
    assert record_run(WS, "churn_risk", VERSION, "trained", {}, []).id == run.id
    assert record_run(WS, "churn_risk", "2026-12-04T09:00:00+00:00", "trained", {}, []).id != run.id


def test_each_entry_is_a_message_that_crosses_kafka_unchanged() -> None:
    run = record_run(WS, "predicted_ltv", VERSION, "trained", {"parameters": {"bgnbd": {"r": 0.24}}},
                     [(str(uuid.uuid4()), 2.7, {"expected_purchases": 2.7, "probability_alive": 0.83,
                                                "value": {"EUR": "318.40"}})])  # fmt: skip
    trained, scored = (to_message(e, position=10 + i) for i, e in enumerate(run.collect_events()))
    assert isinstance(trained, PredictionMessage) and isinstance(scored, PredictionMessage)
    assert (trained.change, trained.model, trained.version, trained.status) == ("trained", "predicted_ltv", VERSION,
                                                                                "trained")  # fmt: skip
    assert trained.doc == {"parameters": {"bgnbd": {"r": 0.24}}} and trained.scores == ()
    assert scored.change == "scored" and scored.scores[0][1:] == (2.7, {"expected_purchases": 2.7,
                                                                        "probability_alive": 0.83,
                                                                        "value": {"EUR": "318.40"}})  # fmt: skip
    assert trained.profile_id == scored.profile_id == ""  # keyed by the workspace on cdp.events
    for message in (trained, scored):
        assert decode(encode(message)) == message


def test_rules_read_scores_as_computed_traits() -> None:
    rule = parse_rule({"and": [{"computed": "churn_risk", "op": ">", "value": 0.7},
                               {"or": [{"computed": "predicted_ltv.EUR", "op": ">=", "value": 500},
                                       {"computed": "predicted_ltv.probability_alive", "op": "<", "value": 0.2}]},
                               {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000,
                                "within": "90d"}]})  # fmt: skip
    assert scores_read(rule) == {"churn_risk", "predicted_ltv"}
    assert scores_read(parse_rule({"computed": "revenue.EUR", "op": ">", "value": 1})) == set()
    assert scores_read(parse_rule({"computed": "purchase_propensity", "op": "exists"})) == {"purchase_propensity"}


@pytest.mark.parametrize("name", ["predicted_ltv.eur", "predicted_ltv.value", "churn_risk.probability", "churn"])
def test_an_unknown_score_is_refused_with_the_names_to_use(name: str) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rule({"computed": name, "op": ">", "value": 0.5})
    assert "computed" in str(refused.value)
