"""Wiring: one place that builds the platform's parts from settings and starts and stops them.

The core process (chDB allows one process per data dir): bundled broker → event
store (SQLite) and intake log → the resolver (identity, the event log's one writer)
→ relay to Kafka, and the processors driven by the log follower (or by Faust on
Kafka), writing to chDB; the queries. The ingest workers (infra/ingest_server.py)
run in processes of their own and share only the intake log and the event store.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import orjson
from kafka.errors import KafkaError

from domain.application import CustomerData
from domain.predictions import ModelRun
from domain.regulations import suppressed_call
from infra.audit_log import AUDIT_TOPIC, AuditWriter
from infra.broker import BundledBroker
from infra.clickhouse import clickhouse_client, query_clients, separate_client
from infra.config import ConfigError, Settings
from infra.data_dir import secure_data_dir
from infra.eventstore import TRANSIENT_STORE_ERRORS, open_event_store, open_intake_log, opening_stores
from infra.kafka_security import kafka_client_options
from infra.prediction_schedule import PredictionSchedule
from infra.keys import Keys, load_or_create_keys, renew_key
from infra.startup_checks import check_projections, log_fingerprint
from ingest.committer import GroupCommitter
from ingest.dead_letters import DeadLetterStore, NewDeadLetter
from ingest.intake import Intake
from ingest.intake_log import RELAY, IntakeLog
from ingest.kafka_topic import KafkaIngest
from projections.analyst_sql import AnalystSql, SqlLimits
from projections.kpis import KpiStore
from projections.migrate import migrate
from projections.predictions import PredictionStore
from projections.quarantine import TRANSIENT_ERRORS, QuarantineStore
from projections.store import ProjectionStore
from projections.tags import EPOCH, TagStore
from projections.verify import differences
from services import Services
from services.access import Access
from services.audit import AuditLog
from services.dead_letters import DeadLetterService
from services.keys import KeyService, WorkspaceService
from services.kpis import KpiService
from services.live import LiveFeed
from services.predictions import PredictionService, PredictionSettings
from services.profiles import ProfileService
from services.quarantine import QuarantineService
from services.rate_limit import RateLimit
from services.regulations import RegulationService
from services.settings import SettingsService
from services.tags import TagService
from services.webhooks import WebhookService
from streams.kpis import KPI_UPDATES_TOPIC, KpiProcessor, KpiUpdates
from streams.log_follower import LogFollower, read_messages
from streams.messages import encode
from streams.pipeline import Pipeline
from streams.predictions import PredictionProcessor
from streams.processors import PROFILE_CHANGES_TOPIC, ProfileProcessor
from streams.resolver import Resolver
from streams.relay import EVENTS_TOPIC, KafkaPublisher, Relay, ensure_topics, kafka_producer
from streams.tags import TAG_CHANGES_TOPIC, Clock, ManualClock, SystemClock, TagEngine, TagProcessor, TagTimer
from streams.tail import CommittedTail

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = "default"
DERIVED_TOPICS = [PROFILE_CHANGES_TOPIC, TAG_CHANGES_TOPIC, KPI_UPDATES_TOPIC, AUDIT_TOPIC]
# Failures that say nothing about the entry being applied: the page is retried whole, never quarantined.
TRANSIENT = (*TRANSIENT_ERRORS, KafkaError)


def build_pipeline(
    store: ProjectionStore,
    producer: Any = None,
    applied: dict[str, int] | None = None,
    tags: TagEngine | None = None,
    kpi_updates: KpiUpdates | None = None,
) -> Pipeline:
    """Every processor, in the order they run; with no producer nothing is published (rebuilds)."""

    def publisher(topic: str) -> Callable[[list[Any]], None] | None:
        return KafkaPublisher(producer, topic).publish if producer is not None else None

    if tags is None:  # a rebuild: backfills run inline, so the replay ends with every tag evaluated
        tags = TagEngine(TagStore(store.client, store.db), SystemClock(), publish=publisher(TAG_CHANGES_TOPIC))
    # KPI facts first: profiles read their revenue from the facts (projections/money.py); tags run after
    # profiles and the model runs' scores: they read the profiles and scores the same batch wrote.
    processors = [
        KpiProcessor(KpiStore(store.client, store.db), kpi_updates),
        ProfileProcessor(store, publish=publisher(PROFILE_CHANGES_TOPIC)),
        PredictionProcessor(PredictionStore(KpiStore(store.client, store.db))),
        TagProcessor(tags),
    ]
    if applied is None:
        applied = {name: parts.get(0, 0) for name, parts in store.positions().items()}
    pipeline = Pipeline(
        processors, applied, save=lambda name, position: store.save_position(name, 0, position),
        quarantine=QuarantineStore(store.client, store.db), transient=TRANSIENT,
    )  # fmt: skip
    tags.gate = pipeline.lock  # timer ticks and backfill pages run between pages, never inside one
    return pipeline


class Platform:
    """The running platform: builds its parts from settings, starts and stops them, and exposes the
    services it built (`services`, services/) to the HTTP adapters and the other ways in."""

    def __init__(self, settings: Settings, clock: Clock | None = None, relay_in_process: bool = True) -> None:
        """`relay_in_process=False`: the relay runs in a process of its own (`cdp relay`, started by `cdp up`)."""
        self.settings = settings
        self.relay_in_process = relay_in_process or settings.processor_driver != "log"
        self.clock = clock or SystemClock()  # tag windows are measured against it; tests pass their own
        self.tags: TagEngine | None = None
        self.tag_timer: TagTimer | None = None
        self.broker: BundledBroker | None = None
        self.follower: LogFollower | None = None
        self.pipeline: Pipeline | None = None
        self.kpi_updates: KpiUpdates | None = None
        self.relay: Relay | None = None
        self.kafka_driver: Any = None
        self.producer: Any = None
        self.app: CustomerData
        self.store: ProjectionStore
        self.committer: GroupCommitter  # appends accepted calls to the intake log (ingest through this process)
        self.intake_log: IntakeLog
        self.resolver: Resolver | None = None  # identity, and the event log's only writer
        self.keys: Keys
        self.workspace_id: str
        self.analyst_sql: AnalystSql | None = None
        self.quarantine: QuarantineStore | None = None
        self.start_error: BaseException | None = None
        self.dead_letters: DeadLetterStore
        self.intake: Intake  # every source's way in (ingest/intake.py)
        self.kafka_ingest: KafkaIngest | None = None
        self.services: Services | None = None  # built once the parts run
        self.tail: CommittedTail  # each commit's entries, for the followers

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> "Platform":
        try:
            return self._start()
        except BaseException:
            self.stop()  # whatever did start (the broker, threads) must not outlive a failed start
            raise

    def _start(self) -> "Platform":
        """The start order of docs/internals.md ("Start and stop"), one step per method."""
        s = self.settings
        secure_data_dir(s)
        if s.uses_bundled_broker:
            self.broker = BundledBroker(s.kafka_port, log_path=s.data_dir / "broker.log").start()
        self._open_log()
        client = self._open_projections()
        relay_start = self._start_processors(client)
        self._start_relay(relay_start)
        self._start_intake()
        return self

    def _open_log(self) -> None:
        """The event store, replayed into memory; the default workspace and its keys."""
        s = self.settings
        with opening_stores(s):  # ingest workers and the relay open the same PostgreSQL schema as it starts
            self.app = open_event_store(s)
            self.intake_log = open_intake_log(s)  # also where the resolver and the relay keep their positions
            self.dead_letters = DeadLetterStore(self.app.recorder, self.app.sealer)
        self.workspace_id = self.app.ensure_workspace(DEFAULT_WORKSPACE)
        self.keys = load_or_create_keys(s)
        chosen = self.keys.as_json()
        if len(set(chosen.values())) < len(chosen):
            raise ConfigError("CDP_WRITE_KEY, CDP_READ_KEY, CDP_ADMIN_KEY and CDP_PLATFORM_KEY must all differ: each "
                              "kind of key opens something the others must not")  # fmt: skip
        for kind in ("write", "read", "admin"):
            if self.app.keys.was_revoked(chosen[f"{kind}_key"]):
                if getattr(s, f"{kind}_key"):
                    raise ConfigError(f"CDP_{kind.upper()}_KEY was revoked; set it to a new key (or unset it to have "
                                      "one generated into the data dir)")  # fmt: skip
                self.keys = renew_key(s, kind)  # the generated one was revoked: a new one, printed at start
            self.app.grant_key(self.workspace_id, kind, getattr(self.keys, f"{kind}_key"))

    def _open_projections(self) -> Any:
        """ClickHouse, migrated and checked against the log, and the stores over it; returns the client."""
        s = self.settings
        client = clickhouse_client(s)
        migrate(client, s.clickhouse_database)
        self.store = ProjectionStore(client, s.clickhouse_database)
        if self.intake_log.position(RELAY) is None:  # kept in ClickHouse before the relay could run apart
            self.intake_log.save_position(RELAY, self.store.positions().get(RELAY, {}).get(0, 0))
        # Never serve projections of another log, or of a later state (nor publish from beyond its end).
        check_projections(self.app, self.store, {RELAY: self.intake_log.position(RELAY) or 0})
        self.quarantine = QuarantineStore(client, s.clickhouse_database)
        self.store.cache.learn_new = s.processor_driver == "log"  # the log driver applies the log in order
        self.kpis = KpiStore(query_clients(s), s.clickhouse_database)  # reads apart from the processors' writes
        limits = SqlLimits(s.sql_max_rows, s.sql_timeout_s, s.sql_max_memory)
        self.analyst_sql = AnalystSql(lambda: separate_client(s), s.clickhouse_database, limits)
        # Training reads whole tables: on a client of its own, so the processors never wait behind it.
        self.prediction_store = PredictionStore(KpiStore(separate_client(s), s.clickhouse_database))
        return client

    def _start_processors(self, client: Any) -> int:
        """Topics, the shared producer, the KPI publisher, the tag engine and the processor driver; returns
        the position the relay starts from."""
        s = self.settings
        positions = self.store.positions()
        ensure_topics(s.bootstrap_servers, s.kafka_partitions, [EVENTS_TOPIC, *DERIVED_TOPICS, s.ingest_topic],
                      kafka_client_options(s))  # fmt: skip
        self.producer = kafka_producer(s.bootstrap_servers, kafka_client_options(s))
        # What the dashboard shows moving: the KPI updates of the topic and every commit's events, in process.
        self.live = LiveFeed(self.status, self.store.count_profiles)
        self.app.on_saved.append(self.live.committed)
        to_topic = KafkaPublisher(self.producer, KPI_UPDATES_TOPIC, key=lambda m: f"{m['workspace_id']}:{m['kpi']}")

        def publish_kpis(messages: list[dict[str, Any]]) -> None:
            to_topic.publish(messages)
            self.live.kpi_updates(messages)

        self.kpi_updates = KpiUpdates(self.kpis.daily_values, publish_kpis)
        self.kpi_updates.start()
        relay_start = self.intake_log.position(RELAY) or 0
        self.tags = TagEngine(
            TagStore(client, s.clickhouse_database), self.clock,
            publish=KafkaPublisher(self.producer, TAG_CHANGES_TOPIC).publish, backfill_in_thread=True,
        )  # fmt: skip
        self.tags.position = positions.get(TagProcessor.name, {}).get(0, 0)
        self.tag_timer = TagTimer(self.tags)
        self.tag_timer.start()
        # Each commit's entries, decoded once, for the followers; they read the log when behind it.
        self.tail = CommittedTail()
        self.app.on_saved.append(self.tail.committed)
        if s.processor_driver == "log":
            self.pipeline = build_pipeline(self.store, self.producer, tags=self.tags, kpi_updates=self.kpi_updates)
            self.follower = LogFollower(
                self.app, self.pipeline.process, save=self.pipeline.save, start=self.pipeline.start, coalesce=0.05,
                name="processors", tail=self.tail,
            )  # fmt: skip
            self.follower.start()
        else:
            from streams.faust_driver import KafkaDriver

            # The driver tracks positions per partition itself; the pipeline filters nothing.
            self.pipeline = build_pipeline(
                self.store, self.producer, applied={}, tags=self.tags, kpi_updates=self.kpi_updates
            )
            self.kafka_driver = KafkaDriver(s.bootstrap_servers, self.pipeline, self.store, s.data_dir,
                                            security=kafka_client_options(s))  # fmt: skip
            # The bundled broker forgets everything on restart: republish what the consumer has not applied.
            relay_start = min(relay_start, self.kafka_driver.applied_position())
        return relay_start

    def _start_relay(self, start: int) -> None:
        if not self.relay_in_process:  # `cdp relay` starts from the position it finds with the intake log
            return
        quarantine = self.quarantine
        assert quarantine is not None
        self.relay = Relay(
            self.app, KafkaPublisher(self.producer, unpublishable=lambda m, exc: quarantine.record(RELAY, m, exc)),
            save=lambda p: self.intake_log.save_position(RELAY, p),
            start=start, tail=self.tail,
        )  # fmt: skip
        self.relay.start()

    def _start_intake(self) -> None:
        """The resolver, the group committer, the intake, the services and the ingest
        topic's consumer."""
        s = self.settings
        self.resolver = Resolver(
            self.intake_log, self.app.record, self._unresolvable, transient=TRANSIENT_STORE_ERRORS,
            on_commit=self._committed,
        ).start()  # fmt: skip
        resolver = self.resolver
        self.committer = GroupCommitter(self.intake_log.append, on_commit=resolver.wake.set)
        self.committer.start()
        app = self.app
        self.intake = Intake(
            self.committer.submit, self.committer.record_now, self.dead_letters, s.max_event_bytes,
            suppressed=lambda ws, call: suppressed_call(app.suppressions, app.sealer.subject_hash, ws, call),
        )  # fmt: skip
        with opening_stores(s):
            self.audit = AuditWriter(self.app.recorder, KafkaPublisher(
                self.producer, AUDIT_TOPIC, key=lambda m: m["workspace_id"]).publish, self.intake_log).start()
        self.services = self._services()
        self.prediction_schedule = PredictionSchedule(
            self.services.predictions, lambda: list(self.app.workspaces), self.clock.now, s.predictions_every_h
        ).start()  # fmt: skip
        self.kafka_ingest = KafkaIngest(
            s.bootstrap_servers, self.intake, self.services.access.authorise_write, self.workspace_id,
            topic=s.ingest_topic,
            # The bundled broker forgets the topic on exit; joining its group takes seconds on a busy machine.
            drain_on_stop=10.0 if s.uses_bundled_broker else 0.0,
            security=kafka_client_options(s),
        ).start()

    async def start_async(self) -> None:
        """Parts that live on the event loop (the Faust consumer)."""
        if self.kafka_driver is not None:
            await self.kafka_driver.start()

    async def stop_async(self) -> None:
        if self.kafka_driver is not None:
            await self.kafka_driver.stop()

    def stop(self) -> None:
        parts = (
            self.kafka_ingest,  # first: it writes through the committer
            getattr(self, "committer", None), self.resolver, self.relay, self.follower, self.tag_timer, self.tags,
            self.kpi_updates, getattr(self, "audit", None), getattr(self, "prediction_schedule", None),
        )  # fmt: skip
        for part in parts:
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %s failed", type(part).__name__)
        if self.producer is not None:
            self.producer.close(timeout=5)
        if self.broker is not None:
            self.broker.stop()
        if self.analyst_sql is not None:
            self.analyst_sql.close()

    def _unresolvable(self, entry: Any, exc: BaseException) -> None:
        """An accepted call the resolver cannot record even on its own: kept, with the reason, as a dead letter."""
        reason = f"accepted but could not be recorded: {type(exc).__name__}: {str(exc)[:500]}"
        body = orjson.dumps(entry.call)
        self.dead_letters.add([NewDeadLetter(entry.workspace_id, "resolver", "unresolvable", "(event)", reason, body,
                                             entry.call.get("messageId"))])  # fmt: skip
        self.intake_log.forget(entry.position)  # its replay must not be answered as a duplicate

    def _committed(self) -> None:
        if self.follower is not None:
            self.follower.wake.set()
        if self.relay is not None:
            self.relay.wake.set()

    def _services(self) -> Services:
        """The service layer over the parts just started; the services get their collaborators, not settings."""
        assert self.tags is not None and self.quarantine is not None and self.analyst_sql is not None
        assert self.resolver is not None  # the event log's writer runs the commands
        writer = self.resolver
        profiles = ProfileService(self.app, self.store, writer)
        tags = TagService(self.app, self.tags.store, writer, profiles.resolve, self.clock.now)
        predictions = PredictionService(
            self.prediction_store, self.clock.now, self._record_run, self._projected, PredictionSettings(
                propensity_horizon_days=self.settings.prediction_horizon_days,
                churn_horizon_days=self.settings.prediction_horizon_days, churn_on=self.settings.churn_on,
                ltv_horizon_days=self.settings.ltv_horizon_days),
            publish=KafkaPublisher(self.producer, PROFILE_CHANGES_TOPIC).publish if self.producer is not None else None,
        )  # fmt: skip
        # A current profile shows its tags, and its prediction scores among its computed traits.
        profiles.extras = lambda ws, pid: {**tags.profile_tags(ws, pid), **predictions.profile_predictions(ws, pid)}
        return Services(
            access=Access(self.app, self.keys.platform_key, RateLimit(self.settings.rate_limit, self.settings.rate_burst)),
            keys=KeyService(self.app, writer), workspaces=WorkspaceService(self.app, writer), audit=AuditLog(self.audit),
            profiles=profiles, tags=tags, kpis=KpiService(self.kpis, self.kpis.generation),
            quarantine=QuarantineService(self.app, self.quarantine, self._retry),
            dead_letters=DeadLetterService(self.dead_letters, self.intake),
            settings=SettingsService(self.app, writer),
            webhooks=WebhookService(self.app, writer, self.intake, self.dead_letters),
            regulations=RegulationService(self.app, writer, self._applied),
            intake=self.intake, analyst_sql=self.analyst_sql, predictions=predictions, status=self.status,
            live=self.live,
            max_event_bytes=self.settings.max_event_bytes, max_batch_bytes=self.settings.max_batch_bytes,
        )  # fmt: skip

    def _record_run(self, run: ModelRun) -> int:
        """Append a model run to the log through its only writer; the position of its last entry."""
        assert self.resolver is not None
        recordings = self.resolver.run_now(lambda: self.app.save(run))
        return max(r.notification.id for r in recordings)

    def _projected(self, position: int, timeout: float = 120.0) -> None:
        """Wait (up to `timeout`) until the predictions projection has applied the log through `position`."""
        deadline = time.monotonic() + timeout
        while self._applied().get("predictions", 0) < position and time.monotonic() < deadline:
            self._committed()
            time.sleep(0.2)

    def _applied(self) -> dict[str, int]:
        """Each projection's applied log position (a regulation is done once all of them are past it)."""
        return {name: int(p["position"]) for name, p in self.status()["projections"].items()}

    def status(self, workspace_id: str | None = None) -> dict[str, Any]:
        """The parts' positions; the dead letters of `workspace_id` (of every workspace when None)."""
        # The resolver first: once it has recorded all the intake held, the log position read next includes it.
        resolver: dict[str, Any] = {"position": 0, "lag": 0, "error": None}
        if self.resolver is not None:
            resolver = {"position": self.resolver.position, "lag": self.resolver.lag(),
                        "error": repr(self.resolver.error) if self.resolver.error else None}  # fmt: skip
        log_position = self.app.last_position()
        projections: dict[str, Any] = {}
        if self.follower is not None and self.pipeline is not None:
            error = repr(self.follower.error) if self.follower.error else None
            for name, position in self.pipeline.applied.items():
                projections[name] = {
                    "driver": "log",
                    "position": position,
                    "lag": log_position - position,
                    "error": error,
                }
        if self.kafka_driver is not None and self.pipeline is not None:
            assert self.relay is not None
            status = self.kafka_driver.status(self.relay.publisher.sent, self.relay.position, log_position)
            projections.update({name: dict(status) for name in self.pipeline.applied})
        published = self.relay.position if self.relay else self.intake_log.position(RELAY) or 0
        relay: dict[str, Any] = {"topic": EVENTS_TOPIC, "position": published,
                                 "process": "core" if self.relay else "own"}  # fmt: skip
        relay["lag"] = log_position - relay["position"]
        error = self.relay.follower.error if self.relay else None
        relay["error"] = repr(error) if error else None
        quarantined = self.quarantine.counts() if self.quarantine is not None else {}
        relay["quarantined"] = quarantined.get(RELAY, 0)
        for name, projection in projections.items():
            projection["quarantined"] = quarantined.get(name, 0)
        return {
            "log_position": log_position,
            "resolver": resolver,
            "relay": relay,
            "projections": projections,
            "quarantined": sum(quarantined.values()),
            "dead_letters": self.dead_letters.counts(workspace_id) if hasattr(self, "dead_letters") else {},
            "caught_up": resolver["lag"] == 0 and relay["lag"] == 0
            and all(p["lag"] == 0 for p in projections.values()),
        }

    def _retry(self, projection: str, message: Any) -> BaseException | None:
        """Apply one quarantined entry again (the quarantine service's `apply`): the error, or None."""
        if projection != RELAY:
            assert self.pipeline is not None
            return self.pipeline.retry(projection, message)
        if self.relay is None:
            return RuntimeError("the relay runs in a process of its own (cdp relay) and cannot retry entries "
                                "here; `cdp rebuild` publishes the whole log again")
        try:
            encode(message)  # the publisher would set it aside again: say why instead
            self.relay.publisher.publish([message])
        except Exception as exc:
            return exc
        return None


