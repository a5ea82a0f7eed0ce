"""Stage 1 (per source partition, and its outbox in the stage), stage 2 (merge and
finalize) and the cardinality guard.

Pure state machines fed hand-built event sequences: no Kafka, no faust, no I/O.
Window 10 s, lateness 2 s, idle timeout 5 s, corrections for 3 windows (30 s).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
import pytest

from pipeline.config import MetricsSettings, Settings, TopicSettings
from pipeline.runtime.stage import Record, Step
from pipeline.runtime.state import apply_changes
from pipeline.windows.guard import OTHER, CardinalityGuard
from pipeline.windows.partial_stage import PartialStage
from pipeline.windows.partials import Partial, Watermark, decode_partials, encode_partial
from pipeline.windows.profile import WindowProfile, series_key
from pipeline.windows.stage1 import Stage1Partition
from pipeline.windows.stage2 import Stage2Partition
from schemas.event import InferenceEvent
from schemas.metrics import WindowMetrics

SLO = 500.0
WALL = 10_000.0  # a constant wall clock: no idle advance unless a test moves it
LATER = WALL + 1e6  # far enough for the idle advance to close everything
SETTINGS = MetricsSettings(
    window_seconds=10, lateness_seconds=2, idle_timeout_seconds=5,
    correction_horizon_windows=3, series_labels=["model"], feature_usage_attributes=[],
    latency_slo_ms=SLO, relative_accuracy=0.01, max_series_per_worker=1000,
)
M = series_key({"model": "m"})
Message = tuple[int, list[InferenceEvent]]
_ids = itertools.count()


def ev(ts: float, model: str = "m", latency: float = 100.0, **fields) -> InferenceEvent:
    return InferenceEvent(event_id=f"e{next(_ids)}", timestamp=ts, model=model,
                          latency_ms=latency, **fields)


def msgs(*timestamps: float, first_offset: int = 0) -> list[Message]:
    """One single-event message per timestamp, consecutive offsets."""
    return [(first_offset + i, [ev(ts)]) for i, ts in enumerate(timestamps)]


def stage1(settings: MetricsSettings = SETTINGS, partition: int = 0,
           guard: CardinalityGuard | None = None) -> Stage1Partition:
    guard = guard or CardinalityGuard(settings.max_series_per_worker, tuple(settings.series_labels))
    return Stage1Partition(partition, settings, guard)


def feed(state: Stage1Partition, batches: Iterable[Sequence[Message]],
         wall: float = WALL) -> list[Partial]:
    """add() each batch then close(), as the processor does; the partials emitted."""
    out: list[Partial] = []
    for batch in batches:
        state.add(batch, wall)
        out += state.close(wall)
    return out


def profile(p: Partial) -> WindowProfile:
    return WindowProfile.from_builtins(p.profile)


def summary(partials: Iterable[Partial]) -> list[tuple[str, float, int, int, int, int]]:
    """(series, window start, src, seq, requests, late events), sorted."""
    return sorted((p.series_key, p.window_start, p.src_partition, p.seq,
                   profile(p).requests, profile(p).late_events) for p in partials)


def finalize(p: Partial) -> WindowMetrics:
    return profile(p).finalize(p.series_key, p.labels, p.window_start, p.window_end, 1, SLO)


def assert_metrics_equal(a: msgspec.Struct, b: msgspec.Struct) -> None:
    """Field by field; floats up to rounding (summation order may differ)."""
    da, db = msgspec.structs.asdict(a), msgspec.structs.asdict(b)
    assert da.keys() == db.keys()
    for key, value in da.items():
        if isinstance(value, float) and isinstance(db[key], float):
            assert math.isclose(value, db[key], rel_tol=1e-9, abs_tol=1e-12), key
        else:
            assert value == db[key], key


def assert_same_partials(got: list[Partial], expected: list[Partial]) -> None:
    assert summary(got) == summary(expected)
    ident = lambda p: (p.series_key, p.window_start, p.src_partition, p.seq)  # noqa: E731
    by_ident = {ident(p): p for p in expected}
    assert len(by_ident) == len(expected)
    for p in got:
        assert_metrics_equal(finalize(p), finalize(by_ident[ident(p)]))


def random_stream(seed: int, n: int, start: float = 0.0, models: Sequence[str] = ("m",),
                  max_jitter: float = 25.0) -> list[InferenceEvent]:
    """Roughly increasing event times: most within the lateness, some late, a few very late
    (but, with jitter <= 25 s, never past the 30 s correction horizon)."""
    rng = np.random.default_rng(seed)
    base = np.sort(rng.uniform(start, start + n * 0.1, n))
    events = []
    for t in base:
        r = rng.random()
        jitter = (rng.uniform(0, 1.9) if r < 0.8 else rng.uniform(2, 10) if r < 0.95
                  else rng.uniform(10, max_jitter))
        events.append(ev(round(max(0.0, float(t - jitter)), 3), model=str(rng.choice(models)),
                         latency=float(rng.lognormal(5, 1)),
                         status="error" if rng.random() < 0.1 else "ok"))
    return events


def as_messages(events: Sequence[InferenceEvent], seed: int, first_offset: int = 0
                ) -> list[Message]:
    """Pack events into messages of 1..3 events with consecutive offsets."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(events):
        k = int(rng.integers(1, 4))
        out.append((first_offset + len(out), list(events[i:i + k])))
        i += k
    return out


