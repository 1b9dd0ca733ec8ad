"""The service layer: commands and queries of each area, handled in one place, below the HTTP adapters.

Services receive their collaborators (the application, stores, the group committer);
they never read settings or build clients. `Services` is what the platform built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from projections.analyst_sql import AnalystSql
    from services.access import Access
    from services.audit import AuditLog
    from services.ports import Intake
    from services.dead_letters import DeadLetterService
    from services.keys import KeyService, WorkspaceService
    from services.kpis import KpiService
    from services.live import LiveFeed
    from services.predictions import PredictionService
    from services.profiles import ProfileService
    from services.quarantine import QuarantineService
    from services.regulations import RegulationService
    from services.settings import SettingsService
    from services.tags import TagService
    from services.webhooks import WebhookService


@dataclass(frozen=True)
class IngestServices:
    """What the ingest adapters use: every process that takes events has these, an ingest worker only these."""

    access: Access
    settings: SettingsService
    intake: Intake  # every source's way in (ingest/intake.py)
    max_event_bytes: int
    max_batch_bytes: int


@dataclass(frozen=True)
class Services(IngestServices):
    """Every service of the core process, as the HTTP adapters (and other ways in) use them."""

    keys: KeyService
    workspaces: WorkspaceService
    audit: AuditLog
    profiles: ProfileService
    tags: TagService
    kpis: KpiService
    quarantine: QuarantineService
    dead_letters: DeadLetterService
    webhooks: WebhookService
    regulations: RegulationService
    analyst_sql: AnalystSql
    predictions: PredictionService
    live: LiveFeed  # what the dashboard's open streams are pushed (KPI updates, status ticks)
    status: Callable[..., dict[str, Any]]  # the platform's parts and their positions (`status(workspace_id)`)
