"""In transit and at rest, over real processes: HTTPS when certificate files are configured, the keys shown only
when they were just made, and a data dir nobody but its owner can read."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import httpx
import pytest

from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import ThreadedServer
from tests.unit.test_transport_settings import self_signed


def test_the_api_serves_https_only_when_certificate_files_are_set(settings: Settings, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    settings = replace(settings, tls_certfile=str(cert), tls_keyfile=str(key))
    server = ThreadedServer(Platform(settings)).start()
    try:
        assert server.url == f"https://127.0.0.1:{settings.http_port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=cert), timeout=10) as client:  # the certificate checked, host name included
            assert client.get(f"{server.url}/healthz").json() == {"status": "ok"}
            status = client.get(f"{server.url}/v1/status", headers={"Authorization": f"Bearer {server.platform.keys.read_key}"})
            assert status.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted by the system CAs
            httpx.get(f"{server.url}/healthz", timeout=10)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the same port: no answer
            httpx.get(f"http://127.0.0.1:{settings.http_port}/healthz", timeout=5)
    finally:
        server.stop()


def _open_entries(root: Path) -> list[str]:
    return [f"{p.relative_to(root)} {stat.filemode(p.lstat().st_mode)}" for p in [root, *root.rglob("*")]
            if not p.is_symlink() and p.lstat().st_mode & 0o077]  # fmt: skip


class _Up:
    """`cdp up` in a process of its own, with its ingest workers, over HTTPS."""

    def __init__(self, data_dir: Path, cert: Path, key: Path) -> None:
        self.env = {**os.environ, "CDP_DATA_DIR": str(data_dir), "CDP_HTTP_PORT": str(free_port()),
                    "CDP_INGEST_PORT": str(free_port()), "CDP_KAFKA_PORT": str(free_port()),
                    "CDP_INGEST_WORKERS": "1", "CDP_TLS_CERTFILE": str(cert), "CDP_TLS_KEYFILE": str(key),
                    "COLUMNS": "250"}  # fmt: skip
        for name in ("CDP_EVENT_STORE", "CDP_CLICKHOUSE_URL", "CDP_KAFKA_BOOTSTRAP", "CDP_WRITE_KEY", "CDP_READ_KEY",
                     "CDP_MASTER_KEY"):  # fmt: skip
            self.env.pop(name, None)
        self.urls = [f"https://127.0.0.1:{self.env[p]}" for p in ("CDP_HTTP_PORT", "CDP_INGEST_PORT")]
        self.verify = ssl.create_default_context(cafile=cert)

    def run(self, while_up: Callable[[], None] = lambda: None) -> str:
        """Start, wait until both addresses answer over HTTPS and plain HTTP is refused, run `while_up`, stop;
        the output."""
        process = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.communicate()[0].decode()
                assert time.monotonic() < deadline, "cdp up did not answer over HTTPS"
                try:
                    if all(httpx.get(f"{u}/healthz", verify=self.verify, timeout=2).status_code == 200 for u in self.urls):
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            for url in self.urls:
                with pytest.raises(httpx.HTTPError):
                    httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)
            while_up()
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=60)[0].decode()
        assert process.returncode == 0, output
        return output

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", *args], env=self.env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip


def test_cdp_up_over_https_keeps_keys_and_data_to_itself(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    data = tmp_path / "fresh" / "data"
    up = _Up(data, cert, key)

    first = up.run()
    keys = json.loads((data / "keys.json").read_text())
    for url in up.urls:
        assert url in first, first
    assert "http://" not in first, first
    kinds = ("write", "read", "admin", "platform")
    assert all(keys[f"{kind}_key"] in first for kind in kinds), first  # shown once: they were just made
    assert f"master key: generated into {data / 'master.key'}" in first and "back it up" in first
    master = (data / "master.key").read_text().strip()
    assert master not in first
    assert _open_entries(data) == [], "open to group or others after a start on a fresh data dir"

    history = tmp_path / "history.jsonl"
    history.write_text(json.dumps({"type": "track", "userId": "tls-1", "event": "Viewed", "messageId": "tls-1"}) + "\n")
    tags = tmp_path / "tags.yaml"
    tags.write_text("id: tls-viewers\nname: Viewers\nrule: {event: Viewed, measure: exists}\n")

    def cli_over_https() -> None:  # the command line reaches the API over HTTPS, trusting the configured certificate
        for command in (["status"], ["import", str(history)], ["webhooks", "apply", "stripe"], ["webhooks", "list"],
                        ["tags", "apply", str(tags)]):  # fmt: skip
            done = up.cli(*command)
            assert done.returncode == 0, f"cdp {' '.join(command)}: {done.stdout}{done.stderr}"
            assert "https://" in done.stdout or command[0] != "webhooks" or command[1] != "apply", done.stdout

    second = up.run(cli_over_https)
    assert not any(keys[f"{kind}_key"] in second for kind in kinds), second
    assert f"keys file : {data / 'keys.json'}" in second and "cdp keys show" in second
    assert "master key" not in second and master not in second
    assert _open_entries(data) == []

    shown = up.cli("keys", "show")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    shown_keys = r"\s+".join(rf"{kind} key:\s+{re.escape(keys[f'{kind}_key'])}" for kind in kinds)
    assert re.search(shown_keys, shown.stdout), shown.stdout


def test_the_event_store_url_parameters_reach_postgresql(
    postgres_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL's parameters on every connection to PostgreSQL: the event store's pool, the intake log's and the key
    store's (application_name shows on the server); sslmode=require against this test server (no TLS) is refused."""
    import psycopg

    from infra.eventstore import open_event_store, open_intake_log

    monkeypatch.delenv("PGAPPNAME", raising=False)  # set below for eventsourcing's pool; unset again after
    name = f"cdp-{settings.clickhouse_database}"
    store = replace(settings, event_store=f"{postgres_url}&application_name={name}")
    app = open_event_store(store)
    app.ensure_workspace("transport")
    open_intake_log(store).save_position("transport-test", 1)
    with psycopg.connect(postgres_url.split("?")[0]) as conn:
        count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]).fetchone()
    assert count is not None and count[0] >= 2
    with pytest.raises(Exception, match="server does not support SSL, but SSL was required"):
        open_intake_log(replace(settings, event_store=f"{postgres_url}&sslmode=require")).position("x")
