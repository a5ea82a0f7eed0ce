"""Delayed feedback on simulated inferences: labels, satisfaction, conversions. Pure, seeded.

Model quality shows only through feedback that comes late: a reviewer's label an hour
later, a thumbs-down a few seconds later, a conversion the next day. :class:`FeedbackModel`
turns the ``(offset, record)`` stream of :mod:`pipeline.dev.simulate` into that feedback:

* **Labels.** An event with a prediction gets its ground truth with probability
  ``label_rate``, after a delay drawn from ``label_delay`` (:class:`Delay`: fixed,
  exponential or lognormal with a mean). The simulated classifier is *calibrated*: it is
  right with probability equal to its confidence, so confidences are informative. A
  wrong answer's label is another class of the model, drawn uniformly; label ``noise``
  then flips the reported label to another class with that probability. A numeric
  prediction gets ``prediction × (1 + N(0, 0.1))``.
* **Satisfaction** (``satisfaction_rate`` of all events): thumbs (0 or 1) or five stars
  rescaled to [0, 1], good with probability 0.85 × ``slow_ms² / (slow_ms² + latency²)``
  (halved at ``latency = slow_ms``), 0.1 for an error, and halved for a wrong answer.
* **Business value**: a conversion (``value = 1``) of a successful event with
  probability ``conversion_rate``, scaled like satisfaction.
* **Quality incidents** (:data:`pipeline.dev.incidents.QUALITY_KINDS`): ``accuracy_drop``
  lowers the probability of a right answer by ``factor`` points for the model (and
  version) it names; with ``informative`` confidences the served confidence drops by as
  much (the model stays calibrated, so a confidence-based estimate can see the drop),
  else confidences stay put and only the labels reveal it. ``satisfaction_drop`` (a bad
  deploy) multiplies the probability of good satisfaction by ``1 - factor``.

Output is ``(due_offset_seconds, FeedbackEvent)``: due = the event's offset + its delay,
and ``timestamp`` = the event's timestamp + the same delay, so a publisher sends each
when due. Everything is drawn from one ``Generator(PCG64)`` per run in chunks of events:
the same seed and input give the same feedback, ``feedback_id`` values included.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from pipeline.dev.incidents import QUALITY_KINDS, Incident, parse_incidents
from pipeline.dev.simulate import DEFAULT_MODELS, ModelProfile
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent

__all__ = ["Delay", "FeedbackModel", "parse_duration", "under_drop"]

DelayKind = Literal["fixed", "exponential", "lognormal"]
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_KIND_ALIASES: dict[str, DelayKind] = {
    "fixed": "fixed", "exp": "exponential", "exponential": "exponential",
    "lognormal": "lognormal", "lognorm": "lognormal",
}
_DELAY_SYNTAX = "[fixed:|exp:|lognormal:]DURATION[:sigma=S], DURATION like 90s, 1m, 1.5h, 1d"

SATISFIED = 0.85  # probability of good satisfaction for a fast, right, successful answer
_ERRORED = 0.1  # ... for an error
_WRONG = 0.5  # multiplier for a wrong answer
_NUMERIC_ERROR = 0.1  # relative error of a numeric prediction
_CHUNK = 1024  # events drawn per vectorised chunk
_MAX_VALUE = 1e15  # the Finite bound of a numeric label


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``1m``, ``1.5h`` or ``1d``.

    >>> [parse_duration(t) for t in ("90", "90s", "1m", "1.5h", "1d")]
    [90.0, 90.0, 60.0, 5400.0, 86400.0]
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected a number with s, m, h or d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Delay:
    """How long feedback takes: ``fixed``, ``exponential`` or ``lognormal`` with this
    ``mean`` (seconds); ``sigma`` is the lognormal's shape (the log's standard deviation).

    >>> Delay.parse("1h"), Delay.parse("fixed:1m")
    (Delay(mean=3600.0, kind='exponential', sigma=1.0), Delay(mean=60.0, kind='fixed', sigma=1.0))
    >>> str(Delay.parse("lognormal:1d:sigma=0.5"))
    'lognormal:86400s:sigma=0.5'
    """

    mean: float
    kind: DelayKind = "exponential"
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential", "lognormal"):
            raise ValueError(f"unknown delay kind {self.kind!r}: fixed, exponential, lognormal")
        if not (math.isfinite(self.mean) and self.mean >= 0):
            raise ValueError(f"delay mean must be >= 0 seconds, got {self.mean}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"lognormal sigma must be > 0, got {self.sigma}")

    @classmethod
    def parse(cls, text: str) -> Delay:
        """``[KIND:]DURATION[:sigma=S]``; the kind defaults to exponential."""
        parts = text.strip().split(":")
        try:
            kind: DelayKind = "exponential"
            if parts[0] in _KIND_ALIASES:
                kind = _KIND_ALIASES[parts.pop(0)]
            if not parts:
                raise ValueError("no duration")
            mean = parse_duration(parts.pop(0))
            sigma = 1.0
            for option in parts:
                key, _, value = option.partition("=")
                if key != "sigma" or kind != "lognormal":
                    raise ValueError(f"unknown option {option!r}")
                sigma = float(value)
            return cls(mean, kind, sigma)
        except ValueError as exc:
            raise ValueError(f"bad delay {text!r} ({exc}): expected {_DELAY_SYNTAX}") from None

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` delays in seconds."""
        if self.kind == "fixed" or self.mean == 0:
            return np.full(n, self.mean)
        if self.kind == "exponential":
            return rng.exponential(self.mean, n)
        mu = math.log(self.mean) - self.sigma**2 / 2  # so that the mean is ``mean``
        return rng.lognormal(mu, self.sigma, n)

    def __str__(self) -> str:
        text = f"{self.kind}:{self.mean:g}s"
        return text + (f":sigma={self.sigma:g}" if self.kind == "lognormal" else "")


