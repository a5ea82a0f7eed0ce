"""The repeat filter with plain logging: first record through, repeats counted, one summary."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from pipeline.logs import RepeatFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def setup() -> Iterator[tuple[Collect, RepeatFilter, Clock]]:
    clock = Clock()
    handler = Collect()
    repeat = RepeatFilter(handler, period=30.0, clock=clock)
    handler.addFilter(repeat)
    logger = logging.getLogger("test.logs")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler, repeat, clock
    finally:
        logger.removeHandler(handler)


def log() -> logging.Logger:
    return logging.getLogger("test.logs")


def test_a_flood_is_one_line_then_one_summary_per_period(setup) -> None:
    handler, repeat, clock = setup
    for i in range(3400):  # a second of outage at the rate the issue measured
        clock.now += 1 / 3400
        log().error("Unable connect to node with id %s: %s", 1, f"refused {i}")
    assert handler.lines == ["Unable connect to node with id 1: refused 0"]
    for _ in range(29 * 3400):  # the rest of the period: still nothing new
        clock.now += 1 / 3400
        log().error("Unable connect to node with id %s: %s", 1, "refused")
    assert len(handler.lines) == 1
    clock.now += 1.0  # period over: the next record brings the summary, and is itself counted
    log().error("Unable connect to node with id %s: %s", 1, "refused")
    assert len(handler.lines) == 2
    summary = handler.records[1]
    assert summary.levelno == logging.ERROR and summary.name == "test.logs"
    assert summary.getMessage().startswith(f"{30 * 3400 - 1} more like 'Unable connect to node")
    assert "last: Unable connect to node with id 1: refused" in summary.getMessage()
    # the record that closed the period starts the next one: flush reports exactly it
    repeat.flush()
    assert handler.lines[2].startswith("1 more like")


def test_kinds_are_logger_level_and_template(setup) -> None:
    handler, _, _ = setup
    other = logging.getLogger("test.logs.other")
    for _ in range(5):
        log().error("a %s", 1)
        log().warning("a %s", 1)  # another level
        log().error("b %s", 1)  # another template
        other.error("a %s", 1)  # another logger (propagates to the same handler)
    assert handler.lines == ["a 1", "a 1", "b 1", "a 1"]
    assert [r.levelno for r in handler.records] == [40, 30, 40, 40]


def test_after_a_quiet_period_the_next_record_passes_and_no_summary_is_due(setup) -> None:
    handler, _, clock = setup
    log().warning("broker down")
    clock.now += 31
    log().warning("broker down")
    assert handler.lines == ["broker down", "broker down"]


def test_a_quiet_kind_is_summarised_with_the_next_record_of_any_kind(setup) -> None:
    handler, _, clock = setup
    for _ in range(10):
        log().error("retrying send: %s", "timeout")
    clock.now += 31
    log().info("Kafka reachable again")
    assert handler.lines[0] == "retrying send: timeout"
    assert handler.lines[1].startswith("9 more like 'retrying send: %s' in the last 30 s")
    assert handler.lines[2] == "Kafka reachable again"


def test_debug_is_never_limited(setup) -> None:
    handler, _, _ = setup
    for i in range(100):
        log().debug("attempt %d", i)
    assert len(handler.lines) == 100


def test_status_and_progress_lines_are_never_limited(setup) -> None:
    """INFO carries the periodic status line and progress: every one is written."""
    handler, _, clock = setup
    for i in range(50):
        log().info("processing: %d messages", i)
        clock.now += 1
    assert len(handler.lines) == 50


def test_exceptions_and_non_string_messages(setup) -> None:
    handler, repeat, _ = setup
    for _ in range(3):
        try:
            raise ConnectionError("refused")
        except ConnectionError:
            log().exception("send failed")
        log().error(ConnectionError("x"))  # a message that is not a string
    assert handler.lines == ["send failed", "x"]
    assert handler.records[0].exc_info is not None
    repeat.flush()
    assert len(handler.lines) == 4


def test_bad_arguments_in_a_suppressed_record_do_not_break_the_summary(setup) -> None:
    handler, repeat, _ = setup
    log().error("value %d", 1)
    bad = log().makeRecord("test.logs", logging.ERROR, __file__, 1, "value %d", ("nan",), None)
    handler.handle(bad)  # straight to the handler: pytest's own handler would raise on it
    repeat.flush()
    assert handler.lines[1] == "1 more like 'value %d' in the last 30 s (repeats suppressed)"


def test_threads_count_every_record() -> None:
    handler = Collect()
    repeat = RepeatFilter(handler, period=3600.0)
    handler.addFilter(repeat)
    logger = logging.getLogger("test.logs.threads")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        def flood() -> None:
            for _ in range(2000):
                logger.error("down")
        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        repeat.flush()
        assert handler.lines[0] == "down"
        assert handler.lines[1].startswith("7999 more like 'down'")
        assert len(handler.lines) == 2
    finally:
        logger.removeHandler(handler)


def test_install_puts_one_filter_per_handler_once() -> None:
    first, second = Collect(), Collect()
    installed = install([first, second])
    assert len(installed) == 2 and installed[0].handler is first
    assert install([first, second]) == []  # idempotent
    assert sum(isinstance(f, RepeatFilter) for f in first.filters) == 1


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period"):
        RepeatFilter(Collect(), period=0)


# ---------------------------------------------------------------------------- JSON lines
def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    import json

    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_format_is_one_object_per_line_with_the_ids_in_scope(
        capsys: pytest.CaptureFixture[str], restore_root: None) -> None:
    from pipeline.logs import configure, scope

    configure("json", "info")
    log = logging.getLogger("pipeline.test")
    with scope(stage="stage1", topic="inferwatch.events", partition=4):
        with scope(offset=1234):
            log.info("batch of %d records", 500)
        log.warning("slow insert", extra={"series": "gpt-x|v1|chat", "event_id": "e-9"})
    log.info("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed with trace", extra={"trace_id": "ab" * 16})
    first, second, third, fourth = _json_lines(capsys)
    assert first["message"] == "batch of 500 records" and first["level"] == "INFO"
    assert first["logger"] == "pipeline.test" and first["time"].endswith("Z")
    assert (first["stage"], first["topic"], first["partition"], first["offset"]) == (
        "stage1", "inferwatch.events", 4, 1234)
    assert "offset" not in second and second["partition"] == 4
    assert (second["series"], second["event_id"]) == ("gpt-x|v1|chat", "e-9")
    assert not {"partition", "offset", "stage"} & third.keys()
    assert fourth["trace_id"] == "ab" * 16 and "ValueError: boom" in fourth["exception"]


def test_json_format_keeps_the_repeat_limit_and_odd_values_readable(
        capsys: pytest.CaptureFixture[str], restore_root: None) -> None:
    from pipeline.logs import configure

    configure("json", "info")
    log = logging.getLogger("pipeline.test.flood")
    for attempt in range(200):
        log.error("cannot reach %s (attempt %d)", "broker:9092", attempt,
                  extra={"partition": object()})
    lines = _json_lines(capsys)
    assert len(lines) == 1 and lines[0]["message"] == "cannot reach broker:9092 (attempt 0)"
    assert lines[0]["partition"].startswith("<object")


def test_text_stays_the_default(capsys: pytest.CaptureFixture[str],
                                restore_root: None) -> None:
    from pipeline.logs import configure

    configure()
    configure()  # twice (CLI, then worker): still one handler
    logging.getLogger("pipeline.test").warning("plain %s", "text")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith("[WARNING] plain text")
