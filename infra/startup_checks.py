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

import hashlib
from typing import Any

from infra.config import ConfigError


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
