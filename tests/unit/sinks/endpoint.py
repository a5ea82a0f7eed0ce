"""The embedded store's query endpoint served in-process for a test: its own event loop in
a thread, over the module's store, with the audit publisher replaced by ``send``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from pipeline.audit import Auditor
from pipeline.config import QuerySettings
from pipeline.sinks.clickhouse.http_interface import Endpoint, serve_http


@contextmanager
def serving(store: Any, query: QuerySettings,
            send: Callable[[Any], Awaitable[None]]) -> Iterator[Endpoint]:
    settings = msgspec.structs.replace(store.settings, query=query)
    path = settings.clickhouse_dsn.removeprefix("chdb://")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    audit = Auditor(settings, "query", send=send)
    runner, end = asyncio.run_coroutine_threadsafe(serve_http(path, settings, audit),
                                                   loop).result(30)
    try:
        yield end
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
