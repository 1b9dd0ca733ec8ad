"""The embedded ClickHouse's storage: every table on an encrypted disk whose key never touches the disk.

chDB takes a ClickHouse configuration file. The one written here into the chDB
directory (`cdp-storage.xml`) declares a local disk, an AES-256 `encrypted` disk
over it, and makes that the `default` storage policy: every table the migrations,
rebuilds and scratch databases create is encrypted without naming a policy. The
file names the key's environment variable (`from_env`), never the key: the
variable holds the data dir's "clickhouse" data key (infra/keyring.py) only while
the engine opens, so it is neither written anywhere nor inherited by the
processes cdp starts afterwards.

Two other ways plain text would reach the disk are closed too. chDB keeps the
spills of large sorts, aggregations and joins in its `tmp/` directory, which it
cannot put on an encrypted disk, so every client turns spilling off
(`NO_SPILL`): such a query fails at its memory limit instead. And
clickhouse-connect hands rows to chDB through a temporary file; here that file
lives in memory (`memfd_create`), so inserted rows never touch a disk.

A chDB directory written before (plain tables) is never mixed with encrypted
ones: opening it raises `PlainProjections`, which says how to rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Literal
from xml.sax.saxutils import escape

from infra.config import ConfigError

CONFIG_NAME = "cdp-storage.xml"
KEY_ENV = "CDP_CHDB_DISK_KEY"  # set only while the engine opens
Layout = Literal["new", "plain", "encrypted"]

# Spills go to <chdb dir>/tmp in plain text: off for every client of an encrypted engine.
NO_SPILL = {
    f"max_bytes_{ratio}before_external_{kind}": 0
    for kind in ("sort", "group_by", "join", "distinct")
    for ratio in ("", "ratio_")
}


class PlainProjections(ConfigError):
    """The chDB directory holds tables written before encryption at rest."""


def layout(path: Path) -> Layout:
    """What the chDB directory holds: nothing yet, plain tables, or the encrypted layout."""
    if any(path.glob("store/*/*/format_version.txt")):  # a table's parts on the plain default disk
        return "plain"
    return "encrypted" if (path / CONFIG_NAME).exists() else "new"


def storage_config(path: Path) -> str:
    """The configuration chDB opens `path` with; no key in it, only the variable that holds one."""
    local = escape(str(path / "disks" / "local")) + "/"
    return f"""<clickhouse>
  <storage_configuration>
    <disks>
      <cdp_local><type>local</type><path>{local}</path></cdp_local>
      <cdp_encrypted>
        <type>encrypted</type>
        <disk>cdp_local</disk>
        <path>encrypted/</path>
        <algorithm>AES_256_CTR</algorithm>
        <key_hex from_env="{KEY_ENV}"></key_hex>
      </cdp_encrypted>
    </disks>
    <policies>
      <default><volumes><main><disk>cdp_encrypted</disk></main></volumes></default>
    </policies>
  </storage_configuration>
</clickhouse>
"""


def _write_config(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path / CONFIG_NAME
    tmp = path / (CONFIG_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(storage_config(path))
    tmp.replace(target)  # rewritten at each start: the paths follow a moved directory
    return target


@contextlib.contextmanager
def _key_in_environment(key: bytes) -> Iterator[None]:
    if len(key) != 32:
        raise ValueError("the ClickHouse disk key must be 32 bytes (AES-256)")
    os.environ[KEY_ENV] = key.hex()
    try:
        yield
    finally:
        os.environ.pop(KEY_ENV, None)


def in_use(path: Path) -> bool:
    """Whether another process holds the engine (ClickHouse locks `status`)."""
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def open_engine(path: Path, encrypt_new: bool, key: Callable[[], bytes]) -> Any:
    """The first clickhouse-connect client on the process's chDB engine at `path`.

    `encrypt_new`: whether a new directory gets the encrypted layout (CDP_ENCRYPTION);
    an existing directory keeps its own. `key` is asked only when the engine needs it.
    """
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ProgrammingError

    found = layout(path)
    if found == "plain" and (encrypt_new or (path / CONFIG_NAME).exists()):
        raise PlainProjections(
            f"the embedded ClickHouse in {path} holds projections written before encryption at rest, in plain "
            f"text. They are derived from the event log: stop cdp, delete that directory (rm -r {path}), then run "
            "`cdp rebuild` to rebuild them encrypted (or set CDP_ENCRYPTION=off to go on using it unencrypted)"
        )
    if found == "plain" or (found == "new" and not encrypt_new):
        return clickhouse_connect.get_client(interface="chdb", path=str(path))
    config = _write_config(path)
    try:
        with _key_in_environment(key()):
            return clickhouse_connect.get_client(
                interface="chdb", path=str(path), chdb_options={"config-file": str(config)}, settings=NO_SPILL
            )
    except ProgrammingError as exc:
        if in_use(path):
            raise ConfigError(
                f"the embedded ClickHouse in {path} is open in another process (one process per chDB directory): "
                "stop the other cdp (`cdp up`, `cdp rebuild`) first"
            ) from exc
        if found == "encrypted":
            raise ConfigError(
                f"the embedded ClickHouse in {path} does not open with this data dir's disk key: it was encrypted "
                "with the key store and master key of another data dir. Use the key store (and CDP_MASTER_KEY) it "
                f"was created with, or delete {path} and run `cdp rebuild`"
            ) from exc
        raise


def other_client(path: Path) -> Any:
    """Another client (its own connection handle) on the engine `open_engine` opened in this process."""
    import clickhouse_connect

    if layout(path) != "encrypted":
        return clickhouse_connect.get_client(interface="chdb", path=str(path))
    config = path / CONFIG_NAME
    return clickhouse_connect.get_client(
        interface="chdb", path=str(path), chdb_options={"config-file": str(config)}, settings=NO_SPILL
    )


class _MemoryFile:
    """A temporary file in memory, where clickhouse-connect's chDB backend wants one on disk.

    The engine (in this process) reads it back through /proc/self/fd; the
    descriptor closes when the backend drops the file, after its INSERT ran.
    """

    def __init__(self, suffix: str = "", delete: bool = False, **_: Any) -> None:
        self._fd = os.memfd_create("cdp-insert" + suffix, os.MFD_CLOEXEC)
        self.name = f"/proc/self/fd/{self._fd}"

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self._fd, view) :]
        return len(data)

    def close(self) -> None:
        pass  # still to be read by the INSERT that follows

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class _MemoryTempfiles:
    NamedTemporaryFile = _MemoryFile


def keep_inserts_in_memory() -> bool:
    """Route clickhouse-connect's chDB inserts through memory files (Linux); False where that is impossible."""
    from clickhouse_connect.driver._backend import chdb_backend

    if not hasattr(os, "memfd_create") or not Path("/proc/self/fd").is_dir():
        return False
    chdb_backend.tempfile = _MemoryTempfiles  # type: ignore[assignment]
    return True
