"""Regulations: erase or suppress a person (domain/regulations.py), through the event log's single writer.

`request` checks the identifiers, runs the regulation as a write command (the
resolver's thread, between two pages of intake) and answers what it did;
`get` shows a regulation's progress: received, its keys destroyed, and whether
every projection has applied it (the person's rows are then gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from domain.application import CustomerData, RegulationError
from domain.errors import Conflict, Invalid, NotFound
from domain.identity import normalise_identifier, split_identifier
from domain.regulations import DELETES, TYPES, regulation_id
from services.ports import Committer

MAX_IDENTIFIERS = 100


@dataclass(frozen=True)
class RequestRegulation:
    workspace_id: str
    type: str
    identifiers: tuple[str, ...]


class RegulationService:
    def __init__(self, app: CustomerData, committer: Committer, applied: Callable[[], dict[str, int]]) -> None:
        """`applied`: each projection's applied log position (the platform's status)."""
        self.app, self.committer, self.applied = app, committer, applied

    def _identifiers(self, workspace_id: str, given: tuple[str, ...]) -> list[str]:
        if not given or len(given) > MAX_IDENTIFIERS:
            raise Invalid(f"identifiers: give 1 to {MAX_IDENTIFIERS} identifiers of the person, as type:value "
                          "(e.g. email:ann@example.com) or a profile id", code="bad_request")  # fmt: skip
        types = self.app.rules_for(workspace_id).types
        out = []
        for text in given:
            kind, value = split_identifier(text.strip(), types)
            if not value.strip():
                raise Invalid(f"identifiers: an identifier has no value after {kind!r}", code="bad_request")
            if kind == "profile_id":
                out.append(f"profile_id:{value.strip().lower()}")
            else:
                out.append(normalise_identifier(f"{kind}:{value}"))
        return list(dict.fromkeys(out))

    async def request(self, c: RequestRegulation) -> dict[str, Any]:
        if c.type not in TYPES:
            raise Invalid(f"type must be one of {', '.join(TYPES)}", code="bad_request")
        idents = self._identifiers(c.workspace_id, c.identifiers)
        app = self.app
        try:
            regulation = await self.committer.run(lambda: app.regulate(c.workspace_id, c.type, idents))
        except RegulationError as exc:
            raise Conflict(str(exc), code=exc.code) from None
        return self._document(str(regulation.id))

    def get(self, workspace_id: str, rid: str) -> dict[str, Any]:
        found = regulation_id(rid)
        regulation = self.app.regulations.get(str(found)) if found else None
        if regulation is None or regulation.workspace_id != workspace_id:
            raise NotFound(f"no regulation {rid!r} in this workspace")
        return self._document(str(found))

    def _document(self, rid: str) -> dict[str, Any]:
        regulation = self.app.regulations[rid]
        doc = regulation.to_json()
        position = self.app.regulation_positions.get(rid, 0)
        behind = sorted(name for name, at in self.applied().items() if at < position)
        deleting = regulation.type in DELETES
        if deleting and regulation.keys_destroyed is None:
            status, note = "keys_not_destroyed", "the key store failed during the delete: send the regulation again"
        elif deleting and behind:
            status, note = "erasing", f"projections still to apply it: {', '.join(behind)}"
        else:
            status, note = "done", ""
        doc.update({"status": status, "position": position, "projections_behind": behind})
        if note:
            doc["note"] = note
        return doc
