"""Keys dropped or masked at ingest, before anything stores or aggregates them.

``settings.privacy`` names attribute and feature keys that must not enter the pipeline:

* ``drop_attributes``: the attribute is removed (from inference events and feedback);
* ``drop_features``: the feature is removed (inference events);
* ``redact_attributes``: the attribute stays, its value becomes ``"[redacted]"``, so
  feature-usage counts and series labels still see that it was set, never what it was.
  A key both dropped and redacted is dropped.

The rules run inside :func:`pipeline.sources.codec.decode_events`, the one decoder of
stage 1, the ClickHouse sink and the quality intake, so all of them see the same events.
Each stage builds its rules once (``Redaction.from_settings``), which is None when nothing
is configured: then the decoder pays one ``is not None`` check per message. Dead letters
keep the original bytes, unredacted, by design (docs/privacy.md).

>>> from pipeline.config import PrivacySettings
>>> from schemas.event import InferenceEvent
>>> rules = Redaction.from_settings(PrivacySettings(
...     drop_attributes=["ip"], redact_attributes=["email"], drop_features=["zip"]))
>>> e = InferenceEvent(event_id="e", timestamp=1.0, model="m", latency_ms=1.0,
...                    attributes={"ip": "10.0.0.1", "email": "a@x.io", "app_feature": "chat"},
...                    features={"zip": "10115", "tokens": 812.0})
>>> rules.events([e])
>>> e.attributes, e.features
({'email': '[redacted]', 'app_feature': 'chat'}, {'tokens': 812.0})
>>> Redaction.from_settings(PrivacySettings()) is None  # nothing configured
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["REDACTED", "Redaction"]

REDACTED = "[redacted]"


class Redaction:
    """Compiled ``privacy`` ingest rules; ``events()`` and ``feedback()`` apply them in
    place to freshly decoded records (each record's own dicts: nothing is shared)."""

    __slots__ = ("_attribute_keys", "drop_attributes", "drop_features", "redact_attributes")

    def __init__(self, drop_attributes: Iterable[str] = (), drop_features: Iterable[str] = (),
                 redact_attributes: Iterable[str] = ()) -> None:
        self.drop_attributes = frozenset(drop_attributes)
        self.drop_features = tuple(dict.fromkeys(drop_features))
        self.redact_attributes = frozenset(redact_attributes) - self.drop_attributes
        self._attribute_keys = tuple(dict.fromkeys([*self.drop_attributes,
                                                    *self.redact_attributes]))

    @classmethod
    def from_settings(cls, privacy: Any) -> Redaction | None:
        """The rules of ``settings.privacy``; None when it configures none."""
        if not (privacy.drop_attributes or privacy.drop_features or privacy.redact_attributes):
            return None
        return cls(privacy.drop_attributes, privacy.drop_features, privacy.redact_attributes)

    def events(self, events: Sequence[Any]) -> None:
        """Apply every rule to ``InferenceEvent`` records, in place."""
        keys, features = self._attribute_keys, self.drop_features
        for event in events:
            if keys:
                attributes = event.attributes
                if attributes:
                    for key in keys:
                        if key in attributes:
                            self._attributes(attributes)
                            break
            if features:
                values = event.features
                if values:
                    for key in features:
                        values.pop(key, None)

    def feedback(self, feedback: Sequence[Any]) -> None:
        """Apply the attribute rules to ``FeedbackEvent`` records, in place."""
        keys = self._attribute_keys
        if not keys:
            return
        for record in feedback:
            attributes = record.attributes
            if attributes:
                for key in keys:
                    if key in attributes:
                        self._attributes(attributes)
                        break

    def _attributes(self, attributes: dict[str, str]) -> None:
        for key in self.drop_attributes:
            attributes.pop(key, None)
        for key in self.redact_attributes:
            if key in attributes:
                attributes[key] = REDACTED

    def __repr__(self) -> str:
        return (f"Redaction(drop_attributes={sorted(self.drop_attributes)}, "
                f"drop_features={list(self.drop_features)}, "
                f"redact_attributes={sorted(self.redact_attributes)})")
