"""CPU time per stage of the core process, for the benchmark's per-stage profile and for operators.

Each stage (the resolver, each processor, the relay, reading the log) adds the CPU
time of its own thread (`time.thread_time`) and the number of entries it handled
to two counters on `/metrics`; the CPU per entry of a stage is their ratio. Work
that runs on threads of its own (ClickHouse's background merges, Kafka's network
thread, HTTP) is not in any stage: the difference between the process's CPU time
and the sum of the stages.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter

STAGE_CPU = Counter("cdp_stage_cpu_seconds", "CPU time of each stage's thread in the core process", ["stage"])
STAGE_ENTRIES = Counter("cdp_stage_entries", "Entries each stage of the core process handled", ["stage"])


@contextmanager
def measured(stage: str, entries: int) -> Iterator[None]:
    """Count the CPU time of the block, on this thread, and `entries`, for `stage`."""
    started = time.thread_time()
    try:
        yield
    finally:
        STAGE_CPU.labels(stage).inc(time.thread_time() - started)
        STAGE_ENTRIES.labels(stage).inc(entries)