def split(items: Sequence, sizes: Iterable[int]) -> list[list]:
    out, i = [], 0
    for k in itertools.cycle(sizes):
        if i >= len(items):
            return out
        out.append(list(items[i:i + k]))
        i += k
    raise AssertionError("unreachable")


def random_split(items: Sequence, seed: int, max_size: int = 6) -> list[list]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(items):
        k = int(rng.integers(1, max_size + 1))
        out.append(list(items[i:i + k]))
        i += k
    return out


# =========================================================================== stage 1
def test_on_time_events_go_to_seq0_and_close_when_watermark_reaches_end():
    s = stage1()
    assert feed(s, [msgs(1, 5, 9.5)]) == []
    assert set(s.slots) == {(M, 0.0, 0)}
    assert feed(s, [msgs(11.9, first_offset=3)]) == []  # watermark 9.9 < end 10
    assert s.watermark(WALL) == pytest.approx(9.9)
    (p,) = feed(s, [msgs(12, first_offset=4)])  # watermark 10: [0, 10) closes
    assert (p.series_key, p.labels, p.window_start, p.window_end, p.src_partition, p.seq) == (
        M, {"model": "m"}, 0.0, 10.0, 0, 0)
    assert profile(p).requests == 3
    assert profile(p).late_events == 0
    assert set(s.slots) == {(M, 10.0, 0)}  # the closed slot is forgotten
    assert feed(s, [[]]) == []  # closing again emits nothing new
    assert not s.late and not s.too_late


def test_events_within_lateness_are_included_on_time():
    s = stage1()
    feed(s, [msgs(1, 11, 8, 9.99)])  # watermark 9 when 8 and 9.99 arrive: still open
    assert set(s.slots) == {(M, 0.0, 0), (M, 10.0, 0)}
    (p,) = feed(s, [msgs(12, first_offset=4)])
    assert (p.window_start, p.seq, profile(p).requests) == (0.0, 0, 3)
    assert not s.late


def test_late_events_go_to_correction_slots_that_close_one_window_later():
    s = stage1()
    (p0,) = feed(s, [msgs(1, 12)])  # [0, 10) closed at watermark 10
    assert profile(p0).requests == 1
    feed(s, [msgs(5, first_offset=2)])  # end 10 <= watermark 10: late, seq 1
    assert s.late == Counter({M: 1})
    assert (M, 0.0, 1) in s.slots
    assert feed(s, [msgs(21.9, first_offset=3)]) == []  # watermark 19.9: seq 1 still open
    out = feed(s, [msgs(22, first_offset=4)])  # watermark 20
    assert summary(out) == [(M, 0.0, 0, 1, 1, 1), (M, 10.0, 0, 0, 1, 0)]  # 12 alone in [10, 20)
    (corr,) = [p for p in out if p.seq]
    assert corr.window_end == 10.0
    assert profile(corr).late_events == 1
    assert finalize(corr).late_events == 1


def test_correction_seq_grows_with_how_late_the_event_is():
    s = stage1()
    feed(s, [msgs(1, 27)])  # watermark 25: 1 + (25 - 10) // 10 = 2 for window [0, 10)
    feed(s, [msgs(3, 8, first_offset=2)])
    assert set(k for k in s.slots if k[1] == 0.0) == {(M, 0.0, 2)}
    assert s.late[M] == 2
    assert not [p for p in feed(s, [msgs(31.9, first_offset=4)]) if p.seq]  # watermark 29.9
    (corr,) = [p for p in feed(s, [msgs(32, first_offset=5)]) if p.seq]  # 30 = 10 + 2 * 10
    assert (corr.window_start, corr.seq, profile(corr).requests) == (0.0, 2, 2)
    assert profile(corr).late_events == 2


def test_events_beyond_the_correction_horizon_are_only_counted():
    s = stage1()
    out = feed(s, [msgs(1, 41.9)])  # watermark 39.9: [0, 10) still correctable (10 + 30 > 39.9)
    out += feed(s, [msgs(5, first_offset=2)])
    assert (M, 0.0, 3) in s.slots and s.late[M] == 1 and not s.too_late
    out += feed(s, [msgs(42, first_offset=3)])  # watermark 40: [0, 10) is past the horizon
    out += feed(s, [msgs(6, 15, first_offset=4)])
    assert s.too_late == Counter({M: 1})
    assert not [k for k in s.slots if k[1] == 0.0]  # 6 went nowhere
    assert s.late[M] == 2  # 15 ([10, 20)) is still correctable: seq 1 + (40 - 20) // 10
    assert (M, 10.0, 3) in s.slots
    out += s.close(LATER)
    assert s.slots == {}
    assert summary(out) == [
        (M, 0.0, 0, 0, 1, 0), (M, 0.0, 0, 3, 1, 1), (M, 10.0, 0, 3, 1, 1), (M, 40.0, 0, 0, 2, 0)]
    assert sum(profile(p).requests for p in out) == 6 - 1


