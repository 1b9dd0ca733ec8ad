"""A reply from a writer thread to whoever handed it work: a coroutine on its event loop, or a waiting thread.

The write side's single-writer threads (the resolver, each process's group committer)
take work from a queue and answer each caller once it is done; `Reply` is that answer,
the same for a request on the HTTP server's event loop and for a caller on a thread of
its own (the Kafka ingest consumer, the CLI, tests).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class Reply:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """With `loop`, the answer is awaited there (`wait_async`); without, a thread blocks on `wait`."""
        self._loop = loop
        self._future: asyncio.Future[Any] | None = loop.create_future() if loop is not None else None
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    @classmethod
    def here(cls) -> "Reply":
        """A reply awaited on the running event loop."""
        return cls(asyncio.get_running_loop())

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Answer, from the writer's thread."""
        if self._loop is None:
            self._result, self._error = result, error
            self._done.set()
        else:
            self._loop.call_soon_threadsafe(self._settle_future, result, error)

    def _settle_future(self, result: Any, error: BaseException | None) -> None:
        assert self._future is not None
        if self._future.cancelled():  # the caller went away (a client hung up)
            return
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(result)

    async def wait_async(self) -> Any:
        assert self._future is not None, "a reply made without an event loop is waited for with wait()"
        return await self._future

    def wait(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result
