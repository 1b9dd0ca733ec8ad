"""The one ClickHouse client factory: embedded chDB by default, an HTTP server by configuration.

Embedded chDB keeps its tables on an encrypted disk (infra/chdb_storage.py); a
ClickHouse server keeps its own disk configuration (docs/privacy.md).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect

from infra import chdb_storage
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

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.raw_insert(*args, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._client.close()


class ClientPool:
    """Several clients behind the one interface of `LockedClient`: each call takes a free one.

    The query API's KPI reads go through one, apart from the shared client the processors write with, so
    they never wait behind a page of the log being applied; with several clients, the requests of one
    dashboard page run side by side (worth it on a ClickHouse server; on the embedded engine with 2 cores,
    two were no faster than one).
    """

    def __init__(self, clients: list[LockedClient]) -> None:
        if not clients:
            raise ValueError("a pool needs at least one client")
        self.location = clients[0].location
        self._clients = clients
        self._free: queue.LifoQueue[LockedClient] = queue.LifoQueue()
        for client in clients:
            self._free.put(client)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._free.get()
        try:
            return getattr(client, method)(*args, **kwargs)
        finally:
            self._free.put(client)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("command", *args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("query", *args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("insert", *args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("raw_insert", *args, **kwargs)

    def close(self) -> None:
        for client in self._clients:
            client.close()


def query_clients(settings: Settings) -> ClientPool:
    """`settings.query_connections` clients of their own, for the query API's reads."""
    return ClientPool([separate_client(settings) for _ in range(settings.query_connections)])


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
        path = _chdb_path(settings)
        return LockedClient(chdb_storage.other_client(path), f"chdb:{path}")
    return _server_client(url)


def clickhouse_client(settings: Settings) -> LockedClient:
    """A client for the configured ClickHouse.

    Embedded chDB allows one engine per process and data directory, so its client
    is shared by everything in the process.
    """
    url = settings.clickhouse_url
    if not url or url.startswith("chdb://"):
        path = _chdb_path(settings)
        with _embedded_lock:
            if str(path) not in _embedded:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                chdb_storage.keep_inserts_in_memory()
                client = chdb_storage.open_engine(path, settings.encryption, lambda: _disk_key(settings))
                _embedded[str(path)] = LockedClient(client, f"chdb:{path}")
            return _embedded[str(path)]
    return _server_client(url)


def _chdb_path(settings: Settings) -> Path:
    url = settings.clickhouse_url
    return Path(urlparse(url).path if url else settings.chdb_path)


def _disk_key(settings: Settings) -> bytes:
    from infra.keyring import data_key  # the keyring opens the event store's key store: only when chDB needs it

    return data_key(settings, "clickhouse")


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
