"""The pipeline gives each processor the log past its own position, in order."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from streams.messages import Message, RulesMessage
from streams.pipeline import Pipeline


class Recorder:
    def __init__(self, name: str, seen: list[tuple[str, int]]) -> None:
        self.name = name
        self.seen = seen

    def process(self, messages: list[Message]) -> int:
        self.seen += [(self.name, m.position) for m in messages]
        return max(m.position for m in messages)


def page(*positions: int) -> list[Message]:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return [RulesMessage(position=p, event_id=f"e{p}", workspace_id="ws", profile_id="", recorded_at=at, version=p,
                         rules={}) for p in positions]  # fmt: skip


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


class Picky:
    """Applies every message but those at `bad` positions; a page holding one fails whole, as a bulk insert does."""

    name = "picky"

    def __init__(self, bad: set[int], error: type[Exception] = ValueError) -> None:
        self.bad = bad
        self.error = error
        self.applied: list[int] = []
        self.calls = 0

    def process(self, messages: list[Message]) -> int:
        self.calls += 1
        if any(m.position in self.bad for m in messages):
            raise self.error("cannot hold this value")
        self.applied += [m.position for m in messages]
        return max(m.position for m in messages)


class Quarantine:
    def __init__(self) -> None:
        self.entries: list[tuple[str, int, str]] = []

    def record(self, projection: str, message: Message, exc: BaseException) -> None:
        self.entries.append((projection, message.position, str(exc)))


def test_entries_that_fail_alone_are_quarantined_and_the_rest_of_the_page_applied_in_order() -> None:
    picky, quarantine = Picky(bad={3, 7}), Quarantine()
    pipeline = Pipeline([picky], {}, save=lambda n, p: None, quarantine=quarantine, retry_pause=0)
    assert pipeline.process(page(*range(1, 11))) == 10
    assert picky.applied == [1, 2, 4, 5, 6, 8, 9, 10]
    assert quarantine.entries == [("picky", 3, "cannot hold this value"), ("picky", 7, "cannot hold this value")]


def test_a_transient_failure_is_not_quarantined_but_left_to_the_driver() -> None:
    picky, quarantine = Picky(bad={2}, error=ConnectionError), Quarantine()
    pipeline = Pipeline(
        [picky], {}, save=lambda n, p: None, quarantine=quarantine, transient=(ConnectionError,), retry_pause=0
    )
    with pytest.raises(ConnectionError):
        pipeline.process(page(1, 2, 3))
    assert quarantine.entries == [] and picky.calls == 1


def test_without_a_quarantine_a_failure_fails_the_page() -> None:
    pipeline = Pipeline([Picky(bad={1})], {}, save=lambda n, p: None)
    with pytest.raises(ValueError):
        pipeline.process(page(1, 2))


def test_retry_applies_one_entry_again_and_reports_what_still_fails() -> None:
    picky = Picky(bad={5})
    pipeline = Pipeline([picky], {}, save=lambda n, p: None, quarantine=Quarantine(), retry_pause=0)
    [entry] = page(5)
    assert isinstance(pipeline.retry("picky", entry), ValueError)
    picky.bad.clear()  # the fix
    assert pipeline.retry("picky", entry) is None and picky.applied == [5]
    assert isinstance(pipeline.retry("nobody", entry), LookupError)