def test_idle_partition_closes_its_windows_with_the_wall_clock():
    s = stage1()
    s.add(msgs(15), wall=100.0)  # watermark 13
    for wall in (100.0, 104.0, 105.0, 110.0):  # idle <= 5 s, then 13 + 5 = 18 < 20
        assert s.close(wall) == []
    assert s.watermark(110.0) == pytest.approx(18.0)
    (p,) = s.close(112.0)  # 13 + (12 - 5) = 20
    assert (p.window_start, p.seq, profile(p).requests) == (10.0, 0, 1)
    assert s.closed_watermark == pytest.approx(20.0)
    # the advanced watermark sticks: an event for the closed window is now a correction
    s.add(msgs(16, first_offset=1), wall=113.0)
    assert s.watermark(113.0) == pytest.approx(20.0)  # not back to 16 - 2
    assert s.late[M] == 1 and (M, 10.0, 1) in s.slots


def test_no_idle_close_before_the_first_event():
    s = stage1()
    assert s.close(LATER) == []
    assert s.watermark(LATER) == -math.inf
    s.add(msgs(5), wall=LATER)
    assert s.slots and s.late == Counter()  # still on time: nothing was advanced


def test_hopping_windows_put_one_event_into_size_over_hop_windows():
    for hop, starts in ((5.0, [5.0, 10.0]), (2.0, [4.0, 6.0, 8.0, 10.0, 12.0])):
        s = stage1(msgspec.structs.replace(SETTINGS, hop_seconds=hop))
        s.add(msgs(12.5), WALL)
        assert sorted(k[1] for k in s.slots) == starts
        out = s.close(LATER)
        assert [(p.window_start, p.window_end) for p in sorted(out, key=lambda p: p.window_start)
                ] == [(st, st + 10) for st in starts]
        assert all(profile(p).requests == 1 and p.seq == 0 for p in out)


def test_hopping_window_closes_when_watermark_reaches_its_own_end():
    s = stage1(msgspec.structs.replace(SETTINGS, hop_seconds=5.0))
    s.add(msgs(7, 12), WALL)  # 7 in [0,10) and [5,15); 12 in [5,15) and [10,20)
    (p,) = s.close(WALL)  # watermark 10: only [0, 10)
    assert (p.window_start, profile(p).requests) == (0.0, 1)
    s.add(msgs(17, first_offset=2), WALL)
    (p,) = s.close(WALL)  # watermark 15
    assert (p.window_start, profile(p).requests) == (5.0, 2)


def test_series_are_split_by_label_and_folded_by_the_guard():
    guard = CardinalityGuard(2, ("model",))
    s = stage1(guard=guard)
    s.add([(0, [ev(1, "a"), ev(2, "b"), ev(3, "c"), ev(4, "d"), ev(5, "a")])], WALL)
    out = s.close(LATER)
    assert {p.series_key: profile(p).requests for p in out} == {
        "model=a": 2, "model=b": 1, f"model={OTHER}": 2}
    assert {p.series_key: p.labels for p in out}[f"model={OTHER}"] == {"model": OTHER}
    assert guard.overflow["model"] == 2


# --------------------------------------------------------------------------- replays
STREAM = random_stream(seed=1, n=400)
MESSAGES = as_messages(STREAM, seed=2)


def run(messages: Sequence[Message], batches: Iterable[Sequence[Message]] | None = None
        ) -> tuple[Stage1Partition, list[Partial]]:
    s = stage1()
    out = feed(s, [[m] for m in messages] if batches is None else batches)
    return s, out + s.close(LATER)


def test_stream_fixture_exercises_late_and_corrections():
    s, out = run(MESSAGES)
    assert sum(s.late.values()) > 10
    assert not s.too_late
    assert len({p.seq for p in out}) >= 3
    assert sum(profile(p).requests for p in out) == len(STREAM)


@pytest.mark.parametrize("grouping", ["one batch", "pairs", "sevens", "random 1", "random 2"])
def test_batch_boundaries_do_not_change_the_partials(grouping):
    _, expected = run(MESSAGES)  # one message per batch
    batches = {"one batch": [MESSAGES], "pairs": split(MESSAGES, [2]),
               "sevens": split(MESSAGES, [7]),
               "random 1": random_split(MESSAGES, 11, 10),
               "random 2": random_split(MESSAGES, 12, 40)}[grouping]
    state, got = run(MESSAGES, batches)
    assert_same_partials(got, expected)
    reference, _ = run(MESSAGES)
    assert state.late == reference.late and state.too_late == reference.too_late


def test_redelivered_messages_are_skipped():
    """At-least-once delivery without a crash: the same messages arrive again."""
    reference, expected = run(MESSAGES)
    s = stage1()
    out = feed(s, [MESSAGES[:50], MESSAGES[20:50], MESSAGES[45:120], MESSAGES[100:]])
    out += s.close(LATER)
    assert_same_partials(out, expected)
    assert s.late == reference.late


