"""The prediction runs on a schedule: every CDP_PREDICTIONS_EVERY hours, each workspace's models are trained,
evaluated and its profiles scored (services/predictions.py), in a thread of the core process.

A workspace whose last run is older than the interval (or that was never run) is run `first_delay_s` after
start, so a restart does not wait a whole interval and a fresh platform still starts at once. A failed run
is logged and tried again at the next round; it never stops the platform.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Callable, Iterable

from services.predictions import PredictionService, RunPredictions

log = logging.getLogger(__name__)


class PredictionSchedule:
    def __init__(self, service: PredictionService, workspaces: Callable[[], Iterable[str]],
                 clock: Callable[[], datetime], every_h: float, first_delay_s: float = 60.0) -> None:  # fmt: skip
        self.service, self.workspaces, self.clock = service, workspaces, clock
        self.every = timedelta(hours=every_h)
        self.first_delay_s = first_delay_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PredictionSchedule":
        if self.every > timedelta(0):
            self._thread = threading.Thread(target=self._loop, name="predictions", daemon=True)
            self._thread.start()
        return self

    @property
    def scheduled(self) -> bool:
        """Whether runs are scheduled at all (CDP_PREDICTIONS_EVERY above 0)."""
        return self._thread is not None

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a run in progress finishes in the background (daemon)

    def due(self, workspace_id: str) -> bool:
        """Never run, or last run longer ago than the interval."""
        runs = [m for m in self.service.models(workspace_id)["models"] if "trained_at" in m]
        if not runs:
            return True
        last = min(datetime.fromisoformat(m["trained_at"]) for m in runs)
        return self.clock() - last >= self.every

    def _loop(self) -> None:
        wait = self.first_delay_s
        while not self._stopping.wait(wait):
            for workspace_id in list(self.workspaces()):
                if self._stopping.is_set():
                    return
                try:
                    if self.due(workspace_id):
                        done = self.service.run(RunPredictions(workspace_id))
                        log.info("predictions of workspace %s: %s", workspace_id,
                                 ", ".join(f"{m['model']} {m['status']}" for m in done["models"]))  # fmt: skip
                except Exception:  # the next round tries again; the platform goes on
                    log.exception("the scheduled predictions of workspace %s failed", workspace_id)
            wait = min(self.every.total_seconds(), 3600.0)  # look hourly: a workspace made since is run in time
