"""The feedback contract: labels, satisfaction and business value that arrive late.

Topic ``inferwatch.feedback``. A ``FeedbackEvent`` refers to one inference by its
``event_id`` or its ``request_id`` (at least one) and carries exactly one kind of
value, named by ``kind``:

* ``label``: the ground truth, categorical (a string) or numeric (a number), compared
  later with the inference's ``prediction``;
* ``satisfaction``: a score in [0, 1] (thumbs up = 1, down = 0, stars rescaled);
* ``business``: a business value (a conversion = 1, revenue, a chargeback amount).

``timestamp`` is when the feedback was given, not when the inference happened; it
passes the same skew checks as any event. ``feedback_id`` is the dedup key of the
feedback itself: a re-sent feedback keeps its id. Two rules a type cannot express are
checked in ``__post_init__``, so decoding enforces them (a violation is a schema error
and goes to the DLQ) and so does building one in Python (``ValueError``).

Evolution rules are those of :mod:`schemas.event`: new fields get defaults, field types
never change, unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from schemas.bounds import EpochSeconds, SchemaVersion
from schemas.event import SCHEMA_VERSION, Attributes, Finite, Id, Label, Text, Unit

__all__ = ["KINDS", "FeedbackEvent", "FeedbackKind"]

FeedbackKind = Literal["label", "satisfaction", "business"]
# kind -> the field that carries its value
KINDS: dict[str, str] = {"label": "label", "satisfaction": "satisfaction", "business": "value"}
_VALUE_FIELDS = tuple(KINDS.values())
# The bound of InferenceEvent.request_id (Text), but never empty: it is a join key.
_RequestRef = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class FeedbackEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Feedback on one inference, given after it: a label, a satisfaction or a value.

    Required: ``feedback_id``, ``timestamp``, ``kind``, the field ``kind`` names
    (``label``, ``satisfaction`` or ``value``), and ``event_id`` or ``request_id``.
    The two value fields ``kind`` does not name must be absent.

    >>> import msgspec
    >>> raw = (b'{"feedback_id": "f1", "request_id": "r-42", "timestamp": 1700000100,'
    ...        b' "kind": "satisfaction", "satisfaction": 1, "source": "thumbs"}')
    >>> msgspec.json.decode(raw, type=FeedbackEvent).satisfaction
    1.0
    >>> FeedbackEvent(feedback_id="f2", event_id="e1", timestamp=1.0, kind="label")
    Traceback (most recent call last):
    ...
    ValueError: kind 'label' needs the field 'label'
    """

    schema_version: SchemaVersion = SCHEMA_VERSION
    feedback_id: Id  # the dedup key of this feedback
    # the inference it is about: at least one of the two
    event_id: Id | None = None
    request_id: _RequestRef | None = None
    timestamp: EpochSeconds  # when the feedback was given (Unix seconds UTC)
    kind: FeedbackKind
    label: Text | Finite | None = None  # ground truth: categorical or numeric
    satisfaction: Unit | None = None  # 0 = bad … 1 = good
    value: Finite | None = None  # business value: conversion, revenue, chargeback …
    source: Label = ""  # who or what gave it: "human_review", "thumbs", "chargeback" …
    attributes: Attributes = {}

    # The __post_init__ rules in JSON Schema, merged into the export (schemas/export.py),
    # so producers in other languages can check them too.
    json_schema_rules: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {"required": [ref], "properties": {ref: {"type": "string"}}}
            for ref in ("event_id", "request_id")
        ],
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}},
                "then": {
                    "required": [needed],
                    "properties": {
                        f: {"not": {"type": "null"}} if f == needed else {"type": "null"}
                        for f in _VALUE_FIELDS
                    },
                },
            }
            for kind, needed in KINDS.items()
        ],
    }

    def __post_init__(self) -> None:
        if self.event_id is None and self.request_id is None:
            raise ValueError("feedback needs the event_id or the request_id it refers to")
        needed = KINDS[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"kind {self.kind!r} needs the field {needed!r}")
        extra = [f for f in _VALUE_FIELDS if f != needed and getattr(self, f) is not None]
        if extra:
            raise ValueError(f"kind {self.kind!r} carries only {needed!r}, not {extra[0]!r}")
