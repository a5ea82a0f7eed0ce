"""aiokafka's log records from a producer's sender thread: none during an outage, and
otherwise one a minute per message template, so a broker dying mid-send does not fill
the service's log with one line per retry. The thread marks an outage (``quiet``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["SenderThread"]

_LOG_EVERY = 60.0  # seconds between repeats of one aiokafka log message from a sender


class SenderThread(threading.Thread):
    quiet = False  # True during an outage: mutes aiokafka's per-attempt log records

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_logged: dict[object, float] = {}  # aiokafka message template -> time


class _QuietDuringOutage(logging.Filter):
    """aiokafka records from a sender thread: none during an outage, else one a minute
    per message template (a broker dying mid-send makes aiokafka log every retry)."""

    def filter(self, record: logging.LogRecord) -> bool:
        thread = threading.current_thread()
        if not isinstance(thread, SenderThread):
            return True
        if thread.quiet:
            return False
        now = time.monotonic()
        if now - thread.last_logged.get(record.msg, -_LOG_EVERY) < _LOG_EVERY:
            return False
        thread.last_logged[record.msg] = now
        return True


_QUIET = _QuietDuringOutage()
for _name in (
    "aiokafka", "aiokafka.conn", "aiokafka.cluster",
    "aiokafka.producer.producer", "aiokafka.producer.sender",
):
    logging.getLogger(_name).addFilter(_QUIET)
