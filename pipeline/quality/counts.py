"""Quality tallies of one series over one window: what a :class:`QualityWindow` is made of.

:class:`QualityCounts` counts inferences and the outcomes joined to them and turns the
counts into the ``QualityWindow`` metrics. Counts merge exactly (partials from several
partitions give the metrics one pass would), so nothing but counts is kept: a confusion
matrix, per confidence bin tallies, error sums and a label-delay :class:`Sketch`.

Classification scores follow scikit-learn (``precision_recall_fscore_support`` with
``zero_division=0`` over the sorted union of labelled and predicted classes). At most
``max_classes`` classes are kept, the smallest in string order, so the kept set does not
depend on arrival or merge order; the others fold into :data:`OTHER` on both sides of the
confusion matrix. A fold never makes a wrong prediction right: ``accuracy`` and the hits of
:data:`OTHER` count only predictions equal to their label before folding, so the
``OTHER -> OTHER`` cell may hold misses too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.quality.records import Outcome, confidence_bin
from pipeline.windows.sketch import Sketch
from schemas.quality import ClassScores

__all__ = ["NONE", "OTHER", "QualityCounts", "Tally", "is_correct"]

OTHER = "~other"  # the classes beyond max_classes
NONE = "~none"  # a missing prediction (or label)
_DELAY_ACCURACY = 0.01  # relative accuracy of the label-delay sketch
_DELAY_BATCH = 256  # label delays held back before they go into the sketch at once
_EXACT_INT = float(2**53)  # integral floats below this are written as ints ("1.0" -> "1")


def _text(value: object) -> str:
    """The class name of a prediction or label: numbers written so ``1 == 1.0``, booleans
    as ``"true"``/``"false"``, ``None`` as :data:`NONE`.

    >>> [_text(v) for v in (1, 1.0, 1.5, True, None, "cat")]
    ['1', '1', '1.5', 'true', '~none', 'cat']
    """
    if isinstance(value, str):
        return value
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:  # an int beyond float range
            return str(value)
        return str(int(f)) if f.is_integer() and abs(f) < _EXACT_INT else repr(f)
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_correct(prediction: object, label: object) -> bool | None:
    """Whether a classification prediction matches its label (their class names equal);
    ``None`` for a regression pair (both numbers), which has an error, not a verdict.

    >>> is_correct("cat", "cat"), is_correct(1, "1"), is_correct(0.5, 0.7)
    (True, True, None)
    """
    if _is_number(prediction) and _is_number(label):
        return None
    return _text(prediction) == _text(label)


def _bin(confidence: float, bins: int) -> int:
    """:func:`confidence_bin` of a finite confidence, clamped to [0, 1] first (so a huge
    one cannot overflow ``int``)."""
    return confidence_bin(min(1.0, max(0.0, confidence)), bins)


class Tally:
    """Inferences of one series and window and their confidence histogram: what the join
    counts per inference, cheap to make, send and fold in (a :class:`QualityCounts` holds
    much more). Its builtins are those of QualityCounts with only these two parts.

    >>> t = Tally(4); t.add_inference(0.9); t.add_inference(None)
    >>> t.to_builtins()
    {'i': 2, 'h': [0, 0, 0, 1]}
    """

    __slots__ = ("confidence_histogram", "inferences")

    def __init__(self, bins: int = 10) -> None:
        self.inferences = 0
        self.confidence_histogram = [0] * bins

    def add_inference(self, confidence: float | None, n: int = 1) -> None:
        self.inferences += n
        if confidence is not None and math.isfinite(confidence):
            self.confidence_histogram[_bin(confidence, len(self.confidence_histogram))] += n

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = {"i": self.inferences} if self.inferences else {}
        if any(self.confidence_histogram):
            out["h"] = list(self.confidence_histogram)
        return out


_TALLY_KEYS = frozenset({"i", "h"})


class QualityCounts:
    """Mergeable quality tallies of one series over one window.

    >>> q = QualityCounts()
    >>> q.add_inference(0.9, n=4)
    >>> for pred, label in (("cat", "cat"), ("cat", "dog")):
    ...     q.add(Outcome("f", "label", 0.0, 30.0, prediction=pred, confidence=0.9,
    ...                   label=label))
    >>> m = q.metrics()
    >>> m["labelled"], m["label_coverage"], m["accuracy"], round(m["ece"], 2)
    (2, 0.5, 0.5, 0.4)
    >>> m["confusion"]
    {'cat': {'cat': 1}, 'dog': {'cat': 1}}
    """

    __slots__ = ("_biz", "_cal_conf", "_cal_correct", "_cal_count", "_confusion", "_delay",
                 "_delays", "_kept", "_largest", "_other_hits", "_reg", "_sat", "bins",
                 "confidence_histogram", "feedback", "inferences", "labelled", "max_classes",
                 "thumbs_down_below")

    def __init__(self, bins: int = 10, max_classes: int = 50,
                 thumbs_down_below: float = 0.5) -> None:
        if bins < 1 or max_classes < 1:
            raise ValueError(f"bins and max_classes must be >= 1, got {bins}, {max_classes}")
        self.bins = int(bins)
        self.max_classes = int(max_classes)
        self.thumbs_down_below = float(thumbs_down_below)
        self.inferences = 0
        self.confidence_histogram = [0] * self.bins  # inferences per confidence bin
        self.feedback = 0
        self.labelled = 0
        self._delay = Sketch(_DELAY_ACCURACY)  # read through _sketch()
        self._delays: list[float] = []  # label delays not yet in the sketch
        self._confusion: dict[str, dict[str, int]] = {}  # actual -> predicted -> count
        self._kept: set[str] = set()  # classes not folded into OTHER
        self._largest: str | None = None  # max(_kept) once full; None: to compute
        self._other_hits = 0  # right predictions whose class is folded into OTHER
        self._cal_count = [0] * self.bins  # classification outcomes with a confidence
        self._cal_correct = [0] * self.bins
        self._cal_conf = [0.0] * self.bins  # their confidence sums
        self._reg = [0, 0.0, 0.0]  # regression: count, sum |error|, sum error²
        self._sat = [0, 0.0, 0]  # satisfaction: count, sum, below thumbs_down_below
        self._biz = [0, 0.0]  # business value: count, sum

    # ------------------------------------------------------------------ adding
    def add_inference(self, confidence: float | None, n: int = 1) -> None:
        """Count ``n`` inferences of the window, labelled or not, and their confidence."""
        self.inferences += n
        if confidence is not None and math.isfinite(confidence):
            self.confidence_histogram[_bin(confidence, self.bins)] += n

    def add(self, outcome: Outcome) -> None:
        """Count one feedback joined to its inference; odd values are skipped, never raised."""
        self.feedback += 1
        kind = outcome.kind
        if kind == "label":
            self._add_label(outcome)
        elif kind == "satisfaction":
            s = outcome.satisfaction
            if s is not None and math.isfinite(s):
                sat = self._sat
                sat[0] += 1
                sat[1] += s
                if s < self.thumbs_down_below:
                    sat[2] += 1
        elif kind == "business":
            v = outcome.value
            if v is not None and math.isfinite(v):
                self._biz[0] += 1
                self._biz[1] += v

    def _add_label(self, outcome: Outcome) -> None:
        self.labelled += 1
        delay = outcome.delay_seconds
        if math.isfinite(delay):
            self._delays.append(delay)
            if len(self._delays) >= _DELAY_BATCH:
                self._sketch()
        prediction, label = outcome.prediction, outcome.label
        if _is_number(prediction) and _is_number(label):
            try:
                error = abs(float(prediction) - float(label))  # type: ignore[arg-type]
                square = error * error
            except OverflowError:
                return
            if math.isfinite(square):
                reg = self._reg
                reg[0] += 1
                reg[1] += error
                reg[2] += square
            return
        predicted, actual = _text(prediction), _text(label)
        hit = predicted == actual
        self._tally(actual, predicted, 1, hit)
        c = outcome.confidence
        if c is not None and math.isfinite(c):
            c = min(1.0, max(0.0, c))
            b = confidence_bin(c, self.bins)
            self._cal_count[b] += 1
            self._cal_conf[b] += c
            if hit:
                self._cal_correct[b] += 1

    def _tally(self, actual: str, predicted: str, n: int, hit: bool) -> None:
        """Count ``n`` in the confusion cell of two classes, folding them if need be."""
        kept = self._kept
        if actual not in kept:
            self._admit(actual)
        if predicted not in kept:
            self._admit(predicted)
        a = actual if actual in kept else OTHER
        p = predicted if predicted in kept else OTHER
        row = self._confusion.get(a)
        if row is None:
            row = self._confusion[a] = {}
        row[p] = row.get(p, 0) + n
        if hit and a == OTHER:
            self._other_hits += n

    def _admit(self, name: str) -> None:
        """Keep a new class if there is room or it sorts before the largest kept one (which
        then folds): the kept classes are always the smallest ``max_classes`` seen."""
        kept = self._kept
        if name == OTHER:
            return
        if len(kept) < self.max_classes:
            kept.add(name)
            return
        largest = self._largest if self._largest is not None else max(kept)
        if name < largest:
            kept.remove(largest)
            kept.add(name)
            self._fold(largest)
            largest = max(kept)
        self._largest = largest

    def _fold(self, name: str) -> None:
        """Move a class's row and column of the confusion matrix into :data:`OTHER`'s."""
        confusion = self._confusion
        row = confusion.pop(name, None)
        if row:
            other = confusion.setdefault(OTHER, {})
            for p, count in row.items():
                if p == name:
                    p = OTHER
                    self._other_hits += count
                other[p] = other.get(p, 0) + count
        for cells in confusion.values():
            count = cells.pop(name, 0)
            if count:
                cells[OTHER] = cells.get(OTHER, 0) + count

    # ------------------------------------------------------------------ merging
    def merge_builtins(self, data: Mapping[str, Any]) -> None:
        """Fold in counts in their :meth:`to_builtins` form (same settings); a
        :class:`Tally`'s is added in place, without building counts to merge (the join
        sends one per series, window and joins record). ``ValueError`` on malformed data,
        with nothing changed."""
        if not isinstance(data, Mapping) or not data.keys() <= _TALLY_KEYS:
            self.merge(QualityCounts.from_builtins(data, self.bins, self.max_classes,
                                                   self.thumbs_down_below))
            return
        n = _count(data.get("i", 0))
        histogram = [_count(x) for x in _sized(data["h"], self.bins)] if "h" in data else ()
        self.inferences += n
        mine = self.confidence_histogram
        for i, value in enumerate(histogram):
            mine[i] += value

    def merge(self, other: QualityCounts) -> None:
        """Fold ``other`` in: the same metrics as counting everything here (same ``bins``)."""
        if other is self:
            raise ValueError("cannot merge counts into themselves")
        if other.bins != self.bins:
            raise ValueError(f"cannot merge counts of {other.bins} confidence bins into "
                             f"{self.bins}")
        self.inferences += other.inferences
        self.feedback += other.feedback
        self.labelled += other.labelled
        for mine, theirs in ((self.confidence_histogram, other.confidence_histogram),
                             (self._cal_count, other._cal_count),
                             (self._cal_correct, other._cal_correct),
                             (self._cal_conf, other._cal_conf),
                             (self._reg, other._reg), (self._sat, other._sat),
                             (self._biz, other._biz)):
            for i, value in enumerate(theirs):
                mine[i] += value
        self._sketch().merge(other._sketch())
        self._merge_confusion(other._confusion, other._other_hits)

    def _merge_confusion(self, confusion: Mapping[str, Mapping[str, int]],
                         other_hits: int) -> None:
        for actual, row in confusion.items():
            for predicted, count in row.items():
                self._tally(actual, predicted, count, actual == predicted != OTHER)
        self._other_hits += other_hits

    def _sketch(self) -> Sketch:
        """The label-delay sketch, pending delays added first (one batch costs about what
        one value does, so ``add`` only appends)."""
        if self._delays:
            self._delay.add_many(self._delays)
            self._delays = []
        return self._delay

    def empty(self) -> bool:
        """Whether nothing was counted: no inference and no feedback."""
        return not self.inferences and not self.feedback

    # ------------------------------------------------------------------ reading
    @property
    def calibration(self) -> tuple[list[int], list[int]]:
        """Per confidence bin: labelled classification outcomes with a confidence, and how
        many of them were right (copies)."""
        return list(self._cal_count), list(self._cal_correct)

    def metrics(self) -> dict[str, Any]:
        """The ``QualityWindow`` fields these counts give (``None`` where undefined)."""
        inferences, labelled = self.inferences, self.labelled
        p50, p90, p99 = self._sketch().quantiles((0.5, 0.9, 0.99))
        out: dict[str, Any] = {
            "inferences": inferences,
            "feedback": self.feedback,
            "labelled": labelled,
            "label_coverage": min(1.0, labelled / inferences) if inferences else None,
            "label_delay_p50_s": p50,
            "label_delay_p90_s": p90,
            "label_delay_p99_s": p99,
        }
        out.update(self._classification())
        n, abs_sum, sq_sum = self._reg
        out["mae"] = _finite(abs_sum / n) if n else None
        out["rmse"] = _finite(math.sqrt(sq_sum / n)) if n else None
        n, total, thumbs = self._sat
        out["satisfaction_mean"] = _finite(total / n) if n else None
        out["satisfaction_count"] = n
        out["thumbs_down_rate"] = thumbs / n if n else None
        n, total = self._biz
        out["business_value_sum"] = total
        out["business_value_count"] = n
        out["business_value_per_request"] = _finite(total / inferences) if inferences else None
        return out

    def _classification(self) -> dict[str, Any]:
        """Accuracy, per-class and macro scores, confusion matrix and ECE."""
        confusion = self._confusion
        support = {a: sum(row.values()) for a, row in confusion.items()}
        predicted: dict[str, int] = {}
        for row in confusion.values():
            for p, count in row.items():
                predicted[p] = predicted.get(p, 0) + count
        total = sum(support.values())
        classes: dict[str, ClassScores] = {}
        hits_total = 0
        for name in sorted(support.keys() | predicted.keys()):
            hits = self._other_hits if name == OTHER else confusion.get(name, {}).get(name, 0)
            hits_total += hits
            s, p = support.get(name, 0), predicted.get(name, 0)
            classes[name] = ClassScores(
                precision=hits / p if p else 0.0, recall=hits / s if s else 0.0,
                f1=2 * hits / (s + p) if s + p else 0.0, support=s)
        k = len(classes)
        n = sum(self._cal_count)
        ece = sum(abs(c - conf) for c, conf in zip(self._cal_correct, self._cal_conf,
                                                  strict=True)) / n if n else None
        return {
            "accuracy": hits_total / total if total else None,
            "precision_macro": sum(c.precision for c in classes.values()) / k if k else None,
            "recall_macro": sum(c.recall for c in classes.values()) / k if k else None,
            "f1_macro": sum(c.f1 for c in classes.values()) / k if k else None,
            "classes": classes,
            "confusion": {a: dict(row) for a, row in confusion.items()},
            "ece": ece,
        }

    # ------------------------------------------------------------------ serialization
    def to_builtins(self) -> dict[str, Any]:
        """Compact msgpack/JSON-safe form, zero parts left out: ``i`` inferences, ``h``
        confidence histogram, ``f`` feedback, ``l`` labelled, ``d`` delay sketch, ``m``
        confusion, ``o`` hits folded into OTHER, ``c`` calibration [count, correct,
        confidence sum], ``r`` regression [n, Σ|e|, Σe²], ``s`` satisfaction [n, Σ, thumbs
        down], ``b`` business value [n, Σ]."""
        out: dict[str, Any] = {}
        for key, value in (("i", self.inferences), ("f", self.feedback),
                           ("l", self.labelled), ("o", self._other_hits)):
            if value:
                out[key] = value
        if any(self.confidence_histogram):
            out["h"] = list(self.confidence_histogram)
        if self._sketch().count:
            out["d"] = {k: v for k, v in self._delay.to_builtins().items() if k != "a"}
        if self._confusion:
            out["m"] = {a: dict(row) for a, row in self._confusion.items()}
        if any(self._cal_count):
            out["c"] = [list(self._cal_count), list(self._cal_correct), list(self._cal_conf)]
        for key, part in (("r", self._reg), ("s", self._sat), ("b", self._biz)):
            if part[0]:
                out[key] = list(part)
        return out

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any], bins: int = 10, max_classes: int = 50,
                      thumbs_down_below: float = 0.5) -> QualityCounts:
        """Inverse of :meth:`to_builtins`; ``ValueError`` on malformed data. Classes beyond
        ``max_classes`` (a lower setting than when saved) fold into :data:`OTHER`."""
        out = cls(bins, max_classes, thumbs_down_below)
        try:
            out.inferences = _count(data.get("i", 0))
            out.feedback = _count(data.get("f", 0))
            out.labelled = _count(data.get("l", 0))
            if "h" in data:
                out.confidence_histogram = [_count(x) for x in _sized(data["h"], bins)]
            if "d" in data:
                out._delay = Sketch.from_builtins(data["d"], _DELAY_ACCURACY)
            if "c" in data:
                count, correct, conf = _sized(data["c"], 3)
                out._cal_count = [_count(x) for x in _sized(count, bins)]
                out._cal_correct = [_count(x) for x in _sized(correct, bins)]
                out._cal_conf = [_number(x) for x in _sized(conf, bins)]
            if "r" in data:
                n, errors, squares = _sized(data["r"], 3)
                out._reg = [_count(n), _number(errors), _number(squares)]
            if "s" in data:
                n, total, thumbs = _sized(data["s"], 3)
                out._sat = [_count(n), _number(total), _count(thumbs)]
            if "b" in data:
                n, total = _sized(data["b"], 2)
                out._biz = [_count(n), _number(total)]
            confusion = {str(a): {str(p): _count(c) for p, c in row.items()}
                         for a, row in data.get("m", {}).items()}
            out._merge_confusion(confusion, _count(data.get("o", 0)))
        except (TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"malformed quality counts: {e}") from None
        return out


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"malformed quality counts: {value!r} is not a count")
    return value


def _number(value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"malformed quality counts: {value!r} is not a finite number")
    return float(value)


def _sized(values: Any, size: int) -> list[Any]:
    if not isinstance(values, list | tuple) or len(values) != size:
        raise ValueError(f"malformed quality counts: {values!r} is not a list of {size}")
    return list(values)


def _finite(value: float) -> float | None:
    """A mean that overflowed is undefined, not infinite."""
    return value if math.isfinite(value) else None
