"""The intake (re-keying, the DLQ for bad feedback) and the quality windows (publication,
versions, corrections, forgetting, the estimate) on their own, with no runner."""

from __future__ import annotations

import msgspec

from pipeline.config import MetricsSettings, QualitySettings, Settings
from pipeline.quality.intake import JoinIntake
from pipeline.quality.records import FeedbackItem, JoinItem, Outcome, OutcomeBatch, StubItem
from pipeline.quality.windows import QualityWindows
from pipeline.runtime.stage import Record

SETTINGS = Settings(metrics=MetricsSettings(lateness_seconds=2),
                    quality=QualitySettings(window_seconds=60, horizon_seconds=3600,
                                            min_calibration_labels=20))
T0 = 1_700_000_000.0
JSON = [("content-type", b"application/json")]
ITEMS = msgspec.msgpack.Decoder(list[JoinItem])


def test_intake_rekeys_inferences_under_both_ids_and_feedback_under_its_own() -> None:
    intake = JoinIntake(SETTINGS)
    event = {"event_id": "e1", "request_id": "r1", "timestamp": T0, "model": "m",
             "latency_ms": 5.0, "prediction": "a", "confidence": 0.7}
    step = intake.on_batch(SETTINGS.topics.events, 0, [
        Record(SETTINGS.topics.events, 0, 0, None, msgspec.json.encode(event), JSON)], T0)
    items = [i for o in step.outputs for i in ITEMS.decode(o.value)]
    assert sorted((i.join_id, i.primary) for i in items) == [("e:e1", True), ("r:r1", False)]
    assert all(o.topic == SETTINGS.topics.joins and o.partition is not None
               for o in step.outputs)
    assert items[0].stub.series_key == "model=m|model_version=|operation="


def test_intake_dead_letters_bad_feedback_and_passes_the_good_elements() -> None:
    intake = JoinIntake(SETTINGS)
    good = {"feedback_id": "f1", "request_id": "r1", "timestamp": T0, "kind": "label",
            "label": "a"}
    bad = {"feedback_id": "f2", "timestamp": T0, "kind": "label", "label": "a"}  # no id
    records = [Record(SETTINGS.topics.feedback, 1, 7, b"k", msgspec.json.encode([good, bad]),
                      JSON),
               Record(SETTINGS.topics.feedback, 1, 8, b"k", b"\x00garbage", JSON)]
    step = intake.on_batch(SETTINGS.topics.feedback, 1, records, T0 + 1)
    (item,) = [i for o in step.outputs for i in ITEMS.decode(o.value)]
    assert isinstance(item, FeedbackItem) and item.join_id == "r:r1"
    reasons = [dict(d.headers)["inferwatch-error-reason"] for d in step.dead_letters]
    assert reasons == [b"schema", b"malformed"]
    assert dict(step.dead_letters[0].headers)["inferwatch-batch-index"] == b"1"


def _batch(seq: int, outcomes: list[Outcome], tallies=(), source: int = 0) -> OutcomeBatch:
    return OutcomeBatch(source, seq, "model=m", outcomes, list(tallies))


def _label(fid: str, t_inf: float, t_fb: float, right: bool, conf: float = 0.9) -> Outcome:
    return Outcome(fid, "label", t_inf, t_fb, prediction="a", confidence=conf,
                   label="a" if right else "b")


def test_a_window_is_published_after_its_end_and_again_when_labels_fill_it_in() -> None:
    start = T0 - T0 % 60
    table = QualityWindows(SETTINGS)
    table.add(_batch(1, [_label("f1", start + 1, start + 30, True)]), start + 31, offset=0)
    assert table.due(start + 61) == []  # not before its end plus the grace
    first = {w.basis: w for w in table.due(start + 66)}
    assert first["inference_time"].version == 1 and first["inference_time"].accuracy == 1.0
    assert table.due(start + 70) == []  # nothing new
    table.add(_batch(2, [_label("f2", start + 2, start + 100, False)]), start + 100, offset=1)
    assert table.due(start + 101) == []  # at most once per window length
    again = {w.basis: w for w in table.due(start + 130)}
    assert again["inference_time"].version == 2
    assert again["inference_time"].accuracy == 0.5 and again["inference_time"].labelled == 2


def test_a_batch_merged_once_whatever_comes_twice() -> None:
    table = QualityWindows(SETTINGS)
    batch = _batch(5, [_label("f1", T0, T0 + 1, True)])
    assert table.add(batch, T0 + 2, offset=10)
    assert not table.add(batch, T0 + 2, offset=11)  # re-sent by the join: same identity
    assert not table.add(_batch(4, [_label("f0", T0, T0 + 1, True)]), T0 + 2, offset=12)
    (w,) = [w for w in table.due(T0 + 1000) if w.basis == "inference_time"]
    assert w.labelled == 1


