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
    from services.ports import Intake
    from services.dead_letters import DeadLetterService
    from services.kpis import KpiService
    from services.profiles import ProfileService
    from services.quarantine import QuarantineService
    from services.settings import SettingsService
    from services.tags import TagService
    from services.webhooks import WebhookService


@dataclass(frozen=True)
class Services:
    """Every service of the running platform, as the HTTP adapters (and other ways in) use them."""

    access: Access
    profiles: ProfileService
    tags: TagService
    kpis: KpiService
    quarantine: QuarantineService
    dead_letters: DeadLetterService
    settings: SettingsService
    webhooks: WebhookService
    intake: Intake  # every source's way in (ingest/intake.py)
    analyst_sql: AnalystSql
    status: Callable[[], dict[str, Any]]  # the platform's parts and their positions
    max_event_bytes: int
    max_batch_bytes: int