def rebuild(
    app: CustomerData,
    client: Any,
    database: str,
    batch: int = 5000,
    progress: Callable[[int], None] | None = None,
    steps_from: str | None = None,
    clock: Clock | None = None,
) -> int:
    """Drop `database` and replay the whole log into it; returns the log position reached.

    Tag history depends on how the live run paged the log, when its timers fired and its backfill pages
    ran, and on its clock; the replay follows the steps the tags engine recorded (streams/tags.py) in
    `steps_from` (by default `database` itself, copied aside before it is dropped), each at the clock
    reading the live run used, so tag changes keep their positions, causes and times. The log after
    the last recorded step (all of it, when none was recorded) is replayed in pages of `batch`, with
    backfills inline and `clock` (the system clock by default) for tag windows.
    """
    keep = None if steps_from is not None else _keep_steps(client, database)
    store = ProjectionStore(client, database)
    store.drop()
    migrate(client, database)
    fingerprint = log_fingerprint(app)
    if fingerprint is not None:
        store.record_log_origin(fingerprint)  # the fresh projections follow this log
    tags = TagEngine(TagStore(client, database), clock or SystemClock())  # a rebuild republishes no changes
    pipeline = build_pipeline(store, applied={}, tags=tags)
    source = keep if steps_from is None else steps_from if _has_steps(client, steps_from) else None
    position = 0
    if source is not None:
        position = _follow_steps(app, pipeline, tags, TagStore(client, source), batch, progress)
    follower = LogFollower(app, pipeline.process, save=pipeline.save, start=position, batch=batch)
    while follower.step():
        if progress is not None:
            progress(follower.position)
    if keep is not None:
        client.command(f"DROP DATABASE IF EXISTS {keep}")
    return follower.position


