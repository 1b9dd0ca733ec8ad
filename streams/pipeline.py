"""Several processors over one stream of log messages, each from its own applied position.

The drivers read and decode the log once and hand every page to the pipeline,
which runs the processors in order (profiles first: later processors read the
profiles it wrote). Each processor keeps its own position, so a processor added
to a running deployment starts from the beginning of the log while the others
skip what they already applied.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from streams.messages import Message


class Processor(Protocol):
    """A transport-free processor: idempotent, applies a batch of messages in log order."""

    name: str

    def process(self, messages: list[Message]) -> int: ...


class Pipeline:
    """Runs `processors` in order; `save(name, position)` records what each has applied."""

    def __init__(
        self, processors: Sequence[Processor], applied: dict[str, int], save: Callable[[str, int], None]
    ) -> None:
        names = [p.name for p in processors]
        if len(set(names)) != len(names):
            raise ValueError(f"processor names must be unique, got {names}")
        self.processors = list(processors)
        self.applied = {p.name: applied.get(p.name, 0) for p in processors}
        self._save = save

    @property
    def start(self) -> int:
        """The position to read the log after: the least any processor has applied."""
        return min(self.applied.values(), default=0)

    def process(self, messages: list[Message]) -> int:
        """Give each processor the messages past its own position; returns the highest position seen."""
        top = 0
        for processor in self.processors:
            fresh = [m for m in messages if m["position"] > self.applied[processor.name]]
            if fresh:
                top = max(top, processor.process(fresh))
        return top

    def save(self, position: int) -> None:
        """Record that every processor has applied the log through `position`."""
        for name, applied in self.applied.items():
            if position > applied:
                self._save(name, position)
                self.applied[name] = position
