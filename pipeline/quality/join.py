"""The join of feedback to its inference, for one joins partition. No I/O.

Both sides arrive here by join key (``e:<event_id>``, ``r:<request_id>``), in any order:

- an inference (stub) is kept for ``quality.horizon_seconds`` of wall clock; a stub
  seen again (a re-delivery) changes nothing;
- feedback that names only a request id finds the request's stub, which knows the event
  id, and is sent on (``forward``) to the event id's join key, so all feedback of one
  inference meets one state (its first label counts, whichever id it named);
- feedback whose inference is here becomes an :class:`~pipeline.quality.records.Outcome`
  (the first label and the first satisfaction of an inference count; every business
  value counts; a later label or satisfaction is a ``repeat``; a feedback id seen before
  is a ``duplicate``);
- feedback that came first waits ``quality.wait_for_inference_seconds`` for its
  inference, then is ``unmatched`` (an unknown id, or an inference past the horizon).

Memory is bounded whatever comes: past ``quality.max_inferences_held`` stubs the oldest
leave early (``expired``), past ``quality.max_feedback_waiting`` waiting feedback the
oldest is ``unmatched`` early, and an inference remembers the ids of its last
``IDS_PER_INFERENCE`` feedback (a re-sent id older than that would count again).

Every feedback ends with a :class:`~pipeline.quality.records.Fate`, which the store
keeps: none is lost, joined or not. Inferences are also tallied per series and
inference-time window (their count and confidence histogram), for label coverage and
the accuracy estimate. What :meth:`JoinTable.add` and :meth:`JoinTable.expire` produce
collects in a :class:`Produced`; :meth:`JoinTable.checkpoint` gives the state changes
that go with it, which the stage writes in the same change set.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from pipeline.config import QualitySettings
from pipeline.quality.counts import Tally
from pipeline.quality.records import Fate, FeedbackItem, JoinItem, Outcome, Stub, StubItem
from pipeline.quality.versions import VersionStats
from schemas.feedback import FeedbackEvent

__all__ = ["JoinTable", "Produced"]

_ENC = msgspec.msgpack.Encoder()
_STUB = msgspec.msgpack.Decoder(tuple[Stub, bool, float, int, list[str]])
_ARRIVED = msgspec.msgpack.Decoder(tuple[msgspec.Raw, bool, float, int, msgspec.Raw])
_PENDING = msgspec.msgpack.Decoder(tuple[FeedbackEvent, float])
_ONCE = {"label": 1, "satisfaction": 2}  # kinds counted once per inference (bit)
IDS_PER_INFERENCE = 32  # feedback ids an inference remembers, for duplicates


@dataclass(slots=True)
class _Entry:
    stub: Stub
    primary: bool
    arrived: float  # wall clock: the horizon runs from here
    kinds: int = 0  # bits of _ONCE already counted
    feedback_ids: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return _ENC.encode((self.stub, self.primary, self.arrived, self.kinds,
                            self.feedback_ids))

    @classmethod
    def decode(cls, raw: bytes) -> _Entry:
        return cls(*_STUB.decode(raw))


@dataclass
class Produced:
    """Outcomes, inference tallies and fates of one step, per series."""

    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    tallies: dict[str, dict[float, Tally]] = field(default_factory=dict)
    fates: dict[str, list[Fate]] = field(default_factory=dict)
    serving: dict[str, VersionStats] = field(default_factory=dict)  # inferences, per series
    # feedback that named a request id, sent on to its event id's join key
    forward: list[FeedbackItem] = field(default_factory=list)

    def series(self) -> list[str]:
        return sorted({*self.outcomes, *self.tallies, *self.fates})

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.tallies or self.fates or self.forward)


class JoinTable:
    """Stubs waiting for feedback and feedback waiting for its stub, of one partition."""

    def __init__(self, settings: QualitySettings) -> None:
        self.settings = settings
        # join key -> the stub's changelog bytes: packed, ~4x smaller than live objects and
        # invisible to the garbage collector; decoded only when feedback comes
        self.stubs: dict[str, bytes] = {}
        self.pending: dict[str, dict[str, tuple[FeedbackEvent, float]]] = {}
        self._stub_expiry: deque[tuple[float, str]] = deque()
        self._pending_expiry: deque[tuple[float, str, str]] = deque()
        self.waiting = 0  # feedback in ``pending``
        self._changes: dict[str, bytes | None] = {}
        self.counts = {"stubs": 0, "joined": 0, "early": 0, "duplicate": 0, "repeat": 0,
                       "unmatched": 0, "expired": 0, "evicted": 0, "evicted_feedback": 0}

    # ------------------------------------------------------------------ restore
    @classmethod
    def restore(cls, settings: QualitySettings, state: Mapping[str, bytes]) -> JoinTable:
        """The table from its changelog keys (``s|…`` stubs, ``p|…`` pending feedback)."""
        table = cls(settings)
        stubs, pending = [], []
        for name, raw in state.items():
            if name.startswith("s|"):
                arrived = _ARRIVED.decode(raw)[2]
                table.stubs[name[2:]] = raw
                stubs.append((arrived + settings.horizon_seconds, name[2:]))
            elif name.startswith("p|"):
                feedback, arrived = _PENDING.decode(raw)
                # p|<join id>|<feedback id>: either may hold "|", the feedback knows its id
                feedback_id = feedback.feedback_id
                join_id = name[2:-len(feedback_id) - 1]
                table.pending.setdefault(join_id, {})[feedback_id] = (feedback, arrived)
                table.waiting += 1
                pending.append((arrived + settings.wait_for_inference_seconds, join_id,
                                feedback_id))
        table._stub_expiry.extend(sorted(stubs))
        table._pending_expiry.extend(sorted(pending))
        return table

    # ------------------------------------------------------------------ verbs
    def add(self, items: Iterable[JoinItem], wall: float, out: Produced) -> None:
        """Absorb join items in order; what they produce goes into ``out``."""
        for item in items:
            if isinstance(item, StubItem):
                self._stub(item, wall, out)
            elif isinstance(item, FeedbackItem):
                self._feedback(item.join_id, item.feedback, wall, out)

    def expire(self, wall: float, out: Produced) -> None:
        """Forget stubs past the horizon; feedback that waited too long is unmatched."""
        horizon = self.settings.horizon_seconds
        while self._stub_expiry and self._stub_expiry[0][0] <= wall:
            _, join_id = self._stub_expiry.popleft()
            raw = self.stubs.get(join_id)
            if raw is not None and _ARRIVED.decode(raw)[2] + horizon <= wall:
                del self.stubs[join_id]
                self._changes[f"s|{join_id}"] = None
                self.counts["expired"] += 1
        wait = self.settings.wait_for_inference_seconds
        while self._pending_expiry and self._pending_expiry[0][0] <= wall:
            _, join_id, feedback_id = self._pending_expiry.popleft()
            held = self.pending.get(join_id, {}).get(feedback_id)
            if held is not None and held[1] + wait <= wall:
                self._unmatched(join_id, feedback_id, out)

    def _unmatched(self, join_id: str, feedback_id: str, out: Produced) -> None:
        """Waiting feedback that no inference met: gone, with its fate."""
        waiting = self.pending[join_id]
        feedback, _ = waiting.pop(feedback_id)
        if not waiting:
            del self.pending[join_id]
        self.waiting -= 1
        self._changes[f"p|{join_id}|{feedback_id}"] = None
        self.counts["unmatched"] += 1
        out.fates.setdefault("", []).append(Fate(feedback, "unmatched"))

    def _evict(self, wall: float) -> None:
        """Past ``quality.max_inferences_held`` the oldest stubs leave before their horizon
        (counted as expired): a flood of inferences costs feedback, never the worker."""
        cap = self.settings.max_inferences_held
        while len(self.stubs) >= cap and self._stub_expiry:
            _, join_id = self._stub_expiry.popleft()
            if self.stubs.pop(join_id, None) is not None:
                self._changes[f"s|{join_id}"] = None
                self.counts["expired"] += 1
                self.counts["evicted"] += 1

    def _make_room(self, out: Produced) -> None:
        """Past ``quality.max_feedback_waiting`` the oldest waiting feedback is unmatched
        before its wait is over: a flood of feedback for unknown ids costs matches, never
        the worker's memory."""
        while self.waiting >= self.settings.max_feedback_waiting and self._pending_expiry:
            _, join_id, feedback_id = self._pending_expiry.popleft()
            if feedback_id in self.pending.get(join_id, {}):
                self._unmatched(join_id, feedback_id, out)
                self.counts["evicted_feedback"] += 1

    def dirty(self) -> bool:
        """Whether there are state changes to checkpoint."""
        return bool(self._changes)

    def checkpoint(self) -> dict[str, bytes | None]:
        """The state changes since the last checkpoint, in the order they happened."""
        changes, self._changes = self._changes, {}
        return changes

    # ------------------------------------------------------------------ sides
    def _stub(self, item: StubItem, wall: float, out: Produced) -> None:
        if item.join_id in self.stubs:
            return  # a re-delivery (or a second event of the same request: first wins)
        stub = item.stub
        entry = _Entry(stub, item.primary, wall)
        self._stub_expiry.append((wall + self.settings.horizon_seconds, item.join_id))
        self._evict(wall)
        self.counts["stubs"] += 1
        if item.primary and math.isfinite(stub.timestamp):
            size = self.settings.window_seconds
            start = math.floor(stub.timestamp / size) * size
            windows = out.tallies.setdefault(stub.series_key, {})
            counts = windows.get(start)
            if counts is None:
                counts = windows[start] = Tally(self.settings.confidence_bins)
            counts.add_inference(stub.confidence)
            serving = out.serving.get(stub.series_key)
            if serving is None:
                serving = out.serving[stub.series_key] = VersionStats()
            serving.add_inference(stub.latency_ms, stub.error)
        if not item.primary:  # a request id's copy only says which event to forward to
            entry = _Entry(Stub(stub.event_id, "", stub.timestamp), False, wall)
        waiting = self.pending.pop(item.join_id, None)
        for feedback_id, (feedback, _) in (waiting or {}).items():
            self.waiting -= 1
            self._changes[f"p|{item.join_id}|{feedback_id}"] = None
            self._join(item.join_id, entry, feedback, out)
        self.stubs[item.join_id] = self._changes[f"s|{item.join_id}"] = entry.encode()

    def _feedback(self, join_id: str, feedback: FeedbackEvent, wall: float,
                  out: Produced) -> None:
        raw = self.stubs.get(join_id)
        if raw is None:
            if feedback.feedback_id in self.pending.get(join_id, {}):
                self.counts["duplicate"] += 1
                out.fates.setdefault("", []).append(Fate(feedback, "duplicate"))
                return
            self._make_room(out)  # first: it may empty (and drop) this very join key's dict
            waiting = self.pending.setdefault(join_id, {})
            waiting[feedback.feedback_id] = (feedback, wall)
            self.waiting += 1
            self._pending_expiry.append((wall + self.settings.wait_for_inference_seconds,
                                         join_id, feedback.feedback_id))
            self._changes[f"p|{join_id}|{feedback.feedback_id}"] = _ENC.encode((feedback,
                                                                                 wall))
            self.counts["early"] += 1
            return
        entry = _Entry.decode(raw)
        if not entry.primary:
            out.forward.append(FeedbackItem(f"e:{entry.stub.event_id}", feedback))
            return
        self._join(join_id, entry, feedback, out)
        self.stubs[join_id] = self._changes[f"s|{join_id}"] = entry.encode()

    def _join(self, join_id: str, entry: _Entry, feedback: FeedbackEvent,
              out: Produced) -> None:
        if not entry.primary:  # counted where the event id's stub is: one state per inference
            out.forward.append(FeedbackItem(f"e:{entry.stub.event_id}", feedback))
            return
        stub = entry.stub
        fates = out.fates.setdefault(stub.series_key, [])
        if feedback.feedback_id in entry.feedback_ids:
            self.counts["duplicate"] += 1
            fates.append(Fate(feedback, "duplicate", stub.series_key, stub.timestamp,
                              stub.prediction))
            return
        entry.feedback_ids.append(feedback.feedback_id)
        del entry.feedback_ids[:-IDS_PER_INFERENCE]  # bounded, whatever a client re-sends
        bit = _ONCE.get(feedback.kind, 0)
        if entry.kinds & bit:
            self.counts["repeat"] += 1
            fates.append(Fate(feedback, "repeat", stub.series_key, stub.timestamp,
                              stub.prediction))
            return
        entry.kinds |= bit
        self.counts["joined"] += 1
        fates.append(Fate(feedback, "joined", stub.series_key, stub.timestamp,
                          stub.prediction))
        out.outcomes.setdefault(stub.series_key, []).append(Outcome(
            feedback.feedback_id, feedback.kind, stub.timestamp, feedback.timestamp,
            stub.prediction, stub.confidence, feedback.label, feedback.satisfaction,
            feedback.value, stub.latency_ms, stub.error))

    def summary(self) -> str:
        c = self.counts
        return (f"{len(self.stubs)} inferences held, {self.waiting} "
                f"feedback waiting; joined {c['joined']}, came first {c['early']}, "
                f"duplicate {c['duplicate']}, repeat {c['repeat']}, unmatched "
                f"{c['unmatched']} (early, past the cap: {c['evicted_feedback']}), "
                f"inferences expired {c['expired']} (early, past the cap: {c['evicted']})")