def under_drop(
    confidence: np.ndarray, drop: np.ndarray | float, informative: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(served confidence, P(correct)) of a calibrated classifier that lost ``drop``
    (a share: 0.05 = 5 points) of accuracy. Informative: the confidence falls by as much
    and stays the probability of being right; else it stays put and overstates it.
    Clipped to [0, 1], so a confidence below the drop loses less.

    >>> served, right = under_drop(np.array([0.9, 0.6]), 0.1, informative=True)
    >>> served.round(2).tolist(), right.round(2).tolist()
    ([0.8, 0.5], [0.8, 0.5])
    >>> served, right = under_drop(np.array([0.9, 0.6]), 0.1, informative=False)
    >>> served.round(2).tolist(), right.round(2).tolist()
    ([0.9, 0.6], [0.8, 0.5])
    """
    lowered = np.clip(confidence - drop, 0.0, 1.0)
    return (lowered if informative else confidence), lowered


def _feedback_id(event_id: str, kind: str) -> str:
    """Deterministic and within the Id bound (128): the event id, else its digest."""
    base = event_id if len(event_id) <= 110 else hashlib.sha1(event_id.encode()).hexdigest()
    return f"{base}/{kind}"


class FeedbackModel:
    """Incidents plus rates, delays and a seed: the source of every simulated feedback.

    Each call of :meth:`stream` or :meth:`apply` starts from a fresh generator, so the
    same input gives the same output. ``models`` (None: no check) are the profiles the
    traffic came from: they name each classifier's classes and let incidents be checked
    against real model names and versions; a model not among them gets the classes its
    predictions have shown so far.
    """

    def __init__(
        self,
        incidents: Iterable[Incident | str] = (),
        *,
        seed: int = 0,
        label_rate: float = 0.2,
        label_delay: Delay | str = "1h",
        noise: float = 0.0,
        satisfaction_rate: float = 0.05,
        satisfaction_delay: Delay | str = "30s",
        stars: bool = False,
        conversion_rate: float = 0.0,
        conversion_delay: Delay | str = "1h",
        slow_ms: float = 10_000.0,
        informative: bool = True,
        base_accuracy: float = 0.85,
        models: Sequence[ModelProfile] | None = DEFAULT_MODELS,
    ) -> None:
        for name, p in (("label_rate", label_rate), ("noise", noise),
                        ("satisfaction_rate", satisfaction_rate),
                        ("conversion_rate", conversion_rate), ("base_accuracy", base_accuracy)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if not (math.isfinite(slow_ms) and slow_ms > 0):
            raise ValueError(f"slow_ms must be > 0, got {slow_ms}")
        self.incidents = parse_incidents(incidents, kinds=QUALITY_KINDS)
        self.classes: dict[str, tuple[str, ...]] = {}
        if models is not None:
            pairs = {(m.name, m.version) for m in models}
            for inc in self.incidents:
                if not any(inc.applies_to(name, version) for name, version in pairs):
                    raise ValueError(f"incident {inc} matches no model; models (name, version): "
                                     f"{sorted(pairs)}")
            for m in models:
                if m.labels:
                    self.classes[m.name] = tuple(sorted({*self.classes.get(m.name, ()),
                                                         *m.labels}))
        self.seed = int(seed)
        self.label_rate, self.noise = label_rate, noise
        self.satisfaction_rate, self.conversion_rate = satisfaction_rate, conversion_rate
        self.label_delay = _delay(label_delay)
        self.satisfaction_delay = _delay(satisfaction_delay)
        self.conversion_delay = _delay(conversion_delay)
        self.stars, self.slow_ms = stars, slow_ms
        self.informative, self.base_accuracy = informative, base_accuracy

    def stream(
        self, records: Iterable[tuple[float, Any]], *, horizon: float | None = None
    ) -> Iterator[tuple[float, Any]]:
        """The records (events as served) merged with their feedback, in offset order.

        Feedback is yielded when due: before the first record with a later offset, the
        rest after the last record. ``horizon`` (seconds after the last record; None:
        all) leaves out feedback due later than that.
        """
        rng = np.random.Generator(np.random.PCG64([self.seed, 0xFEED]))
        seen: dict[str, set[str]] = {}
        due: list[tuple[float, int, FeedbackEvent]] = []
        order = itertools.count()
        buffer: list[tuple[float, Any]] = []
        events = 0
        last = 0.0

        def release() -> Iterator[tuple[float, Any]]:
            at = [i for i, (_, r) in enumerate(buffer) if isinstance(r, InferenceEvent)]
            served, feedback = self._draw(rng, [buffer[i] for i in at], seen)
            for i, event in zip(at, served, strict=True):
                buffer[i] = (buffer[i][0], event)
            for item in feedback:
                heapq.heappush(due, (item[0], next(order), item[1]))
            for offset, record in buffer:
                while due and due[0][0] < offset:  # ties: the event before its feedback
                    when, _, fb = heapq.heappop(due)
                    yield when, fb
                yield offset, record
            buffer.clear()

        for offset, record in records:
            buffer.append((offset, record))
            last = offset
            events += isinstance(record, InferenceEvent)
            if events >= _CHUNK:
                yield from release()
                events = 0
        yield from release()
        end = math.inf if horizon is None else last + horizon
        while due and due[0][0] <= end:
            when, _, fb = heapq.heappop(due)
            yield when, fb

    def apply(
        self, records: Iterable[tuple[float, Any]]
    ) -> tuple[list[tuple[float, Any]], list[tuple[float, FeedbackEvent]]]:
        """All of :meth:`stream`, split: (the records as served, the feedback by due time).

        >>> from pipeline.dev.simulate import synthetic
        >>> traffic = list(synthetic(seed=1, rate=100.0, duration=60.0, start=1.7e9,
        ...                          resources=False))
        >>> model = FeedbackModel(seed=1, label_delay="fixed:1m")
        >>> served, feedback = model.apply(traffic)
        >>> (served, feedback) == model.apply(traffic), len(served) == len(traffic)
        (True, True)
        >>> due = [d for d, _ in feedback]
        >>> due == sorted(due) and {f.kind for _, f in feedback} == {"label", "satisfaction"}
        True
        """
        records_out: list[tuple[float, Any]] = []
        feedback: list[tuple[float, FeedbackEvent]] = []
        for offset, record in self.stream(records):
            (feedback if isinstance(record, FeedbackEvent) else records_out).append(
                (offset, record))
        return records_out, feedback

    # ------------------------------------------------------------------ drawing
    def _draw(
        self,
        rng: np.random.Generator,
        pairs: list[tuple[float, InferenceEvent]],
        seen: dict[str, set[str]],
    ) -> tuple[list[InferenceEvent], list[tuple[float, FeedbackEvent]]]:
        """One chunk: the events as served and their feedback (unsorted)."""
        m = len(pairs)
        if m == 0:
            return [], []
        off = np.array([o for o, _ in pairs], dtype=float)
        events = [e for _, e in pairs]
        drop, sat_mult = self._incident_effects(off, events)
        conf = np.array([np.nan if e.confidence is None else e.confidence for e in events])
        known = ~np.isnan(conf)
        served, right = under_drop(np.where(known, conf, self.base_accuracy), drop,
                                   self.informative)
        err = np.array([e.status == "error" for e in events])
        latency = np.array([e.latency_ms for e in events], dtype=float)
        has_pred = np.array([e.prediction is not None for e in events])

        # A fixed set of draws per chunk: each quantity's stream never depends on another's.
        correct = rng.random(m) < right
        labelled = has_pred & (rng.random(m) < self.label_rate)
        label_delay = self.label_delay.draw(rng, m)
        flip = rng.random(m) < self.noise
        pick_wrong, pick_noise = rng.random(m), rng.random(m)
        numeric_error = rng.normal(0.0, _NUMERIC_ERROR, m)
        slow = self.slow_ms**2 / (self.slow_ms**2 + latency**2)
        p_good = np.where(err, _ERRORED, SATISFIED * slow)
        p_good = np.where(has_pred & ~correct, p_good * _WRONG, p_good) * sat_mult
        rates = rng.random(m) < self.satisfaction_rate
        score = (rng.binomial(4, p_good) / 4.0 if self.stars
                 else (rng.random(m) < p_good).astype(float))
        sat_delay = self.satisfaction_delay.draw(rng, m)
        converts = ~err & (rng.random(m) < self.conversion_rate * p_good / SATISFIED)
        conv_delay = self.conversion_delay.draw(rng, m)

        out_events = list(events)
        if self.informative:
            lowered = known & (drop > 0)
            for i in np.flatnonzero(lowered).tolist():
                out_events[i] = msgspec.structs.replace(
                    events[i], confidence=round(float(served[i]), 4))
        feedback: list[tuple[float, FeedbackEvent]] = []
        source = "stars" if self.stars else "thumbs"
        for i in np.flatnonzero(labelled | rates | converts).tolist():
            event, offset = events[i], float(off[i])
            if labelled[i]:
                label = self._label(event, bool(correct[i]), bool(flip[i]), float(pick_wrong[i]),
                                    float(pick_noise[i]), float(numeric_error[i]), seen)
                feedback.append(self._one(event, offset, float(label_delay[i]), "label",
                                          "human_review", label=label))
            if rates[i]:
                feedback.append(self._one(event, offset, float(sat_delay[i]), "satisfaction",
                                          source, satisfaction=float(score[i])))
            if converts[i]:
                feedback.append(self._one(event, offset, float(conv_delay[i]), "business",
                                          "conversion", value=1.0))
        return out_events, feedback

    def _incident_effects(
        self, off: np.ndarray, events: list[InferenceEvent]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per event: accuracy lost (a share) and the satisfaction multiplier."""
        drop = np.zeros(len(events))
        sat_mult = np.ones(len(events))
        for inc in self.incidents:
            hit = inc.window(off) & np.array(
                [inc.applies_to(e.model, e.model_version) for e in events], dtype=bool)
            if inc.kind == "accuracy_drop":
                drop[hit] += inc.magnitude / 100.0
            else:
                sat_mult[hit] *= 1.0 - inc.magnitude
        return drop, sat_mult

    def _label(self, event: InferenceEvent, correct: bool, flip: bool, pick_wrong: float,
               pick_noise: float, numeric_error: float, seen: dict[str, set[str]]) -> str | float:
        """The reported ground truth of one labelled event."""
        prediction = event.prediction
        if not isinstance(prediction, str):  # a number: a regression
            assert prediction is not None
            truth = prediction * (1.0 + numeric_error) if prediction else numeric_error
            return min(_MAX_VALUE, max(-_MAX_VALUE, truth))
        classes = self._classes_of(event.model, prediction, seen)
        truth = prediction if correct else _pick(classes, prediction, pick_wrong)
        return _pick(classes, truth, pick_noise) if flip else truth

    def _classes_of(self, model: str, prediction: str, seen: dict[str, set[str]]) -> list[str]:
        known = self.classes.get(model)
        if known is not None and prediction in known:
            return list(known)
        shown = seen.setdefault(model, set(known or ()))
        shown.add(prediction)
        return sorted(shown)

    def _one(self, event: InferenceEvent, offset: float, delay: float, kind: str, source: str,
             **value: Any) -> tuple[float, FeedbackEvent]:
        return offset + delay, FeedbackEvent(
            feedback_id=_feedback_id(event.event_id, kind),
            event_id=event.event_id,
            request_id=event.request_id or None,
            timestamp=event.timestamp + delay,
            kind=kind,  # type: ignore[arg-type]
            source=source,
            **value,
        )


def _pick(classes: list[str], avoid: str, u: float) -> str:
    """A class other than ``avoid``, chosen by ``u`` in [0, 1); ``not:<avoid>`` if none."""
    others = [c for c in classes if c != avoid]
    if not others:
        return f"not:{avoid}"[:256]
    return others[min(len(others) - 1, int(u * len(others)))]


def _delay(value: Delay | str) -> Delay:
    return value if isinstance(value, Delay) else Delay.parse(value)