def test_old_outcomes_are_counted_apart_and_windows_leave_after_the_horizon() -> None:
    table = QualityWindows(SETTINGS)
    now = T0 + 10_000
    table.add(_batch(1, [_label("f1", T0, now, True)]), now, offset=0)  # far past horizon
    assert table.too_old == 1 and not table.windows
    table.add(_batch(2, [_label("f2", now, now + 1, True)]), now + 1, offset=1)
    table.due(now + 100)
    table.expire(now + 200)
    assert {b for _, b, _ in table.windows} == {"inference_time"}  # at rest, kept
    table.expire(now + 100 + 3600 + 600 + 200)
    assert not table.windows


def test_a_quiet_series_is_forgotten_after_the_horizon_with_its_state() -> None:
    """Series come and go (versions roll out): one quiet past the horizon, with no window
    left, leaves memory and state; one still sending stays; restore starts the clock."""
    table = QualityWindows(SETTINGS)
    now = T0 + 10_000
    table.add(_batch(1, [_label("f1", now, now + 1, True)]), now + 1, offset=0)
    table.due(now + 100)  # published; its period, too
    table.summaries(now + 200)
    table.checkpoint()
    keep = now + 100 + 3600 + 600 + 200
    table.add(OutcomeBatch(0, 1, "model=other", [_label("g1", keep - 10, keep - 5, True)], []),
              keep - 5, offset=1)
    table.expire(keep)
    assert set(table.series) == {"model=other"}
    state = table.checkpoint()
    gone = {k: v for k, v in state.items() if k.endswith("|model=m")}
    assert {k for k in gone if not k.startswith("w|")} == {"c|model=m", "v|model=m", "m|model=m"}
    assert set(gone.values()) == {None}  # its windows went before it
    # restored without a clock: not forgotten at the first pass, only a horizon later
    again = QualityWindows.restore(SETTINGS, {"m|model=q": msgspec.msgpack.encode([[0, 3]])})
    again.expire(keep)
    assert "model=q" in again.series
    again.expire(keep + 3600 + 600 + 61)
    assert "model=q" not in again.series
    # back before the next checkpoint: the old state is deleted, the new marks written over
    again.add(OutcomeBatch(0, 1, "model=q", [], []), keep + 3600 + 600 + 62, offset=0)
    changes = again.checkpoint()
    assert changes["c|model=q"] is None and changes["m|model=q"] is not None
    # a forgotten series that sends again starts afresh and its marks are written anew
    table.add(_batch(1, [_label("f9", keep, keep + 1, True)]), keep + 1, offset=2)
    assert table.checkpoint()["m|model=m"] is not None


def test_the_estimate_appears_once_the_series_has_enough_labels() -> None:
    table = QualityWindows(SETTINGS)
    start = T0 - T0 % 60
    outcomes = [_label(f"f{i}", start + 1, start + 2, i % 10 != 0) for i in range(30)]
    counts = QualityWindows(SETTINGS)._new()
    for _ in range(30):
        counts.add_inference(0.9)
    table.add(_batch(1, outcomes, [(start, counts.to_builtins())]), start + 3, offset=0)
    (w,) = [w for w in table.due(start + 70) if w.basis == "inference_time"]
    assert w.inferences == 30 and w.label_coverage == 1.0
    assert w.estimated_accuracy is not None
    assert w.estimated_accuracy_low <= 0.9 <= w.estimated_accuracy_high


def test_restore_brings_back_windows_calibration_and_marks() -> None:
    table = QualityWindows(SETTINGS)
    table.add(_batch(3, [_label("f1", T0, T0 + 1, True)]), T0 + 2, offset=4)
    state = {k: v for k, v in table.checkpoint().items() if v is not None}
    again = QualityWindows.restore(SETTINGS, state)
    assert not again.add(_batch(3, [_label("f1", T0, T0 + 1, True)]), T0 + 2, offset=9)
    (w,) = [w for w in again.due(T0 + 1000) if w.basis == "inference_time"]
    assert w.labelled == 1


def test_stub_items_round_trip() -> None:
    from pipeline.quality.records import Stub

    item = StubItem("e:x", Stub("x", "model=m", T0, 3.5, None, None, True), primary=False)
    assert ITEMS.decode(msgspec.msgpack.encode([item])) == [item]
