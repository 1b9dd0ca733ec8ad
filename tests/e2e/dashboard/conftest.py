"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a platform served over
real HTTP with a seeded history of the last 60 days (bench/workload.py's customer journeys).

One platform and one browser serve the whole module set; each test gets a fresh, signed-in tab.
Screenshots go to build/screenshots (not committed): `shot(page, name)`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from bench.workload import customer_journey
from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import ThreadedServer

CHROMIUM = os.environ.get("CDP_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "build" / "screenshots"
# Flags for a closed network and no screen: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
CUSTOMERS = 300


@dataclass
class Dashboard:
    """The served platform, its keys and an API client for checking what the page shows."""

    server: ThreadedServer
    api: httpx.Client
    now: datetime

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def keys(self) -> Any:
        return self.server.platform.keys

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params, headers={"Authorization": f"Bearer {self.keys.read_key}"})
        assert response.status_code == 200, response.text
        return response.json()

    def send(self, batch: list[dict[str, Any]]) -> None:
        response = self.api.post("/v1/batch", json={"batch": batch}, auth=(self.keys.write_key, ""))
        assert response.status_code == 200, response.text

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.api.request(method, path, headers={"Authorization": f"Bearer {self.keys.admin_key}"}, **kwargs)

    def settle(self, timeout: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout
        platform = self.server.platform
        while not (platform.status()["caught_up"] and not (platform.tags and platform.tags.backfills_pending)):
            assert time.monotonic() < deadline, "the projections did not catch up"
            time.sleep(0.05)


def history(now: datetime, customers: int = CUSTOMERS, seed: int = 3) -> list[dict[str, Any]]:
    """Customer journeys spread over the 60 days before `now` (none in the future)."""
    rng = random.Random(seed)
    calls: list[dict[str, Any]] = []
    for c in range(customers):
        calls += customer_journey(rng, c, now - timedelta(days=60) + timedelta(hours=c * 60 * 24 / customers))
    last = now.isoformat()
    return [call | {"messageId": f"seed-{i}"} for i, call in enumerate(calls) if call["timestamp"] < last]


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is required in CI at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs it")
    return CHROMIUM


@contextlib.contextmanager
def serving(root: Path, chdb_url: str, calls: Callable[[datetime], list[dict[str, Any]]]) -> Iterator[Dashboard]:
    """A platform over real HTTP with `calls(now)` sent and projected, as a Dashboard."""
    settings = Settings(data_dir=root / "data", http_port=free_port(), kafka_port=free_port(), kafka_partitions=2,
                        clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
                        predictions_every_h=0)  # fmt: skip
    server = ThreadedServer(Platform(settings)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            board = Dashboard(server, client, datetime.now(timezone.utc))
            seeded = calls(board.now)
            for i in range(0, len(seeded), 500):
                board.send(seeded[i : i + 500])
            board.settle()
            yield board
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[Dashboard]:
    with serving(tmp_path_factory.mktemp("dashboard"), chdb_url, history) as board:
        yield board


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    # Per module, not per session: Playwright's sync API keeps an asyncio loop running on this thread while it
    # is open, and every later test that calls asyncio.run() would fail.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    """A fresh tab (own session storage), narrow enough to see wrapping, in a fixed locale and time zone."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def sign_in(page: Any, board: Dashboard, key: str | None = None) -> None:
    page.goto(f"{board.url}/dashboard")
    page.get_by_label("Read key").fill(key or board.keys.read_key)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def signed_in(tab: Any, dashboard: Dashboard) -> Any:
    sign_in(tab, dashboard)
    tab.get_by_role("navigation", name="Pages").wait_for()
    return tab


def open_page(page: Any, board: Dashboard, hash_route: str) -> None:
    page.goto(f"{board.url}/dashboard#/{hash_route}")
    page.locator("main h1").wait_for()


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def clean_screenshots() -> None:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
