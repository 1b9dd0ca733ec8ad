"""Tags in real time: the `tags` processor, timers for time-based changes, and backfills.

`TagEngine` owns membership. Whatever asks it to evaluate (a batch of the log, a
timer that fell due, a backfill page) goes through `_apply`, under one lock: the
profiles are evaluated against every rule of the workspace with one ClickHouse
query, the answer is compared with the stored membership, and each difference is
published on `cdp.tag-changes` (before it is written, so a failure retries it:
at least once, keyed by profile_id, tag_id, position and change), then recorded
in `tag_changes` and `tag_membership`. Windows are measured against the engine's
clock, which tests control.

What the engine decides depends on more than the log: on where the log was cut
into pages, on when timers fired and backfill pages ran between them, and on the
clock. So each step (a page of the log, a tick that found timers due, a backfill
page) reads the clock once, and once it has applied it is recorded in
`tag_steps` with that reading. A rebuild follows the recorded steps (`replay`),
which reproduces every enter and exit with its position, cause and time.

Consent: a tag that declares a purpose holds only profiles with consent for it (domain/consent.py). A
profile that leaves such a tag because it has no consent leaves with cause `consent`, and one that
enters because its consent (or the workspace's default) changed enters with cause `consent`. The
defaults are a definition of kind `consent` in the log: when they change, the members of every tag
that reads a purpose whose default changed are evaluated again, in that page of the log.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Protocol
from uuid import UUID

import orjson

from domain.consent import BUILT_IN, CONSENT_CHANGED, KIND as CONSENT_KIND, Defaults, parse_defaults
from domain.crm import purpose_key
from domain.tags import ConsentCondition, consent_purposes, parse_rule, purpose_of, scores_read
from domain.times import UTC, shown
from projections.tags import EPOCH, Step, TagStore, pages
from streams.messages import (
    DefinitionMessage, ErasureMessage, EventMessage, IdentityMessage, ManualTagMessage, Message, Outgoing,
    PredictionMessage, RulesMessage,
)  # fmt: skip

log = logging.getLogger(__name__)

TAG_CHANGES_TOPIC = "cdp.tag-changes"
# When several causes touch a profile in one batch, the strongest names the change.
_CAUSE_RANK = {"event": 0, "time": 1, "score": 1, "consent": 2, "split": 3, "merge": 4, "rule": 5, "manual": 6,
               "deleted": 7, "erasure": 8}
# What changed a profile's consent for a purpose in a step: its own decision, or the workspace's default.
ConsentNews = Mapping[str, Mapping[str, str]]  # profile → purpose → "event" | "default"


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests, replays)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


@dataclass
class TagDef:
    slug: str
    name: str
    version: int
    rule: Any

    @property
    def purpose(self) -> str | None:
        """The purpose the tag declares: only profiles with consent for it are members."""
        return purpose_of(self.rule)


@dataclass
class _Job:
    """A backfill: one tag version evaluated for every profile, page by page after `after`."""

    workspace_id: str
    slug: str
    version: int
    position: int  # of the definition: the changes it makes carry it
    total: int
    started: datetime
    after: str = ""
    done: int = 0


@dataclass
class _Batch:
    """What one evaluation decided, written together."""

    messages: list[Outgoing]
    changes: list[list[Any]]
    membership: list[list[Any]]
    timers: list[list[Any]]


class TagEngine:
    def __init__(
        self,
        store: TagStore,
        clock: Clock,
        publish: Callable[[list[Outgoing]], None] | None = None,
        backfill_in_thread: bool = False,
        page_size: int = 5000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.publish = publish
        self.page_size = page_size
        self.lock = threading.RLock()
        # Held around timer ticks and backfill pages: the pipeline's lock, so that neither runs between the
        # processors of one page (after the profiles of a page were written, before its tags were evaluated).
        self.gate: Any = contextlib.nullcontext()
        self.position = 0  # the last log position the processor applied (timer changes carry it)
        self._now: datetime | None = None  # the clock reading of the step under way
        self._seq = store.last_step()
        # Replays: the backfills whose pages were recorded (by workspace, tag, version) wait for those steps
        # instead of running at once.
        # A backfill is one tag version from one definition's position: the same version can be backfilled again
        # from a later definition (of a tag it refers to).
        self.deferred: dict[tuple[str, str, int, int], _Job] | None = None
        self.deferred_keys: set[tuple[str, str, int, int]] = set()
        self.defs: dict[str, dict[str, TagDef]] = {}
        self.consent: dict[str, Defaults] = {}  # each workspace's consent defaults, as the log last set them
        for ws, kind, slug, version, name, rule, deleted in store.latest_definitions():
            if kind == "tag" and not deleted:
                self.defs.setdefault(ws, {})[slug] = TagDef(slug, name, version, parse_rule(orjson.loads(rule)))
            elif kind == CONSENT_KIND and not deleted:
                self.consent[ws] = parse_defaults(orjson.loads(rule)["defaults"], version)
        # Steps are recorded once there is anything to tag (a tag defined, a manual tag): before that,
        # evaluations change nothing, however the log is paged.
        self.recording = self._seq > 0 or bool(self.defs)
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._worker: threading.Thread | None = None
        self.backfill_error: BaseException | None = None
        if backfill_in_thread:
            self._worker = threading.Thread(target=self._work, name="tag-backfill", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(10)

    def rules(self, workspace_id: str) -> dict[str, Any]:
        return {slug: d.rule for slug, d in self.defs.get(workspace_id, {}).items()}

    def defaults(self, workspace_id: str) -> Defaults:
        """The workspace's consent defaults (the built-in ones until it sets its own)."""
        return self.consent.get(workspace_id) or Defaults(BUILT_IN)

    # Steps -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The time evaluations use: the step's clock reading (the clock's, outside a step)."""
        return self._now if self._now is not None else self.clock.now()

    @contextlib.contextmanager
    def step(self) -> Any:
        """One step: the clock is read once, at its start. Yields whether this is the outermost step
        (a backfill run inline, inside a page of the log, is part of that page's step)."""
        outermost = self._now is None
        if outermost:
            self._now = self.clock.now()
        try:
            yield outermost
        finally:
            if outermost:
                self._now = None

    def record(self, kind: str, position: int, job: _Job | None = None, after: str = "") -> None:
        """Record the step under way, which has applied (call inside `step`)."""
        if not self.recording:
            return
        self._seq += 1
        ws, slug, version = (job.workspace_id, job.slug, job.version) if job else ("", "", 0)
        self.store.record_step([self._seq, kind, position, self.now(), ws, slug, version, after])

    def replay(self, step: Step) -> None:
        """Apply a recorded tick or backfill page again, at its clock reading (pages go through the processor)."""
        if step.kind == "tick":
            self.tick()
        elif step.kind == "backfill":
            assert self.deferred is not None, "backfill pages are replayed only when backfills are deferred"
            job = self.deferred.get((step.workspace_id, step.tag_id, step.rule_version, step.position))
            if job is None:
                raise LookupError(f"recorded backfill step {step.seq} of tag {step.tag_id!r} version "
                                  f"{step.rule_version} has no backfill scheduled in the replay")  # fmt: skip
            job.after = step.after
            if self.backfill_step(job):
                del self.deferred[(job.workspace_id, job.slug, job.version, job.position)]
        else:
            raise ValueError(f"step {step.seq}: {step.kind!r} steps are replayed by the tags processor")

    # Evaluation ------------------------------------------------------------------------------

    def apply(
        self, workspace_id: str, pids: Iterable[str], position: int, causes: dict[str, str] | str,
        only: set[str] | None = None, consent: ConsentNews | None = None,
    ) -> int:  # fmt: skip
        """Re-evaluate `pids` against the workspace's tags (or `only` these); returns the changes made.
        `consent` says whose consent this step changed, for the causes of the changes it makes."""
        ids = sorted(set(pids))
        if not ids:
            return 0
        with self.lock:
            defs = self.defs.get(workspace_id, {})
            target = {s: d for s, d in defs.items() if only is None or s in only}
            now = self.now()
            # Consent of each declared purpose on its own too (not a slug: no tag has the name), to tell who
            # leaves for want of consent.
            gates = {f"consent:{p}": ConsentCondition(consent=p) for p in {d.purpose for d in target.values()} if p}
            evaluation = self.store.evaluate(workspace_id, {**{s: d.rule for s, d in target.items()}, **gates},
                                             self.rules(workspace_id), now, ids, self.defaults(workspace_id))  # fmt: skip
            current = self.store.members_of(workspace_id, ids)
            timers = self.store.timers_of(workspace_id, ids)
            out = _Batch([], [], [], [])
            for pid in ids:
                cause = causes if isinstance(causes, str) else causes.get(pid, "event")
                result = evaluation.results.get(pid)
                had = current.get(pid, {})
                if result is None:  # merged away (or never projected): leaves every tag it had
                    for slug, m in had.items():
                        self._change(out, workspace_id, pid, slug, m["kind"], "exited", m["rule_version"], position,
                                     now, "merge" if cause == "event" else cause)  # fmt: skip
                    for (tpid, slug) in [k for k in timers if k[0] == pid]:
                        out.timers.append([workspace_id, slug, UUID(pid), EPOCH])
                    continue
                news = (consent or {}).get(pid, {})
                for slug, d in target.items():
                    member, due = result[slug]
                    before = had.get(slug)
                    if before is not None and before["kind"] == "manual":
                        continue  # a manual tag of the same name: left alone
                    if member and before is None:
                        why, reason = _entered(d, news, cause)
                        self._change(out, workspace_id, pid, slug, "dynamic", "entered", d.version, position, now, why,
                                     reason)  # fmt: skip
                    elif member and before is not None and before["rule_version"] != d.version:
                        out.membership.append([workspace_id, slug, UUID(pid), "dynamic", d.version, before["since"],
                                               position, 0])  # fmt: skip
                    elif not member and before is not None:
                        consented = d.purpose is None or result[f"consent:{d.purpose}"][0]
                        why, reason = _exited(d, news, cause, consented)
                        self._change(out, workspace_id, pid, slug, "dynamic", "exited", d.version, position, now, why,
                                     reason)  # fmt: skip
                    if timers.get((pid, slug)) != due:
                        out.timers.append([workspace_id, slug, UUID(pid), due or EPOCH])
                if only is None:  # tags deleted since: no more timers for them
                    for (tpid, slug) in timers:
                        if tpid == pid and slug not in target:
                            out.timers.append([workspace_id, slug, UUID(pid), EPOCH])
            self._write(out)
            return len(out.changes)

    def _change(
        self, out: _Batch, ws: str, pid: str, slug: str, kind: str, change: str, version: int, position: int,
        now: datetime, cause: str, reason: str = "",
    ) -> None:  # fmt: skip
        d = self.defs.get(ws, {}).get(slug)
        if not reason:
            reason = f"rule version {version}" if kind == "dynamic" else ""
        out.messages.append({
            "workspace_id": ws, "profile_id": pid, "tag_id": slug, "tag_name": d.name if d else slug, "kind": kind,
            "change": change, "rule_version": version, "position": position, "at": shown(now), "cause": cause,
            "reason": reason,
        })  # fmt: skip
        out.changes.append([ws, slug, UUID(pid), change, kind, now, version, position, cause, reason])
        out.membership.append([ws, slug, UUID(pid), kind, version, now, position, 1 if change == "exited" else 0])

    def erase(self, workspace_id: str, profile_ids: list[str], position: int) -> None:
        """A regulation erased these profiles: they leave every tag (`exited`, cause `erasure`, published
        first), then their membership, changes and timers are deleted."""
        with self.lock:
            now = self.now()
            out = _Batch([], [], [], [])
            for pid, tags in self.store.members_of(workspace_id, profile_ids).items():
                for slug, m in tags.items():
                    self._change(out, workspace_id, pid, slug, m["kind"], "exited", m["rule_version"], position, now,
                                 "erasure")  # fmt: skip
            if self.publish is not None and out.messages:
                self.publish(out.messages)
            self.store.erase(workspace_id, profile_ids)

    def _write(self, out: _Batch) -> None:
        if self.publish is not None and out.messages:
            self.publish(out.messages)  # before writing: a failure retries the whole batch
        self.store.insert_changes(out.changes)
        self.store.write_membership(out.membership)
        self.store.write_timers(out.timers)

    # Manual tags -----------------------------------------------------------------------------

    def manual(self, workspace_id: str, ops: list[tuple[str, str, str, str]], position: int) -> None:
        """Apply ("added" | "removed" | "moved", profile, tag or survivor, reason) in order."""
        with self.lock:
            pids = {op[1] for op in ops} | {op[2] for op in ops if op[0] == "moved"}
            current = self.store.members_of(workspace_id, pids)
            manual = {pid: {s for s, m in tags.items() if m["kind"] == "manual"} for pid, tags in current.items()}
            if any(op[0] != "moved" for op in ops) or any(manual.values()):
                # From this step on, what the engine decides depends on the paging. A merge of profiles without
                # manual tags decides nothing (and may later be erased: a rebuild would not see it start here).
                self.recording = True
            now = self.now()
            out = _Batch([], [], [], [])
            for action, pid, arg, reason in ops:
                if action == "moved":  # a merge: the survivor takes the absorbed profile's manual tags
                    for slug in sorted(manual.get(pid, set()) - manual.setdefault(arg, set())):
                        if slug in current.get(arg, {}) and current[arg][slug]["kind"] == "dynamic":
                            continue
                        manual[arg].add(slug)
                        self._change(out, workspace_id, arg, slug, "manual", "entered", 0, position, now, "merge",
                                     f"came with merged profile {pid}")  # fmt: skip
                    continue
                held = manual.setdefault(pid, set())
                if action == "added" and arg not in held:
                    held.add(arg)
                    self._change(out, workspace_id, pid, arg, "manual", "entered", 0, position, now, "manual", reason)
                elif action == "removed" and arg in held:
                    held.discard(arg)
                    self._change(out, workspace_id, pid, arg, "manual", "exited", 0, position, now, "manual", reason)
            self._write(out)

    # Definitions and backfills -----------------------------------------------------------------

    def define(self, workspace_id: str, slug: str, name: str, version: int, rule: Any, position: int) -> None:
        """A tag was defined or changed: from now on live evaluation uses it; every profile is evaluated again."""
        with self.lock:
            self.recording = True  # from this step on, what the engine decides depends on the paging
            self.defs.setdefault(workspace_id, {})[slug] = TagDef(slug, name, version, rule)
            jobs = [slug] + self._dependents(workspace_id, slug)
            for tag in jobs:
                self._schedule(workspace_id, tag, position)

    def delete(self, workspace_id: str, slug: str, version: int, position: int) -> None:
        with self.lock:
            d = self.defs.get(workspace_id, {}).pop(slug, None)
            if d is None:
                return
            now = self.now()
            out = _Batch([], [], [], [])
            members = self.store.members_of(workspace_id, self.store.members_of_tag(workspace_id, slug))
            for pid, tags in members.items():
                m = tags.get(slug)
                if m is not None and m["kind"] == "dynamic":
                    self._change(out, workspace_id, pid, slug, "dynamic", "exited", version, position, now, "deleted",
                                 f"tag deleted (version {version})")  # fmt: skip
            self._write(out)
            for tag in self._dependents(workspace_id, slug, rules={**self.rules(workspace_id), slug: d.rule}):
                self._schedule(workspace_id, tag, position)

    def set_consent(self, workspace_id: str, defaults: Defaults, position: int) -> None:
        """New consent defaults: every profile is evaluated again against the tags that read a purpose whose
        default changed (and the tags that refer to them)."""
        with self.lock:
            before = self.defaults(workspace_id)
            self.consent[workspace_id] = defaults
            defs = self.defs.get(workspace_id, {})
            changed = {p for d in defs.values() for p in consent_purposes(d.rule)
                       if before.granted(p) != defaults.granted(p)}  # fmt: skip
            affected = self._with_dependents(workspace_id,
                                             {s for s, d in defs.items() if consent_purposes(d.rule) & changed})
            if not affected:
                return
            news = {p: "default" for p in changed}
            after = ""
            while page := self.store.profile_page(workspace_id, after, self.page_size):
                self.apply(workspace_id, page, position, "consent", only=affected, consent={pid: news for pid in page})
                after = page[-1]

    def reading_scores(self, workspace_id: str) -> set[str]:
        """The tags whose rules read a prediction score, and the tags that refer to them."""
        return self._with_dependents(workspace_id,
                                     {s for s, d in self.defs.get(workspace_id, {}).items() if scores_read(d.rule)})

    def _with_dependents(self, workspace_id: str, slugs: set[str]) -> set[str]:
        """`slugs` and every tag that refers to one of them."""
        return slugs | {t for s in slugs for t in self._dependents(workspace_id, s)}

    def _dependents(self, workspace_id: str, slug: str, rules: dict[str, Any] | None = None) -> list[str]:
        from domain.tags import _reaches

        rules = rules if rules is not None else self.rules(workspace_id)
        return sorted(s for s in self.defs.get(workspace_id, {}) if s != slug and _reaches(rules, s, slug))

    def _schedule(self, workspace_id: str, slug: str, position: int) -> None:
        d = self.defs[workspace_id][slug]
        total = self.store.profile_count(workspace_id)
        job = _Job(workspace_id, slug, d.version, position, total, self.now())
        self.store.save_backfill(workspace_id, slug, d.version, "running", 0, total, job.started)
        key = (workspace_id, slug, d.version, position)
        if self.deferred is not None and key in self.deferred_keys:
            self.deferred[key] = job  # its recorded pages will run it
        elif self._worker is None:
            self.backfill(job)
        else:
            self._jobs.put(job)

    def backfill(self, job: _Job) -> None:
        """Evaluate one tag for every profile, page by page; the live processor runs between pages."""
        while not self.backfill_step(job):
            pass

    def backfill_step(self, job: _Job) -> bool:
        """One page of a backfill (a step of its own unless inline); True once the job is done or superseded."""
        ws, slug, version = job.workspace_id, job.slug, job.version
        with self.gate, self.lock, self.step() as own:
            after = job.after
            d = self.defs.get(ws, {}).get(slug)
            page = [] if d is None or d.version != version else self.store.profile_page(ws, after, self.page_size)
            if page:
                self.apply(ws, page, job.position, "rule", only={slug})
                job.done += len(page)
                job.after = page[-1]
            state = "running" if page else "superseded" if d is None or d.version != version else "done"
            self.store.save_backfill(ws, slug, version, state, job.done, max(job.total, job.done), job.started)
            if own:
                self.record("backfill", job.position, job, after)
        return not page

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            while True:
                try:
                    self.backfill(job)  # after a failure it goes on from the last page that applied
                    self.backfill_error = None
                    break
                except Exception as exc:  # keep the job: ClickHouse may be back in a moment
                    self.backfill_error = exc
                    log.exception("backfill of tag %s failed; retrying", job.slug)
                    threading.Event().wait(1.0)
            self._jobs.task_done()

    @property
    def backfills_pending(self) -> int:
        """Backfills queued or running on the worker thread."""
        return self._jobs.unfinished_tasks

    # Timers ------------------------------------------------------------------------------------

    def tick(self) -> int:
        """Re-evaluate every (profile, tag) whose timer is due by the clock; returns the changes made."""
        with self.gate, self.lock, self.step() as own:
            changed = 0
            due = self.store.due_timers(self.now())
            for ws, pids in due.items():
                changed += self.apply(ws, pids, self.position, "time")
            if due and own:
                self.record("tick", self.position)
            return changed


