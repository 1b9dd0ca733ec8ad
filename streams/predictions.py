"""The `predictions` processor: the model runs of the log into `prediction_models` and `prediction_scores`.

It runs before the tags processor, so a tag rule that reads a score (`{computed: churn_risk, ...}`)
sees the page's scores when that page's scored profiles are evaluated; and an erasure deletes the scores
given before it in the same page too (they are applied first).
"""

from __future__ import annotations

from typing import Any

from projections.predictions import PredictionStore
from streams.messages import ErasureMessage, Message, PredictionMessage, by_erasures


class PredictionProcessor:
    name = "predictions"

    def __init__(self, store: PredictionStore) -> None:
        self.store = store

    def process(self, messages: list[Message]) -> int:
        if not messages:
            return 0
        for part in by_erasures(messages):
            if isinstance(part, ErasureMessage):
                self.store.erase(part.workspace_id, list(part.profile_ids))
                continue
            models: list[tuple[str, str, str, str, dict[str, Any]]] = []
            scores: list[tuple[str, str, str, str, float, dict[str, Any]]] = []
            for m in part:
                if not isinstance(m, PredictionMessage):
                    continue
                if m.change == "trained":
                    models.append((m.workspace_id, m.model, m.version, m.status, m.doc or {}))
                else:
                    scores.extend((m.workspace_id, pid, m.model, m.version, score, details)
                                  for pid, score, details in m.scores)  # fmt: skip
            self.store.save_scores(scores)  # within a page, a run's scores land before its model is listed
            self.store.save_models(models)
        return max(m.position for m in messages)
