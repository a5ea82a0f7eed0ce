"""The join's edge cases: feedback before its inference, twice, for an unknown or expired
inference, a second label, a request id instead of an event id; nothing is lost."""

from __future__ import annotations

from pipeline.config import QualitySettings
from pipeline.quality.join import JoinTable, Produced
from pipeline.quality.records import FeedbackItem, Stub, StubItem, join_id
from schemas.feedback import FeedbackEvent

SETTINGS = QualitySettings(window_seconds=60.0, horizon_seconds=3600.0,
                           wait_for_inference_seconds=300.0)
T0 = 1_700_000_000.0


def stub(event_id: str, prediction: str = "cat", confidence: float = 0.9,
         request_id: str | None = None) -> list[StubItem]:
    s = Stub(event_id, "model=m", T0 + 5, prediction, confidence, 120.0, False)
    items = [StubItem(f"e:{event_id}", s)]
    if request_id:
        items.append(StubItem(f"r:{request_id}", s, primary=False))
    return items


def label(feedback_id: str, event_id: str | None = None, value: str = "cat",
          request_id: str | None = None, kind: str = "label") -> FeedbackItem:
    fields = {"label": value} if kind == "label" else (
        {"satisfaction": 0.0} if kind == "satisfaction" else {"value": 3.5})
    event = FeedbackEvent(feedback_id=feedback_id, event_id=event_id, request_id=request_id,
                          timestamp=T0 + 100, kind=kind, **fields)
    return FeedbackItem(join_id(event_id, request_id), event)


def statuses(out: Produced) -> list[tuple[str, str]]:
    return sorted((f.feedback.feedback_id, f.status) for fates in out.fates.values()
                  for f in fates)


def test_feedback_after_its_inference_joins_once() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("a"), label("f1", "a", "dog")], T0, out)
    (outcome,) = out.outcomes["model=m"]
    assert (outcome.prediction, outcome.label, outcome.confidence) == ("cat", "dog", 0.9)
    assert (outcome.inference_time, outcome.feedback_time) == (T0 + 5, T0 + 100)
    assert statuses(out) == [("f1", "joined")]
    window = out.tallies["model=m"][T0 // 60 * 60]
    assert window.inferences == 1


def test_feedback_before_its_inference_waits_then_joins() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([label("f1", "a")], T0, out)
    assert not out.outcomes and table.counts["early"] == 1
    table.add(stub("a"), T0 + 60, out)
    assert [o.feedback_id for o in out.outcomes["model=m"]] == ["f1"]
    assert not table.pending


def test_a_redelivered_feedback_counts_once_and_says_duplicate() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("a"), label("f1", "a"), label("f1", "a")], T0, out)
    assert len(out.outcomes["model=m"]) == 1
    assert statuses(out) == [("f1", "duplicate"), ("f1", "joined")]


def test_a_duplicate_while_waiting_counts_once() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([label("f1", "a"), label("f1", "a")], T0, out)
    table.add(stub("a"), T0 + 1, out)
    assert len(out.outcomes["model=m"]) == 1


def test_a_second_label_is_a_repeat_but_business_values_add_up() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("a"), label("f1", "a", "cat"), label("f2", "a", "dog"),
               label("b1", "a", kind="business"), label("b2", "a", kind="business")], T0, out)
    assert [o.feedback_id for o in out.outcomes["model=m"]] == ["f1", "b1", "b2"]
    assert ("f2", "repeat") in statuses(out)


def test_a_redelivered_inference_changes_nothing() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("a"), *stub("a")], T0, out)
    assert table.counts["stubs"] == 1
    assert out.tallies["model=m"][T0 // 60 * 60].inferences == 1


def test_feedback_for_an_unknown_inference_is_unmatched_after_the_wait() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([label("f1", "nobody")], T0, out)
    table.expire(T0 + 299, out)
    assert statuses(out) == []
    table.expire(T0 + 300, out)
    assert statuses(out) == [("f1", "unmatched")]
    assert table.checkpoint()["p|e:nobody|f1"] is None


def test_feedback_after_the_horizon_is_unmatched() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add(stub("a"), T0, out)
    table.expire(T0 + 3600, out)
    assert "e:a" not in table.stubs and table.counts["expired"] == 1
    late = Produced()
    table.add([label("f1", "a")], T0 + 3700, late)
    table.expire(T0 + 4000, late)
    assert statuses(late) == [("f1", "unmatched")]


def test_feedback_by_request_id_is_sent_on_to_the_event_and_counted_once() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("a", request_id="req-1"), label("f1", request_id="req-1")], T0, out)
    assert not out.outcomes  # the request's stub knows the event: sent on, not joined here
    (forwarded,) = out.forward
    assert forwarded.join_id == "e:a" and forwarded.feedback.feedback_id == "f1"
    table.add(out.forward, T0 + 1, out)  # the joins topic brings it to the event's key
    assert [o.feedback_id for o in out.outcomes["model=m"]] == ["f1"]
    assert out.tallies["model=m"][T0 // 60 * 60].inferences == 1  # the primary copy only


def test_a_label_by_event_id_and_one_by_request_id_count_as_one_inference() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("e1", request_id="r1"), label("A", "e1", "cat"),
               label("B", request_id="r1", value="dog")], T0, out)
    table.add(out.forward, T0 + 1, out)
    assert [o.feedback_id for o in out.outcomes["model=m"]] == ["A"]
    assert ("B", "repeat") in statuses(out)