def _keep_steps(client: Any, database: str) -> str | None:
    """Copy `database`'s recorded tag steps aside before it is dropped; the database holding them, if any.

    A copy is dropped once its rebuild has finished: one that is still there was left by a rebuild that
    stopped after dropping `database` (which may hold part of a replay now), so it is the one to follow."""
    keep = f"{database}_steps"
    if _has_steps(client, keep):
        return keep
    if _has_steps(client, database):  # copied under another name first: a copy cut short is never followed
        client.command(f"CREATE DATABASE IF NOT EXISTS {keep}")
        client.command(f"DROP TABLE IF EXISTS {keep}.copying")
        client.command(f"CREATE TABLE {keep}.copying ENGINE = ReplacingMergeTree ORDER BY seq "
                       f"AS SELECT * FROM {database}.tag_steps FINAL")  # fmt: skip
        client.command(f"RENAME TABLE {keep}.copying TO {keep}.tag_steps")
    return keep if _has_steps(client, keep) else None


def _has_steps(client: Any, database: str) -> bool:
    """Whether `database` has a table of recorded tag steps (projections older than it, or none, have not)."""
    return bool(client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'tag_steps'",
        parameters={"db": database},
    ).result_rows[0][0])  # fmt: skip


def _follow_steps(
    app: CustomerData, pipeline: Pipeline, tags: TagEngine, recorded: TagStore, batch: int,
    progress: Callable[[int], None] | None,
) -> int:  # fmt: skip
    """Replay the log as the recorded tag steps cut it, each at its clock reading; returns the position reached."""
    clock, live_clock = ManualClock(EPOCH), tags.clock
    tags.clock = clock
    tags.deferred, tags.deferred_keys = {}, recorded.backfill_keys()
    position, after = 0, 0
    while steps := recorded.steps(after):
        for step in steps:
            clock.set(step.now)
            if step.kind == "page":  # the live page ended at step.position: so does this one
                position = _page(app, pipeline, tags, position, step.position, batch)
                if progress is not None:
                    progress(position)
            else:
                tags.replay(step)
            after = step.seq
    tags.clock, tags.deferred = live_clock, None
    return position