def _checkpoint_into(table: dict[str, bytes], state: Stage1Partition) -> None:
    upserts, deletes = state.checkpoint()
    table.update(upserts)
    for name in deletes:
        table.pop(name, None)


def test_replayed_messages_of_an_already_closed_window_are_no_correction():
    """Restored after [0, 10) closed, the consumer re-reads from offset 0: those events were
    emitted in the seq 0 partial and must not come back as a late correction."""
    messages = msgs(1, 5, 9, 12, 3)  # 3 arrives after the close: a genuine correction
    s = stage1()
    table: dict[str, bytes] = {}
    emitted = feed(s, [messages[:4]])
    assert summary(emitted) == [(M, 0.0, 0, 0, 3, 0)]
    _checkpoint_into(table, s)
    restored = Stage1Partition.restore(0, SETTINGS, CardinalityGuard(9, ("model",)),
                                       table.items())
    emitted += feed(restored, [messages[:2], messages[2:]])  # at-least-once: from offset 0
    emitted += restored.close(LATER)
    assert summary(emitted) == [(M, 0.0, 0, 0, 3, 0), (M, 0.0, 0, 1, 1, 1),
                                (M, 10.0, 0, 0, 1, 0)]
    assert restored.late == Counter({M: 1}) and not restored.too_late


def test_slots_written_without_their_meta_record_still_skip_replayed_messages():
    """A crash between a checkpoint's slot records and its meta record (written last): the
    restored meta covers older offsets, so each slot's own last offset must dedup."""
    _, expected = run(MESSAGES)
    s = stage1()
    table: dict[str, bytes] = {}
    emitted = feed(s, [MESSAGES[:60]])
    _checkpoint_into(table, s)
    emitted += feed(s, [MESSAGES[60:90]])
    upserts, _ = s.checkpoint()
    assert len(upserts) > 1
    table.update({k: v for k, v in upserts.items() if k != "meta"})  # meta and deletes lost
    restored = Stage1Partition.restore(0, SETTINGS, CardinalityGuard(9, ("model",)),
                                       table.items())
    assert restored.max_offset == MESSAGES[59][0]
    emitted += feed(restored, split(MESSAGES[60:], [4])) + restored.close(LATER)
    assert_same_partials(_dedup(emitted), expected)


def _dedup(partials: Iterable[Partial]) -> list[Partial]:
    """What stage 2 merges: the first partial of each (series, window, src, seq)."""
    seen: dict[tuple, Partial] = {}
    for p in partials:
        seen.setdefault((p.series_key, p.window_start, p.src_partition, p.seq), p)
    return list(seen.values())


