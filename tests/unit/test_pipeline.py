"""The pipeline gives each processor the log past its own position, in order."""

from __future__ import annotations

import pytest

from streams.messages import Message
from streams.pipeline import Pipeline


class Recorder:
    def __init__(self, name: str, seen: list[tuple[str, int]]) -> None:
        self.name = name
        self.seen = seen

    def process(self, messages: list[Message]) -> int:
        self.seen += [(self.name, m["position"]) for m in messages]
        return max(m["position"] for m in messages)


def page(*positions: int) -> list[Message]:
    return [{"position": p} for p in positions]


def test_each_processor_starts_from_its_own_position_and_runs_in_order() -> None:
    seen: list[tuple[str, int]] = []
    saved: list[tuple[str, int]] = []
    pipeline = Pipeline(
        [Recorder("profiles", seen), Recorder("tags", seen)], {"profiles": 2}, save=lambda n, p: saved.append((n, p))
    )
    assert pipeline.start == 0  # tags is new: the log is read from the beginning
    assert pipeline.process(page(1, 2, 3)) == 3
    assert seen == [("profiles", 3), ("tags", 1), ("tags", 2), ("tags", 3)]
    pipeline.save(3)
    assert saved == [("profiles", 3), ("tags", 3)] and pipeline.start == 3
    pipeline.save(3)  # nothing new to record
    assert len(saved) == 2


def test_processor_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Pipeline([Recorder("a", []), Recorder("a", [])], {}, save=lambda n, p: None)