def _page(app: CustomerData, pipeline: Pipeline, tags: TagEngine, after: int, until: int, batch: int) -> int:
    """Apply the log after `after` through `until` as one page of the tags processor; returns `until`.

    Before the engine records steps (no tag yet) evaluations change nothing and the log goes in pages of
    `batch`; from the page that brings the first tag on, the page is the recorded one."""
    held: list[Any] = []
    position = after
    while position < until:
        messages, last = read_messages(app, position, min(batch, until - position))
        if last == position:
            break
        held += [m for m in messages if m.position <= until]
        position = min(last, until)
        if not tags.recording and not any(_brings_tags(m) for m in held):
            pipeline.process(held)
            pipeline.save(position)
            held = []
    if held:
        pipeline.process(held)
    pipeline.save(position)
    return position


def _brings_tags(message: Any) -> bool:
    return message.kind == "manual_tag" or (message.kind == "definition" and message.definition_kind == "tag")


def verify_rebuild(app: CustomerData, client: Any, live_database: str, clock: Clock | None = None) -> list[str]:
    """Rebuild into a scratch database, following the live run's tag steps, and compare it with the live
    projections table by table (projections/verify.py); an empty list: identical."""
    scratch = f"{live_database}_verify"
    rebuild(app, client, scratch, steps_from=live_database, clock=clock)
    try:
        return differences(ProjectionStore(client, live_database), ProjectionStore(client, scratch))
    finally:
        ProjectionStore(client, scratch).drop()
