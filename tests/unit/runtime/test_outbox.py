"""The runtime's outbox: what the three stages rely on to publish each record once durable
and re-send it after a crash until Kafka acknowledged it."""

from __future__ import annotations

from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Output, Step
from pipeline.runtime.state import apply_changes


def output(name: str, record: bytes) -> Output:
    return Output("t", name.encode(), record)


def put_and_flush(box: Outbox, *items: tuple[str, bytes], partition: int = 0) -> Step:
    step = Step()
    changes = step.changes.setdefault(partition, {})
    for name, record in items:
        box.put(partition, name, record, changes)
    box.flush(partition, step, output)
    return step


def acknowledge(step: Step) -> None:
    for done in step.done:
        done()


def test_a_record_is_written_with_its_step_sent_once_and_deleted_after_the_ack():
    box, log = Outbox("out|"), {}
    step = put_and_flush(box, ("out|a", b"1"))
    apply_changes(log, step.changes[0])
    assert log == {"out|a": b"1"} and [o.value for o in step.outputs] == [b"1"]

    under_way = Step()
    box.flush(0, under_way, output)
    assert under_way.outputs == []  # already in a step under way: not sent twice

    acknowledge(step)
    assert box.pending(0)
    after = Step()
    box.flush(0, after, output)
    apply_changes(log, after.changes[0])
    assert log == {} and after.outputs == [] and not box.pending(0)


def test_a_crash_before_the_ack_re_sends_the_same_bytes_from_the_changelog():
    box, log = Outbox("out|"), {"series|x": b"state"}
    step = put_and_flush(box, ("out|a", b"1"), ("out|b", b"2"))
    apply_changes(log, step.changes[0])  # durable; the process dies before the outputs

    again = Outbox("out|")
    again.restore(0, log)
    resent = Step()
    again.flush(0, resent, output)
    assert [(o.key, o.value) for o in resent.outputs] == [(b"out|a", b"1"), (b"out|b", b"2")]
    assert again.pending(0)


def test_a_name_put_again_after_its_ack_is_not_deleted():
    box, log = Outbox("out|"), {}
    first = put_and_flush(box, ("out|a", b"1"))
    apply_changes(log, first.changes[0])
    acknowledge(first)
    second = put_and_flush(box, ("out|a", b"1 again"))
    apply_changes(log, second.changes[0])
    assert log == {"out|a": b"1 again"}


def test_a_revoked_partition_is_forgotten_and_its_late_ack_changes_nothing():
    box = Outbox("out|")
    step = put_and_flush(box, ("out|a", b"1"), partition=3)
    box.drop(3)
    acknowledge(step)  # the step finished after the revocation
    assert not box.pending(3)
    box.restore(3, {"out|a": b"1"})  # the partition comes back: still to send
    resent = Step()
    box.flush(3, resent, output)
    assert [o.value for o in resent.outputs] == [b"1"]


def test_partitions_and_prefixes_are_kept_apart():
    events, resources = Outbox("events|out|"), Outbox("resources|out|")
    state = {"events|out|1": b"e", "resources|out|1": b"r", "events|meta": b"m"}
    events.restore(0, state)
    resources.restore(0, state)
    step = Step()
    events.flush(0, step, output)
    events.flush(1, step, output)
    assert [o.value for o in step.outputs] == [b"e"]
    assert not events.pending(1)
