"""Processes starting at the same moment on one fresh PostgreSQL schema all open their stores.

The workers of `cdp ingest`, a second ingest machine and the core all run DDL as they
open the event store, intake log, key store and dead-letter store. PostgreSQL does not
serialise it: without infra/eventstore.opening_stores two of them starting together fail
with "tuple concurrently updated" or a duplicate pg_type key (seen in CI).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from typing import Any

from infra.config import Settings
from infra.eventstore import eventsourcing_env, open_intake_log, open_keyring, opening_stores, prepare_event_store
from ingest.dead_letters import DeadLetterStore

PROCESSES = 4


def _open_all(settings: Settings, start: Any, results: Any) -> None:
    """What an ingest worker opens, in the order it does, released at once with the others."""
    from domain.directory import Directory

    start.wait(60)
    try:
        env = eventsourcing_env(settings)
        with opening_stores(settings):
            prepare_event_store(settings, env)
            directory = Directory(env, sealer=open_keyring(settings))
            open_intake_log(settings)
            DeadLetterStore(directory.recorder, directory.sealer)
        results.put("opened")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_fresh_schema_together_all_start(settings: Settings, postgres_url: str) -> None:
    from infra.keyring import new_master_key

    shared = replace(settings, event_store=postgres_url, master_key=new_master_key())
    context = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    start, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_open_all, args=(shared, start, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    assert outcomes == ["opened"] * PROCESSES
