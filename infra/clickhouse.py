"""The one ClickHouse client factory: embedded chDB by default, an HTTP server by configuration."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect

from infra.config import Settings


class LockedClient:
    """Serialises calls on one clickhouse-connect client.

    chDB is one engine per process and its client is not safe for concurrent use;
    the HTTP client keeps per-session state. Threads share this wrapper instead.
    """

    def __init__(self, client: Any, location: str = "") -> None:
        self._client = client
        self.location = location or f"client:{id(client)}"  # where it points: clients of one place share caches
        self._lock = threading.RLock()

    def command(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.command(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.query(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.insert(*args, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._client.close()


_embedded: dict[str, LockedClient] = {}
_embedded_lock = threading.Lock()


def separate_client(settings: Settings) -> LockedClient:
    """A client with its own connection, for work that must not wait on the shared client's lock.

    With chDB it is a second handle on the process's one engine (opened by
    `clickhouse_client` first): handles run queries concurrently.
    """
    url = settings.clickhouse_url
    if not url or url.startswith("chdb://"):
        clickhouse_client(settings)  # the engine opens on the configured path first
        path = urlparse(url).path if url else str(settings.chdb_path)
        return LockedClient(clickhouse_connect.get_client(interface="chdb", path=path), f"chdb:{path}")
    return _server_client(url)


def clickhouse_client(settings: Settings) -> LockedClient:
    """A client for the configured ClickHouse.

    Embedded chDB allows one engine per process and data directory, so its client
    is shared by everything in the process.
    """
    url = settings.clickhouse_url
    if not url or url.startswith("chdb://"):
        path = urlparse(url).path if url else str(settings.chdb_path)
        with _embedded_lock:
            if path not in _embedded:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                _embedded[path] = LockedClient(clickhouse_connect.get_client(interface="chdb", path=path), f"chdb:{path}")
            return _embedded[path]
    return _server_client(url)


def _server_client(url: str) -> LockedClient:
    parsed = urlparse(url)
    return LockedClient(
        clickhouse_connect.get_client(
            host=parsed.hostname or "localhost",
            port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
            username=unquote(parsed.username or "default"),
            password=unquote(parsed.password or ""),
            secure=parsed.scheme == "https",
        ),
        f"{parsed.scheme}://{parsed.hostname}:{parsed.port}",
    )
