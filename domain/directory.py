"""Workspaces, keys, allowed origins and suppressions, followed from the log: all an ingest worker knows.

An ingest worker authorises write keys and answers CORS, nothing more, so it does
not load the identity graph that `CustomerData` holds. It reads the workspace
events of the log once at start and then only what was appended since
(`refresh`): a key granted in the core process opens a worker at the next
refresh, at most `REFRESH_S` later (or at once when a request brings a key it
does not know yet).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from domain.access import KeyGrant, KeyTable
from domain.application import LOAD_PAGE, WORKSPACE_TOPICS, EventLog
from domain.model import Workspace
from domain.regulations import DELETES, REGULATION_TOPICS, Regulation, Suppressions

TOPICS = WORKSPACE_TOPICS + REGULATION_TOPICS

REFRESH_S = 1.0


class Directory(EventLog):
    def __init__(self, env: dict[str, str] | None = None, sealer: Any = None) -> None:
        super().__init__(env=env, sealer=sealer)
        self.workspaces: dict[str, Workspace] = {}
        self.keys = KeyTable()
        self.suppressions = Suppressions()  # what ingest drops (domain/regulations.py), at most REFRESH_S late
        self._erasing: dict[str, tuple[str, list[str]]] = {}  # delete regulation → (workspace, subject hashes)
        self._position = 0  # the log read through; workspace events after it are not applied yet
        self._refreshed = 0.0
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Apply the workspace events appended since the last refresh."""
        with self._lock:
            top = self.recorder.max_notification_id() or 0
            start = self._position + 1
            while start <= top:
                page = self.recorder.select_notifications(start, LOAD_PAGE, stop=top, topics=TOPICS)
                for notification in page:
                    self._apply(self.mapper.to_domain_event(notification))
                if len(page) < LOAD_PAGE:
                    break
                start = page[-1].id + 1
            self._position = max(self._position, top)
            self._refreshed = time.monotonic()

    def _apply(self, e: Any) -> None:
        originator = str(e.originator_id)
        if isinstance(e, Regulation.Event):
            self.suppressions.apply(e)
            if isinstance(e, Regulation.Received) and e.type in DELETES:
                self._erasing[originator] = (e.workspace_id, list(e.subject_hashes))
            if originator in self._erasing and self.sealer is not None:  # on Received, and again once destroyed
                self.sealer.forget(*self._erasing[originator])  # keys the core destroys: never seal with them
            return
        if isinstance(e, Workspace.Created):
            self.workspaces[originator] = e.mutate(None)
            return
        e.mutate(self.workspaces[originator])
        self.keys.apply(originator, e)

    def refresh_if_stale(self, age: float = REFRESH_S) -> None:
        if time.monotonic() - self._refreshed >= age:
            self.refresh()

    def authorise(self, key: str) -> KeyGrant | None:
        """What a key opens, or None (after a refresh, at most one a second). A key revoked in the core stops
        here at the next refresh, at most REFRESH_S later."""
        grant = self.keys.grant(key)
        if grant is None:
            self.refresh_if_stale()
            grant = self.keys.grant(key)
        return None if grant is None or grant.expired(time.time()) else grant

    def allowed_origins(self, workspace_id: str) -> list[str]:
        return list(self.workspaces[workspace_id].allowed_origins) if workspace_id in self.workspaces else []