@pytest.mark.parametrize(("checkpoint_at", "crash_at", "replay_from"), [
    (c, k, r)
    for c in (0, 9, 40, 77, 120, 150)
    for k in (c, c + 13)
    for r in sorted({0, c // 2, max(0, c - 10), max(0, c - 1), c, c + 1})
])
def test_crash_replay_from_an_earlier_offset_gives_the_uninterrupted_partials(
        checkpoint_at, crash_at, replay_from):
    reference, expected = run(MESSAGES)
    # before the crash: one message per batch, checkpoint after each, snapshot one of them
    s = stage1()
    table: dict[str, bytes] = {}
    snapshot: dict[str, bytes] = {}
    emitted: list[Partial] = []
    for i, message in enumerate(MESSAGES[:crash_at + 1]):
        emitted += feed(s, [[message]])
        _checkpoint_into(table, s)
        if i == checkpoint_at:
            snapshot = dict(table)
    # crash; restore from the snapshot and re-consume from an earlier offset, other batches
    restored = Stage1Partition.restore(0, SETTINGS, CardinalityGuard(1000, ("model",)),
                                       snapshot.items())
    emitted += feed(restored, split(MESSAGES[replay_from:], [5]))
    emitted += restored.close(LATER)
    for p in emitted:  # a re-emitted partial equals the one emitted before the crash
        first = next(q for q in emitted if (q.series_key, q.window_start, q.seq) == (
            p.series_key, p.window_start, p.seq))
        assert_metrics_equal(finalize(p), finalize(first))
    assert_same_partials(_dedup(emitted), expected)
    assert restored.late == reference.late
    assert restored.too_late == reference.too_late


def test_checkpoint_restore_round_trip_continues_identically():
    head, tail = MESSAGES[:170], MESSAGES[170:]
    s = stage1()
    table: dict[str, bytes] = {}
    for batch in split(head, [4]):
        feed(s, [batch])
        _checkpoint_into(table, s)
    restored = Stage1Partition.restore(0, SETTINGS, CardinalityGuard(1000, ("model",)),
                                       table.items())
    assert set(restored.slots) == set(s.slots)
    for key, slot in s.slots.items():
        assert restored.slots[key].labels == slot.labels
        assert restored.slots[key].last_offset == slot.last_offset
        assert restored.slots[key].builtins() == slot.builtins()
    assert restored.clock == s.clock
    assert restored.closed_watermark == s.closed_watermark
    assert restored.late == s.late and restored.too_late == s.too_late
    assert restored.watermark(WALL + 7) == s.watermark(WALL + 7)
    a = feed(s, split(tail, [3])) + s.close(LATER)
    b = feed(restored, split(tail, [3])) + restored.close(LATER)
    assert_same_partials(b, a)
    assert restored.late == s.late


def test_checkpoint_is_incremental():
    s = stage1()
    s.add(msgs(1, 11), WALL)
    upserts, deletes = s.checkpoint()
    assert len(upserts) == 3 and "meta" in upserts and deletes == []  # two slots + meta
    upserts, deletes = s.checkpoint()
    assert list(upserts) == [] and deletes == []  # nothing changed: not even meta
    s.add(msgs(12, first_offset=2), WALL)
    (closed,) = s.close(WALL)  # [0, 10) closes: returned, its slot deleted
    assert (closed.window_start, closed.seq) == (0.0, 0)
    upserts, deletes = s.checkpoint()
    assert sorted(upserts) == ["10.0|0|model=m", "meta"] and deletes == ["0.0|0|model=m"]
    assert s.checkpoint() == ({}, [])


# --------------------------------------------------------------------------- the stage's outbox
STAGE = Settings(topics=TopicSettings(partitions=1), metrics=SETTINGS)
TOPIC = STAGE.topics.events
STAGE_WALL = 1_700_000_000.0
T0 = STAGE_WALL - 3600  # event times an hour back: inside the codec's past limit
SLOT = f"events|{T0!r}|0|{M}"  # the changelog key of the first window's seq 0 slot...
OUT = f"events|out|{T0!r}|0|{M}"  # ...and of its partial in the stage's outbox


def records(*offsets: float, first_offset: int = 0) -> list[Record]:
    """One source record per event, ``T0 + offset`` seconds, consecutive offsets."""
    return [Record(TOPIC, 0, first_offset + i, None, msgspec.json.encode(
        {"event_id": f"r{next(_ids)}", "timestamp": T0 + dt, "model": "m",
         "latency_ms": 100.0})) for i, dt in enumerate(offsets)]


def partials_out(step: Step) -> list[tuple[float, int, bytes]]:
    """(window start, seq, bytes) of the partials a step sends; watermarks left out."""
    out = []
    for o in step.outputs:
        message = decode_partials(o.value)
        if isinstance(message, Partial):
            out.append((message.window_start, message.seq, o.value))
    return out


def idle(topic: str, partition: int) -> bool:
    return True


def busy(topic: str, partition: int) -> bool:
    return False


def test_a_closed_partial_is_written_to_the_outbox_with_the_checkpoint_that_closed_it():
    """In one change set: the partial under its outbox key, then the slot's delete, then
    meta; sent in the same step, and its key deleted by the step after the ack."""
    stage = PartialStage(STAGE)
    stage.on_assign(TOPIC, 0, {})
    stage.on_batch(TOPIC, 0, records(1, 11), STAGE_WALL)
    step = stage.on_batch(TOPIC, 0, records(12, first_offset=2), STAGE_WALL)  # [0, 10) closes
    changes = step.changes[0]
    assert list(changes) == [OUT, f"events|{T0 + 10!r}|0|{M}", SLOT, "events|meta"]
    assert changes[SLOT] is None
    assert partials_out(step) == [(T0, 0, changes[OUT])]
    waiting = stage.on_tick(STAGE_WALL, busy)  # not acknowledged: kept, not sent twice
    assert waiting.changes == {0: {}} and partials_out(waiting) == []
    for done in step.done:
        done()
    after = stage.on_tick(STAGE_WALL, busy)
    assert after.changes == {0: {OUT: None}} and partials_out(after) == []
    assert stage.on_tick(STAGE_WALL, busy).changes == {0: {}}


def test_a_crash_before_the_ack_re_sends_the_same_partial_and_a_late_event_corrects_it():
    """The partial was durable before it was sent: a restart re-sends those very bytes (same
    identity, same content), not a rebuilt partial, and a late event for its window goes to
    a correction (seq 1), never to seq 0 again."""
    stage, table = PartialStage(STAGE), {}
    stage.on_assign(TOPIC, 0, {})
    for batch in (records(1, 5), records(12, first_offset=2)):
        step = stage.on_batch(TOPIC, 0, batch, STAGE_WALL)
        apply_changes(table, step.changes[0])
    (first,) = partials_out(step)
    assert OUT in table and SLOT not in table
    # the worker dies before Kafka acknowledged: a new one restores the changelog
    again = PartialStage(STAGE)
    assert again.on_assign(TOPIC, 0, dict(table)) == 3
    assert set(again.states["events", 0].slots) == {(M, T0 + 10, 0)}  # the outbox is no slot
    steps = [again.on_tick(STAGE_WALL, busy),
             again.on_batch(TOPIC, 0, records(3, first_offset=3), STAGE_WALL),  # late
             again.on_tick(STAGE_WALL + 1e6, idle)]
    sent = [p for s in steps for p in partials_out(s)]
    assert sent[0] == first
    assert sorted((start - T0, seq) for start, seq, _ in sent) == [(0, 0), (0, 1), (10, 0)]
    for s in steps:
        apply_changes(table, s.changes.get(0, {}))
        for done in s.done:
            done()
    apply_changes(table, again.on_tick(STAGE_WALL + 1e6, idle).changes[0])
    assert not [name for name in table if name.startswith("events|out|")]


# =========================================================================== stage 2
def make_partial(src: int, latencies: Sequence[float], start: float = 0.0, seq: int = 0,
                 model: str = "m") -> Partial:
    labels = {"model": model}
    prof = WindowProfile(SETTINGS.relative_accuracy)
    prof.add_events([ev(start + 1, model, lat) for lat in latencies], SLO)
    if seq:
        prof.late_events += len(latencies)
    return Partial(series_key=series_key(labels), labels=labels, window_start=start,
                   window_end=start + SETTINGS.window_seconds, src_partition=src, seq=seq,
                   profile=prof.to_builtins())


def wm(src: int, value: float) -> Watermark:
    return Watermark(src_partition=src, watermark=value)


def stage2(sources: int = 3) -> Stage2Partition:
    return Stage2Partition(0, SETTINGS, sources)


def apply_all(state: Stage2Partition, messages: Iterable) -> list[WindowMetrics]:
    for message in messages:
        state.apply(decode_partials(encode_partial(message)))  # as on the wire
    return state.close()


def test_stage2_merges_sources_and_waits_for_every_watermark():
    s = stage2(sources=3)
    out = apply_all(s, [make_partial(0, [100, 200]), make_partial(1, [300]),
                        make_partial(2, [400, 500, 600]), make_partial(1, [50], start=10.0),
                        wm(0, 15), wm(1, 10)])
    assert out == [] and s.low_watermark() == -math.inf  # source 2 never reported
    assert apply_all(s, [wm(2, 9.9)]) == []
    assert s.low_watermark() == pytest.approx(9.9)
    (m,) = apply_all(s, [wm(2, 10)])
    assert (m.series_key, m.window_start, m.window_end, m.version) == (M, 0.0, 10.0, 1)
    assert m.requests == 6
    assert m.latency_max_ms == 600.0
    assert m.request_rate_per_s == pytest.approx(0.6)
    assert m.slo_compliance == pytest.approx(5 / 6)
    assert m.late_events == 0
    assert apply_all(s, [wm(0, 16)]) == []  # emitted once only
    assert apply_all(s, [wm(0, 5)]) == [] and s.src_watermarks[0] == 16  # never goes back
    assert apply_all(s, [wm(1, 20), wm(2, 20)]) == []  # [10, 20): source 0 is at 16
    (m,) = apply_all(s, [wm(0, 20)])
    assert (m.window_start, m.requests, m.version) == (10.0, 1, 1)


def test_stage2_duplicate_partial_is_ignored():
    s = stage2(sources=1)
    p = make_partial(0, [100, 200, 300])
    apply_all(s, [p, p])
    assert s.duplicates == 1
    (m,) = apply_all(s, [p, wm(0, 10)])
    assert s.duplicates == 2
    assert m.requests == 3 and m.version == 1
    assert apply_all(s, [p, wm(0, 11)]) == []  # a replayed partial is no correction
    assert s.duplicates == 3


def test_stage2_same_seq_from_another_source_is_not_a_duplicate():
    s = stage2(sources=2)
    (m,) = apply_all(s, [make_partial(0, [1]), make_partial(1, [1]), wm(0, 10), wm(1, 10)])
    assert m.requests == 2 and s.duplicates == 0


def test_stage2_correction_reemits_the_window_with_a_higher_version():
    s = stage2(sources=2)
    (m1,) = apply_all(s, [make_partial(0, [100, 200]), make_partial(1, [300]),
                          wm(0, 12), wm(1, 10)])
    assert (m1.version, m1.requests, m1.late_events) == (1, 3, 0)
    late = make_partial(1, [900, 950], seq=1)
    (m2,) = apply_all(s, [late, wm(1, 20)])
    assert (m2.series_key, m2.window_start, m2.version) == (M, 0.0, 2)
    assert m2.requests == 5 and m2.late_events == 2
    assert m2.latency_max_ms == 950.0
    assert apply_all(s, [late, wm(0, 21)]) == []  # a duplicate correction changes nothing
    (m3,) = apply_all(s, [make_partial(0, [10], seq=2)])
    assert (m3.version, m3.requests, m3.late_events) == (3, 6, 3)


def test_stage2_correction_before_close_is_merged_into_the_first_version():
    s = stage2(sources=2)
    (m,) = apply_all(s, [make_partial(0, [100]), make_partial(0, [200], seq=1),
                         make_partial(1, [300]), wm(0, 10), wm(1, 10)])
    assert (m.version, m.requests, m.late_events) == (1, 3, 1)


def test_stage2_forgets_windows_after_the_correction_horizon():
    s = stage2(sources=1)
    apply_all(s, [make_partial(0, [100]), make_partial(0, [100], start=10.0), wm(0, 10)])
    assert (M, 0.0) in s.windows
    s.checkpoint()
    assert apply_all(s, [wm(0, 39.9)]) != []  # [10, 20) closes; [0, 10) kept: 10 + 30 > 39.9
    assert (M, 0.0) in s.windows
    (m,) = apply_all(s, [make_partial(0, [100], seq=3)])  # still correctable
    assert m.version == 2 and m.requests == 2
    assert apply_all(s, [wm(0, 40)]) == []
    assert (M, 0.0) not in s.windows and (M, 10.0) in s.windows
    _, deletes = s.checkpoint()
    assert deletes == [f"{0.0!r}|{M}"]
    apply_all(s, [wm(0, 50)])
    assert s.windows == {}


def test_stage1_slot_at_rest_between_events_gives_the_same_partial():
    """A slot untouched since its checkpoint is kept as bytes and decoded when its next
    event comes: the partial is the one a stage that never checkpointed builds."""
    batches = [[(0, [ev(1.0, "a", 100.0), ev(1.5, "b", 120.0)])],
               [(1, [ev(2.0, "b", 130.0)])],  # "a" is not touched: at rest after this
               [(2, [ev(3.0, "b", 140.0)])],
               [(3, [ev(4.0, "a", 150.0, input_tokens=7)])]]  # "a" decoded again
    resting, plain = stage1(), stage1()
    table: dict[str, bytes] = {}
    for i, batch in enumerate(batches):
        resting.add(batch, WALL)
        _checkpoint_into(table, resting)
        plain.add(batch, WALL)
        if i == 2:
            assert resting.slots[series_key({"model": "a"}), 0.0, 0].profile is None
    assert_same_partials(feed(resting, [msgs(100.0, first_offset=9)], LATER),
                         feed(plain, [msgs(100.0, first_offset=9)], LATER))


def _checkpoint2(table: dict[str, bytes], state: Stage2Partition) -> None:
    upserts, deletes = state.checkpoint()
    table.update(upserts)
    for name in deletes:
        table.pop(name, None)


def test_stage2_checkpoint_restore_round_trip():
    s = stage2(sources=2)
    table: dict[str, bytes] = {}
    apply_all(s, [make_partial(0, [100, 200]), make_partial(1, [300], start=10.0), wm(0, 10)])
    _checkpoint2(table, s)
    apply_all(s, [make_partial(1, [400]), wm(1, 10)])  # [0, 10) emitted as version 1
    _checkpoint2(table, s)
    restored = Stage2Partition.restore(0, SETTINGS, 2, table.items())
    assert restored.src_watermarks == s.src_watermarks
    assert set(restored.windows) == set(s.windows)
    for key in s.windows:
        window, other = s.window(key), restored.window(key)
        assert (other.labels, other.end, other.seen, other.version, other.pending) == (
            window.labels, window.end, window.seen, window.version, window.pending)
        assert other.profile.to_builtins() == window.profile.to_builtins()
    # both continue identically; the restored one still recognises merged partials
    rest = [make_partial(1, [400]), make_partial(0, [500], seq=1), make_partial(0, [1], 10.0),
            wm(0, 20), wm(1, 20)]
    order = lambda m: (m.series_key, m.window_start)  # noqa: E731
    a, b = sorted(apply_all(s, rest), key=order), sorted(apply_all(restored, rest), key=order)
    assert [(m.window_start, m.version, m.requests) for m in a] == [(0.0, 2, 4), (10.0, 1, 2)]
    for x, y in zip(a, b, strict=True):
        assert_metrics_equal(x, y)
    assert restored.duplicates == s.duplicates == 1


# =========================================================================== end to end
@pytest.mark.parametrize("hop", [None, 5.0])
def test_end_to_end_matches_exact_counts_and_quantiles(hop):
    settings = msgspec.structs.replace(SETTINGS, hop_seconds=hop)
    sources = 3
    rng = np.random.default_rng(42)
    events = random_stream(seed=3, n=3000, start=50.0, models=("a", "b", "c"))
    by_partition: dict[int, list[InferenceEvent]] = defaultdict(list)
    for e in events:
        by_partition[int(rng.integers(0, sources))].append(e)
    queues = {p: as_messages(evs, seed=p) for p, evs in by_partition.items()}
    guard = CardinalityGuard(100, ("model",))
    stage1s = [Stage1Partition(p, settings, guard) for p in range(sources)]
    s2 = Stage2Partition(0, settings, sources)
    results: list[WindowMetrics] = []

    def flush(state: Stage1Partition, wall: float) -> None:
        partials = state.close(wall)
        for p in partials:  # at-least-once: every partial is delivered twice
            s2.apply(decode_partials(encode_partial(p)))
        for p in partials:
            s2.apply(p)
        s2.apply(Watermark(src_partition=state.partition, watermark=state.watermark(wall)))
        results.extend(s2.close())

    while any(queues.values()):
        p = int(rng.choice([k for k, q in queues.items() if q]))
        k = int(rng.integers(1, 6))
        batch, queues[p] = queues[p][:k], queues[p][k:]
        stage1s[p].add(batch, WALL)
        flush(stage1s[p], WALL)
    for state in stage1s:
        flush(state, LATER)

    assert not any(s.too_late for s in stage1s)
    late = sum(sum(s.late.values()) for s in stage1s)
    assert late > 0
    assert s2.duplicates > 0
    assert any(m.version > 1 for m in results)  # corrections were re-emitted

    final: dict[tuple[str, float], WindowMetrics] = {}
    for m in results:
        key = (m.series_key, m.window_start)
        assert m.version == (final[key].version + 1 if key in final else 1)
        final[key] = m

    size, step = 10.0, hop or 10.0
    exact: dict[tuple[str, float], list[InferenceEvent]] = defaultdict(list)
    for e in events:
        last = math.floor(e.timestamp / step) * step
        for start in np.arange(last - size + step, last + step / 2, step):
            if start <= e.timestamp < start + size:
                exact[(series_key({"model": e.model}), float(start))].append(e)
    assert set(final) == set(exact)
    alpha = settings.relative_accuracy
    for key, evs in exact.items():
        m = final[key]
        latencies = np.array([e.latency_ms for e in evs])
        assert m.requests == len(evs), key
        assert m.errors == sum(e.status == "error" for e in evs), key
        assert m.window_end == key[1] + size
        assert m.latency_max_ms == latencies.max()
        for q, got in ((0.5, m.latency_p50_ms), (0.99, m.latency_p99_ms)):
            want = float(np.quantile(latencies, q, method="lower"))
            assert abs(got - want) <= alpha * want * (1 + 1e-9), (key, q, got, want)
    assert sum(m.late_events for m in final.values()) == late


# =========================================================================== guard
def test_guard_under_the_cap_admits_everything_unchanged():
    guard = CardinalityGuard(max_series=3, names=("model", "version"))
    for labels in [("a", "1"), ("a", "2"), ("b", "1"), ("a", "1"), ("b", "1")]:
        assert guard.admit(labels, now=0.0) == labels
    assert guard.active == 3
    assert not guard.overflow


def test_guard_over_the_cap_folds_to_other_and_counts_per_dimension():
    guard = CardinalityGuard(max_series=2, names=("model", "version"))
    guard.admit(("a", "1"), 0.0)
    guard.admit(("b", "2"), 0.0)
    assert guard.admit(("a", "1"), 1.0) == ("a", "1")  # known series stay admitted
    assert guard.admit(("c", "3"), 1.0) == (OTHER, OTHER)
    assert guard.overflow == Counter({"model": 1, "version": 1})
    # (a, 3): "a" is known, but (a, __other__) would be a new series: everything folds
    assert guard.admit(("a", "3"), 1.0) == (OTHER, OTHER)
    assert guard.overflow == Counter({"model": 2, "version": 2})
    assert guard.active == 3  # a, b and the overflow series
    assert guard.admit(("b", "2"), 2.0) == ("b", "2")
    assert guard.overflow == Counter({"model": 2, "version": 2})


def test_guard_folds_only_unseen_values_when_that_series_exists():
    guard = CardinalityGuard(max_series=2, names=("model", "version"))
    guard.admit(("a", "1"), 0.0)
    guard.admit(("a", OTHER), 0.0)
    assert guard.admit(("a", "9"), 0.0) == ("a", OTHER)
    assert guard.overflow == Counter({"version": 1})
    assert guard.admit(("z", "1"), 0.0) == (OTHER, OTHER)  # (__other__, 1) is new
    assert guard.overflow == Counter({"version": 2, "model": 1})


def test_guard_expire_frees_capacity():
    guard = CardinalityGuard(max_series=2, names=("model",))
    guard.admit(("a",), 0.0)
    guard.admit(("b",), 10.0)
    assert guard.admit(("c",), 20.0) == (OTHER,)
    assert guard.expire(older_than=5.0) == 1  # a
    assert guard.active == 2  # b and __other__: still full
    assert guard.admit(("c",), 21.0) == (OTHER,)
    assert guard.expire(older_than=15.0) == 1  # b
    assert guard.admit(("c",), 22.0) == ("c",)
    assert guard.admit(("a",), 22.0) == (OTHER,)  # a was forgotten: now over the cap
    assert guard.expire(older_than=100.0) == 2
    assert guard.active == 0
    assert guard.admit(("a",), 101.0) == ("a",)
    assert guard.overflow["model"] == 3


def test_series_labels_may_come_from_event_attributes() -> None:
    """A configured label that is not an event field (``endpoint``) is read from attributes."""
    settings = MetricsSettings(series_labels=["model", "tenant", "endpoint"])
    state = Stage1Partition(0, settings, CardinalityGuard(100))
    event = InferenceEvent(event_id="a", timestamp=100.0, model="m", tenant="t", latency_ms=1.0,
                           attributes={"endpoint": "/v1/chat"})
    state.add([(0, [event])], wall=0.0)
    ((key, _, _),) = state.slots
    assert key == "endpoint=/v1/chat|model=m|tenant=t"
