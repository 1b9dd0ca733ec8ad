"""Tags, manual tags and segments: define, change and delete them, tag profiles by hand, count,
list and export the profiles a rule matches, and read a tag's enters, exits and members per period.

Commands go through the group committer (the domain's RuleDefinition and ManualTagChange aggregates
do the work, the application saves); reads come from the tag projection. Bodies arrive as the bytes
the client sent (JSON or YAML) and are read here, so every way in reads them alike. Errors are
`domain.errors` kinds: a document or rule that does not hold is `InvalidDocument` (code
`invalid_<what>`, each bad node by path), a taken id a Conflict, an unknown one NotFound.

A definition, a segment query or an export may name the purpose its members are used for: only profiles
with consent for it (their own decision, else the workspace's default; domain/consent.py) are members.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

from domain.application import CustomerData
from domain.consent import Defaults, defaults_as_of
from domain.crm import PURPOSE, PURPOSE_HELP
from domain.errors import Conflict, Invalid, NotFound
from domain.tags import (
    AlreadyDefined, Definition, RuleError, delete_definition, parse_definition, parse_rule, record_manual_tag,
    rule_json, save_definition, split_purpose, time_errors, with_purpose,
)  # fmt: skip
from domain.tags import NotFound as Missing
from domain.times import shown
from services.ports import Committer
from projections.tags import HISTORY_BUCKETS, TagStore
from services.documents import read_document
from services.kpis import Period

EXPORT_PAGE = 2000
KINDS = ("tag", "segment")
HISTORY_DAYS = 30  # a history's default range: the days up to now, as the KPI series


class InvalidDocument(Invalid):
    """A definition, query or manual tag that does not hold; `errors` lists each bad node by path."""

    def __init__(self, what: str, error: RuleError) -> None:
        errors = [{"path": path, "reason": reason} for path, reason in error.errors]
        super().__init__(f"invalid {what}; nothing changed", code="invalid_" + what.replace(" ", "_"), errors=errors)


# Commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Define:
    """A tag or saved segment from a JSON or YAML body; `slug` (a replacement) fills a missing id;
    `create_only` refuses an id that is taken."""

    workspace_id: str
    kind: str
    body: bytes
    content_type: str = ""
    slug: str | None = None
    create_only: bool = False


@dataclass(frozen=True)
class Delete:
    workspace_id: str
    kind: str
    slug: str


@dataclass(frozen=True)
class AddManualTag:
    workspace_id: str
    identifier: str
    body: bytes  # {"tag": ..., "reason": ...}, JSON or YAML
    content_type: str = ""


@dataclass(frozen=True)
class RemoveManualTag:
    workspace_id: str
    identifier: str
    tag: str
    reason: str = ""


# Queries -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuerySegment:
    """An ad-hoc rule from a body {"rule", "limit", "cursor"}."""

    workspace_id: str
    body: bytes
    content_type: str = ""


@dataclass(frozen=True)
class SegmentMembers:
    workspace_id: str
    slug: str
    limit: int = 50
    after: str | None = None


@dataclass(frozen=True)
class ExportSegment:
    """Every member of a saved segment; with `purpose`, only those with consent for it as well."""

    workspace_id: str
    slug: str
    page: int = EXPORT_PAGE
    purpose: str | None = None


@dataclass(frozen=True)
class GetHistory:
    """A tag's enters, exits and members per period of [start, end); None: the HISTORY_DAYS up to the
    platform's clock (the clock the changes' `at` was read from)."""

    workspace_id: str
    kind: str
    slug: str
    start: datetime | None = None
    end: datetime | None = None
    granularity: str = "day"


@dataclass(frozen=True)
class ManualTagged:
    profile_id: str
    tag: str
    action: str


def _checked_times(rule: Any) -> Any:
    errors = time_errors(rule)
    if errors:
        raise RuleError(errors)
    return rule


class TagService:
    """`resolve(workspace, identifier)` is the profile service's: type:value or a profile id to a profile id."""

    def __init__(
        self,
        app: CustomerData,
        tag_store: TagStore,
        committer: Committer,
        resolve: Callable[[str, str], str],
        now: Callable[[], datetime],
    ) -> None:
        self.app, self.tag_store, self.committer, self.resolve, self.now = app, tag_store, committer, resolve, now

    def definitions(self, workspace_id: str, kind: str) -> dict[str, Any]:
        return self.app.definitions.live(workspace_id, kind)

    def tag_rules(self, workspace_id: str) -> dict[str, Any]:
        """Dynamic tags' rules as the log says they are now (for segments that refer to tags)."""
        return {slug: parse_rule(d.rule) for slug, d in self.definitions(workspace_id, "tag").items()}

    def consent(self, workspace_id: str) -> Defaults:
        """The workspace's consent defaults as the log says they are now."""
        return defaults_as_of(self.app.definitions, workspace_id)

    # Definitions --------------------------------------------------------------------------------

    async def define(self, c: Define) -> dict[str, Any]:
        try:
            definition = parse_definition(read_document(c.body, c.content_type), default_id=c.slug)
            _checked_times(definition.rule)
        except RuleError as exc:
            raise InvalidDocument(c.kind, exc) from None
        saved = await self._save(c.workspace_id, c.kind, definition, c.create_only)
        return self.view(c.workspace_id, c.kind, saved)

    async def _save(self, workspace_id: str, kind: str, definition: Definition, create_only: bool) -> Any:
        app = self.app
        try:
            return await self.committer.run(lambda: save_definition(app, workspace_id, kind, definition, create_only))
        except AlreadyDefined:
            raise Conflict(f"{kind} {definition.id!r} exists; replace it to change it") from None
        except RuleError as exc:
            raise InvalidDocument(kind, exc) from None

    async def delete(self, c: Delete) -> int:
        app = self.app
        try:
            return await self.committer.run(lambda: delete_definition(app, c.workspace_id, c.kind, c.slug))
        except Missing:
            raise NotFound(f"no {c.kind} {c.slug!r} in this workspace; the {c.kind}s listing shows them") from None

    def listing(self, workspace_id: str, kind: str) -> list[dict[str, Any]]:
        defs = self.definitions(workspace_id, kind)
        counts = self.tag_store.member_counts(workspace_id) if kind == "tag" else None
        return [self.view(workspace_id, kind, defs[s], counts) for s in sorted(defs)]

    def one(self, workspace_id: str, kind: str, slug: str) -> dict[str, Any]:
        d = self.definitions(workspace_id, kind).get(slug)
        if d is None:
            raise NotFound(f"no {kind} {slug!r} in this workspace; the {kind}s listing shows them")
        return self.view(workspace_id, kind, d)

    def view(self, workspace_id: str, kind: str, d: Any, counts: dict[str, int] | None = None) -> dict[str, Any]:
        """A definition as the API shows it: a tag with its members and backfill, a segment with its count."""
        purpose, rule = split_purpose(d.rule)
        body: dict[str, Any] = {"id": d.slug, "name": d.name, "description": d.description, "purpose": purpose,
                                "rule": rule, "rule_version": d.rule_version}  # fmt: skip
        if kind == "tag":
            counts = counts if counts is not None else self.tag_store.member_counts(workspace_id)
            body["members"] = counts.get(d.slug, 0)
            backfill = self.tag_store.backfill(workspace_id, d.slug)
            if backfill is None or backfill["rule_version"] < d.rule_version:  # the processor has not reached it yet
                backfill = {"rule_version": d.rule_version, "state": "pending", "done": 0, "total": None}
            body["backfill"] = backfill
        else:
            body["count"], _ = self.tag_store.matching(
                workspace_id, parse_rule(d.rule), self.tag_rules(workspace_id), self.now(), self.consent(workspace_id)
            )
        return body

    # Manual tags --------------------------------------------------------------------------------

    async def add_manual_tag(self, c: AddManualTag) -> ManualTagged:
        try:
            body = read_document(c.body, c.content_type)
            if not isinstance(body, dict) or not isinstance(body.get("tag"), str):
                raise RuleError([("tag", "give the tag's id, e.g. {\"tag\": \"beta-tester\"}")])
        except RuleError as exc:
            raise InvalidDocument("manual tag", exc) from None
        profile_id = self.resolve(c.workspace_id, c.identifier)
        await self._manual(c.workspace_id, profile_id, body["tag"], "added", str(body.get("reason") or ""))
        return ManualTagged(profile_id, body["tag"], "added")

    async def remove_manual_tag(self, c: RemoveManualTag) -> ManualTagged:
        profile_id = self.resolve(c.workspace_id, c.identifier)
        held = self.tag_store.members_of(c.workspace_id, [profile_id]).get(profile_id, {}).get(c.tag)
        if held is None or held["kind"] != "manual":
            raise NotFound(f"profile {profile_id} has no manual tag {c.tag!r}")
        try:
            await self._manual(c.workspace_id, profile_id, c.tag, "removed", c.reason)
        except InvalidDocument as exc:  # removing what is not there: nothing to find
            raise NotFound(exc.message) from None
        return ManualTagged(profile_id, c.tag, "removed")

    async def _manual(self, workspace_id: str, profile_id: str, tag: str, action: str, reason: str) -> None:
        app = self.app
        try:
            await self.committer.run(lambda: record_manual_tag(app, workspace_id, profile_id, tag, action, reason))
        except RuleError as exc:
            raise InvalidDocument("manual tag", exc) from None
        except Missing as exc:
            raise NotFound(str(exc)) from None

    def profile_tags(self, workspace_id: str, profile_id: str) -> dict[str, Any]:
        """The `tags` of a profile as the profile API shows them."""
        definitions = self.definitions(workspace_id, "tag")
        held = self.tag_store.members_of(workspace_id, [profile_id]).get(profile_id, {})
        tags = []
        for slug, m in sorted(held.items()):
            d = definitions.get(slug)
            tags.append({"id": slug, "name": d.name if d is not None else slug, "kind": m["kind"],
                         "since": shown(m["since"]),
                         "rule_version": m["rule_version"] if m["kind"] == "dynamic" else None})  # fmt: skip
        return {"tags": tags}

    def tag_changes(self, workspace_id: str, identifier: str, limit: int) -> dict[str, Any]:
        profile_id = self.resolve(workspace_id, identifier)
        return {"profile_id": profile_id, "changes": self.tag_store.changes_of(workspace_id, profile_id, limit)}

    def history(self, q: GetHistory) -> dict[str, Any]:
        """Per period: enters and exits decided in it and the members at its end. Segments have none: they are
        evaluated when read and record no enters or exits, so their past membership is not known."""
        if q.granularity not in HISTORY_BUCKETS:
            raise Invalid(f"granularity must be one of {', '.join(HISTORY_BUCKETS)}", code="bad_request")
        end = q.end or self.now()
        period = Period(q.start or end - timedelta(days=HISTORY_DAYS), end)
        if q.slug not in self.definitions(q.workspace_id, q.kind):
            raise NotFound(f"no {q.kind} {q.slug!r} in this workspace; the {q.kind}s listing shows them")
        if q.kind == "segment":
            raise Invalid(f"segment {q.slug!r} has no history: a segment is evaluated when it is read and records no "
                          "enters or exits; define a tag with the same rule to record them from now on",
                          code="segment_has_no_history")  # fmt: skip
        rows = self.tag_store.history(q.workspace_id, q.slug, period.start, period.end, q.granularity)
        return {"id": q.slug, "kind": q.kind, "from": shown(period.start), "to": shown(period.end),
                "granularity": q.granularity, "series": rows}  # fmt: skip

    # Segments -----------------------------------------------------------------------------------

    def query(self, q: QuerySegment) -> dict[str, Any]:
        try:
            body = read_document(q.body, q.content_type)
            if not isinstance(body, dict) or "rule" not in body:
                raise RuleError([("rule", "give the rule to match, e.g. {\"rule\": {\"tag\": \"vip\"}}")])
            unknown = sorted(set(body) - {"rule", "purpose", "limit", "cursor"})
            if unknown:
                raise RuleError([(unknown[0], "unknown field; a query has rule, purpose, limit and cursor")])
            limit = body.get("limit", 50)
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
                raise RuleError([("limit", "give a whole number from 1 to 1000")])
            rule = _checked_times(parse_rule(body["rule"]))
            rule = _serving(body.get("purpose"), rule)
        except RuleError as exc:
            raise InvalidDocument("segment query", exc) from None
        cursor = body.get("cursor")
        return self._members(q.workspace_id, rule, limit, cursor if isinstance(cursor, str) else None)

    def members(self, q: SegmentMembers) -> dict[str, Any]:
        return self._members(q.workspace_id, self._saved(q.workspace_id, q.slug), q.limit, q.after)

    def export(self, q: ExportSegment) -> Iterator[list[dict[str, Any]]]:
        """Every member of a saved segment, page by page, at one clock reading. The segment is looked up
        now (NotFound before anything is streamed); the pages are read as they are taken."""
        try:
            rule = _serving(q.purpose, self._saved(q.workspace_id, q.slug), "purpose")
        except RuleError as exc:
            raise InvalidDocument("export", exc) from None
        inline, now, consent = self.tag_rules(q.workspace_id), self.now(), self.consent(q.workspace_id)

        def pages() -> Iterator[list[dict[str, Any]]]:
            after = ""
            while True:
                _, ids = self.tag_store.matching(q.workspace_id, rule, inline, now, consent, after=after, limit=q.page)
                yield [_member(d) for d in self.tag_store.profile_docs(q.workspace_id, ids)]
                if len(ids) < q.page:
                    return
                after = ids[-1]

        return pages()

    def _saved(self, workspace_id: str, slug: str) -> Any:
        d = self.definitions(workspace_id, "segment").get(slug)
        if d is None:
            raise NotFound(f"no segment {slug!r} in this workspace; the segments listing shows them")
        return parse_rule(d.rule)

    def _members(self, workspace_id: str, rule: Any, limit: int, cursor: str | None) -> dict[str, Any]:
        count, ids = self.tag_store.matching(
            workspace_id, rule, self.tag_rules(workspace_id), self.now(), self.consent(workspace_id),
            after=cursor or "", limit=limit + 1,
        )  # fmt: skip
        page = ids[:limit]
        docs = self.tag_store.profile_docs(workspace_id, page)
        return {"count": count, "members": [_member(d) for d in docs],
                "next_cursor": page[-1] if len(ids) > limit else None}  # fmt: skip


def _serving(purpose: Any, rule: Any, path: str = "purpose") -> Any:
    """The rule of members used for `purpose` (None: the rule as it is): consent for it is needed as well."""
    if purpose is None:
        return rule
    if not isinstance(purpose, str) or not PURPOSE.match(purpose):
        raise RuleError([(path, f"{purpose!r} is not a purpose; {PURPOSE_HELP}")])
    return parse_rule(with_purpose(purpose, rule_json(rule)))


def _member(doc: dict[str, Any]) -> dict[str, Any]:
    return {"profile_id": doc["profile_id"], "identifiers": doc["identifiers"], "traits": doc["traits"]}