def test_restore_from_the_changelog_keeps_stubs_and_waiting_feedback() -> None:
    table, out = JoinTable(SETTINGS), Produced()
    table.add([*stub("a"), label("f1", "a"), label("f2", "b")], T0, out)
    state: dict[str, bytes] = {}
    for key, value in table.checkpoint().items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    again = JoinTable.restore(SETTINGS, state)
    later = Produced()
    again.add([label("f1", "a"), *stub("b")], T0 + 10, later)
    assert statuses(later) == [("f1", "duplicate"), ("f2", "joined")]
    again.expire(T0 + 3600, later)  # "a" arrived at T0, "b" at T0 + 10
    assert list(again.stubs) == ["e:b"]
    again.expire(T0 + 3610, later)
    assert not again.stubs


def test_past_the_cap_the_oldest_inferences_leave_and_are_counted() -> None:
    table, out = JoinTable(QualitySettings(max_inferences_held=3)), Produced()
    for i in range(5):
        table.add(stub(f"e{i}"), T0 + i, out)
    assert sorted(table.stubs) == ["e:e2", "e:e3", "e:e4"]
    assert table.counts["evicted"] == 2
    changes = table.checkpoint()
    assert changes["s|e:e0"] is None and changes["s|e:e1"] is None


def test_past_the_cap_the_oldest_waiting_feedback_is_unmatched_early() -> None:
    """A flood of feedback for ids no inference has: memory stays bounded and every one
    still ends with a fate."""
    table = JoinTable(QualitySettings(max_feedback_waiting=3, wait_for_inference_seconds=300))
    out = Produced()
    table.add([label(f"f{i}", f"nobody{i}") for i in range(5)], T0, out)
    assert table.waiting == 3 and sum(map(len, table.pending.values())) == 3
    assert statuses(out) == [("f0", "unmatched"), ("f1", "unmatched")]
    assert table.counts["evicted_feedback"] == 2
    changes = table.checkpoint()
    assert changes["p|e:nobody0|f0"] is None and changes["p|e:nobody4|f4"] is not None
    table.add(stub("nobody3"), T0 + 1, out)  # one of the three meets its inference
    assert table.waiting == 2 and [o.feedback_id for o in out.outcomes["model=m"]] == ["f3"]
    table.expire(T0 + 300, out)
    assert table.waiting == 0 and not table.pending
    assert len(statuses(out)) == 5  # nothing lost: joined or unmatched, each once


def test_an_inference_remembers_a_bounded_number_of_feedback_ids() -> None:
    """A client sending thousands of feedback for one inference costs neither memory nor
    quadratic time; the recent ids still catch re-sends."""
    from pipeline.quality.join import IDS_PER_INFERENCE

    table, out = JoinTable(SETTINGS), Produced()
    items = [label(f"s{i}", "a", kind="satisfaction") for i in range(2000)]
    table.add([*stub("a"), *items, label("s1999", "a", kind="satisfaction")], T0, out)
    assert [o.feedback_id for o in out.outcomes["model=m"]] == ["s0"]
    counted = [status for _, status in statuses(out)]
    assert counted.count("repeat") == 1999 and counted.count("duplicate") == 1
    raw = table.stubs["e:a"]
    assert len(raw) < 100 + IDS_PER_INFERENCE * 8  # the stub plus at most the last ids


def test_waiting_feedback_whose_ids_hold_the_separator_is_restored_under_its_own_key() -> None:
    """Ids are free text: ``p|<join id>|<feedback id>`` cannot be split at a "|"."""
    table, out = JoinTable(SETTINGS), Produced()
    table.add([label("f|1", "a|b")], T0, out)
    state = {k: v for k, v in table.checkpoint().items() if v is not None}
    again, later = JoinTable.restore(SETTINGS, state), Produced()
    assert again.waiting == 1 and list(again.pending) == ["e:a|b"]
    again.add(stub("a|b"), T0 + 1, later)
    assert [o.feedback_id for o in later.outcomes["model=m"]] == ["f|1"]


def test_past_the_cap_feedback_for_the_same_unknown_inference_is_not_lost() -> None:
    """The oldest waiting feedback made room for may share the new one's join key."""
    table = JoinTable(QualitySettings(max_feedback_waiting=1, wait_for_inference_seconds=300))
    out = Produced()
    table.add([label("f1", "x"), label("f2", "x", kind="satisfaction")], T0, out)
    assert table.waiting == 1 and list(table.pending["e:x"]) == ["f2"]
    table.add(stub("x"), T0 + 1, out)
    assert statuses(out) == [("f1", "unmatched"), ("f2", "joined")]
    assert table.waiting == 0 and not table.pending
