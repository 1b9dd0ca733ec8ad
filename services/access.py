"""Which workspace a key opens, and for what (keys are granted in the log: Workspace.KeyIssued)."""

from __future__ import annotations

from domain.application import CustomerData
from domain.directory import Directory


class Access:
    def __init__(self, app: CustomerData | Directory) -> None:
        self.app = app

    def authorise_write(self, key: str) -> str | None:
        return self.app.authorise(key, "write")

    def authorise_read(self, key: str) -> str | None:
        return self.app.authorise(key, "read")
