"""Several processors over one stream of log messages, each from its own applied position.

The drivers read and decode the log once and hand every page to the pipeline,
which runs the processors in order (KPI facts, then profiles, then tags: each reads what
the ones before it wrote). Each processor keeps its own position, so a processor added
to a running deployment starts from the beginning of the log while the others
skip what they already applied.

Nothing stops the read side: when a processor fails on a page for a reason that
is not passing (not in `transient`), the page is split in halves until the
entries that fail on their own are found; each is tried once more and then
quarantined (recorded with the processor, the position and the reason), and
the rest of the page is applied. The same happens in a rebuild, so live still
equals rebuild. A transient failure (a broker or database unreachable) leaves
the page to the driver, which retries it whole.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol, Sequence

from prometheus_client import Counter

from streams.messages import Message
from streams.stages import measured

log = logging.getLogger(__name__)
QUARANTINED = Counter("cdp_quarantined_events", "Log entries a projection could not apply, set aside", ["projection"])


class Processor(Protocol):
    """A transport-free processor: idempotent, applies a batch of messages in log order."""

    name: str

    def process(self, messages: list[Message]) -> int: ...


class Quarantine(Protocol):
    """Where entries a processor cannot apply are recorded (projections/quarantine.py implements it)."""

    def record(self, projection: str, message: Message, exc: BaseException) -> None: ...


class Pipeline:
    """Runs `processors` in order; `save(name, position)` records what each has applied."""

    def __init__(
        self,
        processors: Sequence[Processor],
        applied: dict[str, int],
        save: Callable[[str, int], None],
        quarantine: Quarantine | None = None,
        transient: tuple[type[BaseException], ...] = (),
        retry_pause: float = 0.1,
    ) -> None:
        names = [p.name for p in processors]
        if len(set(names)) != len(names):
            raise ValueError(f"processor names must be unique, got {names}")
        self.processors = list(processors)
        self.applied = {p.name: applied.get(p.name, 0) for p in processors}
        self._save = save
        self.quarantine = quarantine
        self.transient = transient
        self.retry_pause = retry_pause
        self.lock = threading.RLock()  # one page (or one retry) at a time: processors are single-threaded

    @property
    def start(self) -> int:
        """The position to read the log after: the least any processor has applied."""
        return min(self.applied.values(), default=0)

    def process(self, messages: list[Message]) -> int:
        """Give each processor the messages past its own position; returns the highest position seen."""
        top = 0
        with self.lock:
            for processor in self.processors:
                fresh = [m for m in messages if m.position > self.applied[processor.name]]
                if fresh:
                    top = max(top, self._apply(processor, fresh))
        return top

    def _apply(self, processor: Processor, messages: list[Message]) -> int:
        try:
            with measured(processor.name, len(messages)):
                return processor.process(messages)
        except self.transient:
            raise
        except Exception:
            if self.quarantine is None:
                raise
            if len(messages) > 1:  # find the entries that fail on their own; apply the others
                half = len(messages) // 2
                return max(self._apply(processor, messages[:half]), self._apply(processor, messages[half:]))
        time.sleep(self.retry_pause)  # one entry: once more, in case the fault was passing, then set it aside
        try:
            return processor.process(messages)
        except self.transient:
            raise
        except Exception as exc:
            message = messages[0]
            # The error's type only: its text can quote the entry's values (a ClickHouse parse error, a trait);
            # the whole reason is kept with the entry, for `cdp quarantine` (the read key) to show.
            log.warning(
                "%s could not apply log position %s (%s); quarantined, the rest moves on; `cdp quarantine` says why",
                processor.name, message.position, type(exc).__name__,
            )  # fmt: skip
            self.quarantine.record(processor.name, message, exc)
            QUARANTINED.labels(processor.name).inc()
            return message.position

    def retry(self, projection: str, message: Message) -> BaseException | None:
        """Apply one quarantined entry again (after a fix); returns the error if it still fails.

        The processors after it apply the entry again too (they are idempotent): they may have read
        what the retried one had not written yet (profiles read the KPI facts).
        """
        names = [p.name for p in self.processors]
        if projection not in names:
            return LookupError(f"no projection {projection!r}; known: {', '.join(self.applied)}")
        with self.lock:
            try:
                self.processors[names.index(projection)].process([message])
            except Exception as exc:
                return exc
            for later in self.processors[names.index(projection) + 1:]:
                try:
                    later.process([message])
                except Exception:  # its own failure is its own quarantine's business, not this retry's
                    log.exception("%s could not re-apply a retried entry", later.name)
        return None

    def save(self, position: int) -> None:
        """Record that every processor has applied the log through `position`."""
        for name, applied in self.applied.items():
            if position > applied:
                self._save(name, position)
                self.applied[name] = position
