"""Before serving: do the projections belong to this event log, and not to a later state of it?

A restored (older) event store, or a data dir copied while the platform ran,
can leave projections and the relay holding positions beyond the log's end:
new events would reuse those positions and never be projected or published,
while projected events no longer in the log would still be served. A different
log under the same projections mixes two histories. Either way the platform
refuses to start and names the command that repairs it, instead of serving a
mixture.

The log is recognised by a fingerprint of its first entry (the default
workspace's creation: its id, topic and stored state, which carries the time it
was created), recorded when projections are first built on it.
"""

from __future__ import annotations

import errno
import hashlib
import socket
from pathlib import Path
from typing import Any

from infra.config import ConfigError, Settings


class StaleProjections(ConfigError):
    """The projections were built from another log, or from a later state of this one."""


def log_fingerprint(app: Any) -> str | None:
    """A fingerprint of the log's first entry (None for an empty log)."""
    first = app.read_log(0, 1)
    if not first:
        return None
    n = first[0]
    digest = hashlib.sha256(f"{n.originator_id}/{n.originator_version}/{n.topic}/".encode() + bytes(n.state))
    return digest.hexdigest()[:32]


def check_projections(app: Any, store: Any, elsewhere: dict[str, int] | None = None) -> None:
    """Raise `StaleProjections` if the projections do not follow this log; record the log's fingerprint once.

    `elsewhere`: positions of stages kept outside ClickHouse (the relay's, with the intake log)."""
    last = app.last_position()
    fingerprint = log_fingerprint(app)
    recorded = store.log_origin()
    problems = []
    if recorded is not None and fingerprint is not None and recorded != fingerprint:
        problems.append("the event store is not the one these projections were built from")
    ahead = sorted(
        (f"{name}" + (f" (partition {partition})" if partition else ""), position)
        for name, parts in (store.positions() | {name: {0: p} for name, p in (elsewhere or {}).items()}).items()
        for partition, position in parts.items()
        if position > last
    )
    if ahead:
        listed = ", ".join(f"{name} at {position}" for name, position in ahead)
        problems.append(f"the event log ends at position {last} but {listed} applied beyond it")
    if problems:
        raise StaleProjections(
            f"the projections in ClickHouse database {store.db!r} do not match the event log: "
            f"{'; '.join(problems)} (an older or copied event store was put back?). Serving them would mix "
            "histories and lose new events. Run `cdp rebuild` to replay this log into fresh projections "
            "(cdp.events is then published again from position 1), then `cdp up`."
        )
    if recorded is None and fingerprint is not None:
        store.record_log_origin(fingerprint)


class PortUnavailable(ConfigError):
    """A port the platform is configured to listen on cannot be listened on."""


def _free_port(host: str, family: int) -> int | None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return None
        return int(sock.getsockname()[1])


def port_problem(host: str, port: int, variable: str, command: str = "cdp up") -> str | None:
    """Why nothing here could listen on host:port (as uvicorn binds: SO_REUSEADDR), or None when it could."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return None
        except socket.gaierror:
            return (f"CDP_HTTP_HOST={host!r} is not a name this machine resolves; set it to an address, such as "
                    "127.0.0.1 (this machine only) or 0.0.0.0 (every address)")  # fmt: skip
        except OSError as exc:
            code = exc.errno
    if code == errno.EADDRINUSE:
        free = _free_port(host, family)
        other = f", e.g. `{variable}={free} {command}`" if free else ""
        return (f"{variable}={port}: port {port} on {host} is taken (another program listens there; `ss -ltnp "
                f"'sport = :{port}'` shows which): stop it, or choose another port with {variable}{other}")  # fmt: skip
    if code == errno.EADDRNOTAVAIL:
        return (f"CDP_HTTP_HOST={host!r} is not an address of this machine; set it to one of its addresses, such "
                "as 127.0.0.1 (this machine only) or 0.0.0.0 (every address)")  # fmt: skip
    if code == errno.EACCES:
        return (f"{variable}={port}: this user may not listen on port {port} (below 1024 needs privileges); "
                f"choose a port from 1024 up with {variable}")  # fmt: skip
    said = errno.errorcode.get(code or 0, code)
    return f"{variable}={port}: cannot listen on {host}:{port} ({said}); choose another port with {variable}"


def _stale_broker(data_dir: Path, port: int) -> bool:
    """Whether a bundled broker a killed platform left behind holds the port (the next start stops it)."""
    try:
        pid = int((data_dir / "broker.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return False
    return b"tansu" in cmdline and f"127.0.0.1:{port}".encode() in cmdline


def check_ports(settings: Settings, ingest_only: bool = False, command: str = "cdp up") -> None:
    """Raise `PortUnavailable` for the first configured port nothing here could listen on: the API's, the ingest
    workers' (when there are any) and the bundled broker's (unless it is one this data dir's last run left)."""
    wanted = [] if ingest_only else [(settings.http_host, settings.http_port, "CDP_HTTP_PORT")]
    if ingest_only or settings.ingest_workers:
        wanted.append((settings.http_host, settings.ingest_port, "CDP_INGEST_PORT"))
    if not ingest_only and settings.uses_bundled_broker and not _stale_broker(settings.data_dir, settings.kafka_port):
        wanted.append(("127.0.0.1", settings.kafka_port, "CDP_KAFKA_PORT"))
    for host, port, variable in wanted:
        problem = port_problem(host, port, variable, command)
        if problem:
            raise PortUnavailable(problem)
