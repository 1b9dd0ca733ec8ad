"""Webhook sources: a tool's payloads through the workspace's mapping into calls for the intake, replays
of the deliveries kept as dead letters, and the mappings themselves (domain/webhooks.py).

Every delivery that reaches the service is in the log or in the dead-letter store afterwards, and the
answer says which. Errors are `domain.errors` kinds with codes of their own (`unknown_source`,
`webhook_unreadable`, `invalid_mapping`, ...); `extra` holds the counts the answer carries beside them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from domain.application import CustomerData
from domain.errors import CdpError, Invalid, NotFound, Unavailable
from domain.webhooks import (
    SOURCE, MappingError, NoMapping, PayloadError, Unmapped, WebhookMapping, apply, delete_mapping, load_document,
    parse_mapping, save_mapping,
)  # fmt: skip
from services.ports import Committer, DeadLetters, Intake

DELIVERIES = Counter(
    "cdp_webhook_deliveries", "Webhook deliveries by source and outcome (stored, duplicate, dead_lettered, refused)",
    ["source", "outcome"],
)  # fmt: skip
MAX_PAYLOADS = 1000  # elements of a JSON array delivered at once (email tools batch their events)
RAW_CODES = ("unknown_source", "webhook_unreadable", "webhook_unmapped", "webhook_invalid")  # letters holding a payload


def _with(error: CdpError, **extra: Any) -> CdpError:
    error.extra = extra  # type: ignore[attr-defined]  # read by the HTTP adapters (api/errors.py)
    return error


class Unreadable(Exception):
    pass


def read_payloads(body: bytes, content_type: str) -> list[Any]:
    """The payloads of a delivery: one JSON object, a JSON array of them, or a form-encoded body."""
    if "application/x-www-form-urlencoded" in content_type.lower():
        try:
            pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Unreadable(f"not a form-encoded body: {exc}") from None
        return [{k: v[0] if len(v) == 1 else v for k, v in pairs.items()}]
    if not body.strip():
        raise Unreadable("the body is empty; a webhook delivers a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unreadable(f"not JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        if not data:
            raise Unreadable("an empty JSON array holds no payload")
        if len(data) > MAX_PAYLOADS:
            raise Unreadable(f"{len(data)} payloads in one array, above the limit of {MAX_PAYLOADS}")
        return data
    raise Unreadable(f"a webhook payload is a JSON object, not {type(data).__name__}")


@dataclass
class Failure:
    index: int
    code: str
    field: str
    reason: str
    body: bytes

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "field": self.field, "reason": self.reason}

    def text(self) -> str:
        return self.reason if self.field.startswith("(") else f"{self.field}: {self.reason}"


@dataclass
class Mapped:
    calls: list[dict[str, Any]]
    owners: list[int]  # for each call, the payload it came from
    failures: list[Failure]
    event_types: list[str | None]


def map_payloads(mapping: Any, payloads: list[Any], raw: bytes, source: str) -> Mapped:
    """Every payload through the mapping; those it cannot map become failures with their own body."""
    out = Mapped([], [], [], [])
    for index, payload in enumerate(payloads):
        body = raw if len(payloads) == 1 else orjson.dumps(payload)
        try:
            mapped = apply(mapping, payload, source)
        except Unmapped as exc:
            out.failures.append(Failure(index, "webhook_unmapped", "(event type)", exc.reason, body))
            out.event_types.append(exc.event_type)
            continue
        except PayloadError as exc:
            code = "webhook_unreadable" if exc.field == "(body)" else "webhook_invalid"
            out.failures.append(Failure(index, code, exc.field, exc.reason, body))
            out.event_types.append(exc.event_type)
            continue
        out.calls += mapped.calls
        out.owners += [index] * len(mapped.calls)
        out.event_types.append(mapped.event_type)
    return out


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = Field(None, max_length=1000, description="the dead letters to replay (default: all open)")
    limit: int = Field(1000, ge=1, le=1000)


# Commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receive:
    workspace_id: str
    source: str
    body: bytes
    content_type: str
    received_at: datetime


@dataclass(frozen=True)
class Replay:
    workspace_id: str
    source: str
    wanted: ReplayRequest


@dataclass(frozen=True)
class PutMapping:
    workspace_id: str
    source: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Delivery:
    """What a delivery became; `refusal` (code, message) when nothing of it was accepted."""

    result: dict[str, Any]
    refusal: tuple[str, str] | None


def view(stored: WebhookMapping, changed: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": stored.source, "version": stored.mapping_version, "url": f"/v1/webhooks/{stored.source}",
        "description": stored.mapping.get("description", ""), "event_types": sorted(stored.mapping.get("events", {})),
        "mapping": stored.mapping,
    }  # fmt: skip
    if changed is not None:
        body["changed"] = changed
    return body


def checked(source: str) -> str:
    if not SOURCE.match(source):
        raise Invalid(f"{source!r} is not a source name: 1-63 lower-case letters, digits, - or _ (e.g. stripe)",
                      code="invalid_source")  # fmt: skip
    return source


class WebhookService:
    def __init__(self, app: CustomerData, committer: Committer, intake: Intake, dead_letters: DeadLetters) -> None:
        self.app, self.committer, self.intake, self.dead_letters = app, committer, intake, dead_letters

    async def _keep(self, workspace_id: str, label: str, body: bytes, code: str, reason: str) -> None:
        await asyncio.to_thread(self.intake.unreadable, workspace_id, label, body, code, reason)

    async def receive(self, c: Receive) -> Delivery:
        """Map a delivery and record its calls; what cannot be mapped or recorded is kept as dead letters."""
        source, label = c.source, f"webhook:{c.source[:63]}"
        mapping = self.app.webhook_mappings.model(c.workspace_id, source) if SOURCE.match(source) else None
        if mapping is None:
            reason = (f"no mapping for webhook source {source!r} in this workspace; install one (docs/webhooks.md); "
                      "the tool's retries are then stored, or a replay of the source stores the ones kept here")  # fmt: skip
            await self._keep(c.workspace_id, label, c.body, "unknown_source", reason)
            DELIVERIES.labels("unknown", "dead_lettered").inc()
            raise _with(NotFound(reason, code="unknown_source"), dead_lettered=1, stored=0)
        try:
            payloads = read_payloads(c.body, c.content_type)
        except Unreadable as exc:
            await self._keep(c.workspace_id, label, c.body, "webhook_unreadable", str(exc))
            DELIVERIES.labels(source, "dead_lettered").inc()
            raise _with(Invalid(f"{exc}; the body is kept in the dead-letter store", code="webhook_unreadable"),
                        dead_lettered=1, stored=0) from None  # fmt: skip
        mapped = map_payloads(mapping, payloads, c.body, source)
        for failure in mapped.failures:
            await self._keep(c.workspace_id, label, failure.body, failure.code, failure.text())
        try:
            outcome = (await self.intake.take(c.workspace_id, mapped.calls, source=label, received_at=c.received_at)
                       if mapped.calls else None)  # fmt: skip
        except Unavailable:
            DELIVERIES.labels(source, "refused").inc()
            raise Unavailable("the event store is unavailable; no call of this delivery was stored; retry later",
                              code="store_unavailable") from None  # fmt: skip
        result: dict[str, Any] = {"source": source, "payloads": len(payloads), "calls": len(mapped.calls),
                                  "event_types": mapped.event_types}  # fmt: skip
        result |= outcome.to_json() if outcome is not None else {"accepted": 0, "stored": 0, "duplicates": 0,
                                                                  "rejected": []}  # fmt: skip
        result["dead_lettered"] = len(mapped.failures) + len({r["index"] for r in result["rejected"]})
        result["errors"] = [f.to_json() for f in mapped.failures]
        result["success"] = result["accepted"] > 0 and result["dead_lettered"] == 0
        for name, count in (("stored", result["stored"]), ("duplicate", result["duplicates"]),
                            ("dead_lettered", result["dead_lettered"])):  # fmt: skip
            if count:
                DELIVERIES.labels(source, name).inc(count)
        if result["accepted"] > 0:
            return Delivery(result, None)
        if mapped.failures:
            first = mapped.failures[0]
            return Delivery(result, (first.code, first.text() + "; the payload is kept in the dead-letter store"))
        call = result["rejected"][0]
        return Delivery(result, ("invalid_event", f"the mapped call is invalid: {call['field']}: {call['reason']}; "
                                                  "it is kept in the dead-letter store"))  # fmt: skip

    async def replay(self, c: Replay) -> dict[str, Any]:
        """Map the source's dead-lettered payloads again and record those that map now."""
        mapping = self.app.webhook_mappings.model(c.workspace_id, checked(c.source))
        if mapping is None:
            raise NotFound(f"no mapping for webhook source {c.source!r}; install one first", code="unknown_source")
        label = f"webhook:{c.source}"
        letters = await asyncio.to_thread(
            self.dead_letters.list, c.workspace_id, source=label, ids=c.wanted.ids, limit=c.wanted.limit
        )
        letters = [x for x in letters if x.code in RAW_CODES]
        calls: list[dict[str, Any]] = []
        spans: list[tuple[Any, int, int]] = []
        results: list[dict[str, Any]] = []
        for letter in letters:
            try:
                failures = []
                mapped = map_payloads(mapping, read_payloads(letter.body, "application/json"), letter.body, c.source)
                failures = mapped.failures
            except Unreadable as exc:
                failures = [Failure(0, "webhook_unreadable", "(body)", str(exc), letter.body)]
            if failures:
                f = failures[0]
                await asyncio.to_thread(self.dead_letters.refused_again, letter.id, f.code, f.field, f.reason)
                results.append({"id": letter.id, "outcome": "refused", "code": f.code, "field": f.field,
                                "reason": f.reason})  # fmt: skip
            else:
                spans.append((letter, len(calls), len(calls) + len(mapped.calls)))
                calls += mapped.calls
        try:
            outcome = await self.intake.take(c.workspace_id, calls, source=label) if calls else None
        except Unavailable:
            raise Unavailable("the event store is unavailable; nothing was replayed", code="store_unavailable") from None
        refused = {r.index for r in outcome.rejected} if outcome is not None else set()
        for letter, start, end in spans:
            bad = len([i for i in range(start, end) if i in refused])
            how = "stored" if bad == 0 else f"stored; {bad} of its {end - start} calls refused (kept as dead letters)"
            await asyncio.to_thread(self.dead_letters.replayed, letter.id, how)
            results.append({"id": letter.id, "outcome": how})
        return {
            "replayed": len(spans), "refused": len(letters) - len(spans),
            "stored": outcome.stored if outcome else 0, "duplicates": outcome.duplicates if outcome else 0,
            "rejected": [r.to_json() for r in outcome.rejected] if outcome else [],
            "results": sorted(results, key=lambda r: r["id"]),
        }  # fmt: skip

    # Mappings -----------------------------------------------------------------------------------

    async def put_mapping(self, c: PutMapping) -> tuple[dict[str, Any], bool]:
        """Install or change a mapping; the view, and whether the source is new."""
        source = checked(c.source)
        try:
            document, text = load_document(c.body, c.content_type)
            mapping = parse_mapping(document, source)
        except MappingError as exc:
            errors = [{"field": path, "reason": reason} for path, reason in exc.errors]
            what = "cannot be read" if exc.code == "unreadable_mapping" else "is invalid"
            raise Invalid(f"the mapping {what}; nothing changed: {errors[0]['field']}: {errors[0]['reason']}",
                          code=exc.code, errors=errors) from None  # fmt: skip
        created = self.app.webhook_mappings.get(c.workspace_id, source) is None
        app = self.app
        stored, changed = await self.committer.run(lambda: save_mapping(app, c.workspace_id, source, mapping, text))
        return view(stored, changed), created

    def mapping(self, workspace_id: str, source: str) -> WebhookMapping:
        stored = self.app.webhook_mappings.get(workspace_id, checked(source))
        if stored is None:
            raise NotFound(f"no mapping for webhook source {source!r}; the webhooks listing shows the installed ones",
                           code="unknown_source")  # fmt: skip
        return stored

    async def delete_mapping(self, workspace_id: str, source: str) -> int:
        checked(source)
        app = self.app
        try:
            return await self.committer.run(lambda: delete_mapping(app, workspace_id, source))  # type: ignore[no-any-return]
        except NoMapping as exc:
            raise NotFound(str(exc), code="unknown_source") from None

    def sources(self, workspace_id: str) -> list[dict[str, Any]]:
        live = self.app.webhook_mappings.live(workspace_id)
        return [{k: v for k, v in view(live[s]).items() if k != "mapping"} for s in sorted(live)]
