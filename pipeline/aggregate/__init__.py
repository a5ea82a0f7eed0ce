"""Windowed aggregation state: DDSketch-compatible sketches and mergeable window profiles.

Stage 1 adds event batches to a :class:`WindowProfile` per (series, window); stage 2
merges the partials and finalizes one ``WindowMetrics`` per closed window. Pure: no I/O.

Names are re-exported lazily: ``pipeline.drift`` builds on ``pipeline.aggregate.sketch``
and the profiles build on ``pipeline.drift``, so importing the profiles here eagerly
would make importing either package first a circular import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ResourceProfile", "Sketch", "WindowProfile", "series_key", "series_labels"]

_HOME = {"ResourceProfile": "profile", "WindowProfile": "profile", "series_key": "profile",
         "series_labels": "profile", "Sketch": "sketch"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
