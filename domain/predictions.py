"""A run of a prediction model, recorded in the log: what it learnt, and the scores it gave.

The models are trained from the projections (services/predictions.py), but what a run decided is a fact
like any other: it is appended to the log, and the projections, tag rules and a rebuild all read it from
there. So a tag that reads `churn_risk` enters and exits at the same log positions live and rebuilt, and a
rebuild ends with the same models and scores as the live platform instead of none.

One aggregate per run of one model: `Trained` (the status, the evaluation and parameters: the model's
document), then `Scored` pages of at most `SCORES_PER_ENTRY` scores, each `[profile_id, score, details]`.
The scores name profiles by id only: no identifier, nothing personal to seal.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.model import NAMESPACE

SCORES_PER_ENTRY = 1_000  # an entry of about 220 KB (measured): under a Kafka message's default 1 MB on cdp.events
# What rules read of each model's score (domain/tags.py): the probability, or for the lifetime value the
# expected purchases, its probability of being alive and its value per currency.
SCORE_MODELS = ("purchase_propensity", "churn_risk", "predicted_ltv")
LTV_KEYS = ("expected_purchases", "probability_alive")

Score = tuple[str, float, dict[str, Any]]  # profile id, the score, its details (as served on the profile)


class ModelRun(Aggregate):
    """One run of one model for one workspace, named by the model and the run's version (its instant)."""

    @staticmethod
    def create_id(workspace_id: str, model: str, model_version: str, status: str, doc: dict[str, Any]) -> UUID:
        return uuid5(NAMESPACE, f"{workspace_id}/model-run/{model}/{model_version}")

    @event("Trained")
    def __init__(self, workspace_id: str, model: str, model_version: str, status: str, doc: dict[str, Any]) -> None:
        """`model_version`: the run's instant (the aggregate's own `version` counts its entries); `status`:
        trained, not_enough_data or failed; `doc`: the evaluation and parameters, or the reason."""
        self.workspace_id = workspace_id
        self.model = model
        self.model_version = model_version
        self.status = status
        self.doc = doc
        self.scored = 0

    @event("Scored")
    def add_scores(self, workspace_id: str, model: str, model_version: str, scores: list[list[Any]]) -> None:
        """A page of the run's scores (each entry names its model and version: it is read on its own)."""
        self.scored += len(scores)


def record_run(workspace_id: str, model: str, version: str, status: str, doc: dict[str, Any],
               scores: Iterable[Score]) -> ModelRun:  # fmt: skip
    """The run as an aggregate with its pending entries, to be saved in one transaction."""
    run = ModelRun(workspace_id, model, version, status, doc)
    for page in _pages(scores):
        run.add_scores(workspace_id, model, version, page)
    return run


def _pages(scores: Iterable[Score]) -> Iterator[list[list[Any]]]:
    page: list[list[Any]] = []
    for profile_id, score, details in scores:
        page.append([profile_id, float(score), details])
        if len(page) >= SCORES_PER_ENTRY:
            yield page
            page = []
    if page:
        yield page
