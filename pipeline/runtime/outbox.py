"""An outbox: records a stage must publish, kept in its changelog until Kafka has them.

A stage ``put``s a record in the same change set as the state that produced it, so the
record is durable before it leaves and a crash never loses it. ``flush`` sends what the
outbox holds (except what a step under way already sends) and adds a ``done`` callback:
once Kafka acknowledged the outputs, those records are forgotten, and their changelog
keys are deleted with the next flush of the partition. A crash in between re-sends the
same bytes from the restored outbox; readers keep one record per identity.

Names are changelog keys starting with the outbox's prefix; ``restore`` takes them back
from a partition's state on assignment, ``drop`` forgets a revoked partition.

>>> from pipeline.runtime.stage import Output, Step
>>> box = Outbox("out|")
>>> box.restore(0, {"out|a": b"1", "series|x": b"state"})  # left by a crash
>>> step = Step()
>>> box.put(0, "out|b", b"2", step.changes.setdefault(0, {}))
>>> box.flush(0, step, lambda name, record: Output("alerts", name.encode(), record))
>>> [o.value for o in step.outputs], step.changes
([b'1', b'2'], {0: {'out|b': b'2'}})
>>> for done in step.done:  # the runtime, once Kafka acknowledged the outputs
...     done()
>>> box.pending(0)  # nothing to send, two keys to delete
True
>>> later = Step()
>>> box.flush(0, later, lambda name, record: Output("alerts", None, record))
>>> later.changes, later.outputs, box.pending(0)
({0: {'out|a': None, 'out|b': None}}, [], False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipeline.runtime.stage import Changes, Output, Step

__all__ = ["Outbox"]


class Outbox:
    """Unacknowledged output records per changelog partition, named by changelog key."""

    def __init__(self, prefix: str = "out|") -> None:
        self.prefix = prefix
        self._records: dict[int, dict[str, bytes]] = {}  # partition -> name -> record
        self._queued: dict[int, set[str]] = {}  # partition -> sent by a step under way
        self._acked: dict[int, list[str]] = {}  # acknowledged: deleted at the next flush

    def restore(self, partition: int, state: Mapping[str, bytes]) -> None:
        """Take over the outbox records of a partition's changelog state."""
        self.drop(partition)
        self._records[partition] = {k: v for k, v in state.items()
                                    if k.startswith(self.prefix)}

    def put(self, partition: int, name: str, record: bytes, changes: Changes) -> None:
        """A record to publish; written into ``changes`` with the state that made it."""
        assert name.startswith(self.prefix), name
        self._records.setdefault(partition, {})[name] = changes[name] = record

    def holds(self, partition: int, name: str) -> bool:
        """Whether ``name`` waits to be sent (a stage that rebuilds its outputs after a
        crash keeps the first version: it was made from the state before the crash)."""
        return name in self._records.get(partition, {})

    def flush(self, partition: int, step: Step,
              to_output: Callable[[str, bytes], Output]) -> None:
        """Into ``step``: the deletes of acknowledged records, an output per record not
        already under way, and the ``done`` that forgets them once acknowledged."""
        records = self._records.setdefault(partition, {})
        acked = [n for n in self._acked.pop(partition, ()) if n not in records]
        if acked:  # a name put again since is not deleted
            step.changes.setdefault(partition, {}).update(dict.fromkeys(acked))
        queued = self._queued.setdefault(partition, set())
        names = [n for n in records if n not in queued]
        queued.update(names)
        step.outputs += [to_output(n, records[n]) for n in names]

        def done() -> None:
            if self._records.get(partition) is not records:
                return  # revoked (or restored) meanwhile: the next owner sends them
            for name in names:
                records.pop(name, None)
            queued.difference_update(names)
            self._acked.setdefault(partition, []).extend(names)

        step.done.append(done)

    def pending(self, partition: int) -> bool:
        """Records to send, or acknowledged ones whose keys are still to delete."""
        return bool(self._records.get(partition) or self._acked.get(partition))

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked): its records stay in the changelog for the next
        owner."""
        self._records.pop(partition, None)
        self._acked.pop(partition, None)
        self._queued.pop(partition, None)