class TagTimer:
    """Calls `engine.tick()` every `interval` seconds of real time, on its own thread."""

    def __init__(self, engine: TagEngine, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tag-timer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.engine.tick()
                self.error = None
            except Exception as exc:  # the next tick tries again
                self.error = exc
                log.exception("tag timer tick failed")


class TagProcessor:
    """Log messages in, tag membership and `cdp.tag-changes` out (runs after the profiles processor)."""

    name = "tags"

    def __init__(self, engine: TagEngine) -> None:
        self.engine = engine

    def process(self, messages: list[Message]) -> int:
        if not messages:
            return 0
        engine = self.engine
        top = max(m.position for m in messages)
        page = _Page(engine, top)
        with engine.lock, engine.step() as own:
            for m in sorted(messages, key=lambda m: m.position):
                ws, pid = m.workspace_id, m.profile_id
                match m:
                    case EventMessage(call=call):
                        page.touch(ws, pid, "event")
                        if call.get("event") == CONSENT_CHANGED and call.get("type") == "track":
                            page.consented(ws, pid, (call.get("properties") or {}).get("purpose"))
                    case IdentityMessage(change="created" | "linked"):
                        page.touch(ws, pid, "event")
                    case IdentityMessage(change="absorbed", absorbed_id=absorbed):
                        page.touch(ws, pid, "merge")
                        page.touch(ws, absorbed, "merge")
                        page.manual.setdefault(ws, []).append(("moved", absorbed, pid, ""))
                    case IdentityMessage(change="merged_into"):
                        page.touch(ws, pid, "merge")
                    case IdentityMessage(change="split_apart", new_profile_id=split_off):
                        page.touch(ws, pid, "split")
                        page.touch(ws, split_off, "split")
                    case RulesMessage():
                        page.everyone.add(ws)  # trait precedence may have changed every profile's traits
                    case ManualTagMessage():
                        page.manual.setdefault(ws, []).append((m.action, pid, m.tag_id, m.reason))
                        page.touch(ws, pid, "manual")  # rules may refer to the manual tag
                    case DefinitionMessage():
                        self._definition(m, page)
                    case PredictionMessage(change="scored", scores=scores):
                        page.scored.setdefault(ws, set()).update(s[0] for s in scores)
                    case ErasureMessage():
                        page.flush()  # what came before is evaluated first: the erasure then removes it all
                        engine.erase(ws, list(m.profile_ids), m.position)
            page.flush()
            engine.position = max(engine.position, top)
            if own:
                engine.record("page", top)
        return top

    def _definition(self, m: DefinitionMessage, page: "_Page") -> None:
        engine, ws = self.engine, m.workspace_id
        engine.store.insert_definitions([[ws, m.definition_kind, m.tag_id, m.rule_version, m.name,
                                          orjson.dumps(m.rule).decode() if m.rule else "", int(m.deleted),
                                          m.position]])  # fmt: skip
        if m.definition_kind == CONSENT_KIND and m.rule is not None:
            page.flush()  # what came before the new defaults is evaluated under the old ones
            engine.set_consent(ws, parse_defaults(m.rule["defaults"], m.rule_version), m.position)
        if m.definition_kind != "tag":
            return
        page.flush()  # what came before the new rule is evaluated under the old one
        if m.deleted:
            engine.delete(ws, m.tag_id, m.rule_version, m.position)
        else:
            engine.define(ws, m.tag_id, m.name, m.rule_version, parse_rule(m.rule), m.position)


class _Page:
    """What one page of the log asks the tag engine to evaluate: touched profiles with their strongest cause,
    manual tag operations, and workspaces whose every profile needs evaluating again."""

    def __init__(self, engine: TagEngine, top: int) -> None:
        self.engine = engine
        self.top = top
        self.touched: dict[str, dict[str, str]] = {}
        self.manual: dict[str, list[tuple[str, str, str, str]]] = {}
        self.everyone: set[str] = set()
        self.consent: dict[str, dict[str, dict[str, str]]] = {}  # workspace → ConsentNews of the page
        self.scored: dict[str, set[str]] = {}  # workspace → profiles a model run of the page scored

    def touch(self, ws: str, pid: str | None, cause: str) -> None:
        if pid:
            causes = self.touched.setdefault(ws, {})
            if _CAUSE_RANK[cause] >= _CAUSE_RANK.get(causes.get(pid, "event"), 0):
                causes[pid] = cause

    def consented(self, ws: str, pid: str | None, purpose: Any) -> None:
        """A Consent Changed of `pid` for `purpose`: the tags that declare it say consent changed them."""
        if pid and isinstance(purpose, str):
            self.consent.setdefault(ws, {}).setdefault(pid, {})[purpose_key(purpose)] = "event"

    def flush(self) -> None:
        engine, top = self.engine, self.top
        for ws, ops in self.manual.items():
            engine.manual(ws, ops, top)
        for ws in self.everyone:
            after = ""
            while page := engine.store.profile_page(ws, after, engine.page_size):
                engine.apply(ws, page, top, self.touched.get(ws, {}), consent=self.consent.get(ws))
                after = page[-1]
        for ws, causes in self.touched.items():
            if ws not in self.everyone:
                engine.apply(ws, causes, top, causes, consent=self.consent.get(ws))
        for ws, scored in self.scored.items():  # new scores: the tags that read them, for the profiles scored
            reading = engine.reading_scores(ws)
            for ids in pages(sorted(scored) if reading else [], engine.page_size):
                engine.apply(ws, ids, top, "score", only=reading)
        self.scored.clear()
        self.manual.clear()
        self.touched.clear()
        self.everyone.clear()
        self.consent.clear()


def _entered(d: TagDef, news: Mapping[str, str], cause: str) -> tuple[str, str]:
    """(cause, reason) of an enter: `consent` when the step changed the consent of the tag's purpose."""
    source = news.get(d.purpose) if d.purpose else None
    if source is None or cause == "rule":
        return cause, ""
    if source == "default":
        return "consent", f"workspace default for {d.purpose}: granted"
    return "consent", f"consent for {d.purpose} granted"


def _exited(d: TagDef, news: Mapping[str, str], cause: str, consented: bool) -> tuple[str, str]:
    """(cause, reason) of an exit: `consent` when the profile has no consent for the tag's purpose (a changed
    rule still names its version: cause `rule`)."""
    if consented or cause == "rule":
        return cause, ""
    source = news.get(d.purpose or "")
    if source == "default":
        return "consent", f"workspace default for {d.purpose}: denied"
    if source == "event":
        return "consent", f"consent for {d.purpose} withdrawn"
    return "consent", f"no consent for {d.purpose}"
