"""Windowed aggregation state: DDSketch-compatible sketches and mergeable window profiles.

Stage 1 adds event batches to a :class:`WindowProfile` per (series, window); stage 2
merges the partials and finalizes one ``WindowMetrics`` per closed window. Pure: no I/O.
"""

from pipeline.aggregate.profile import (
    ResourceProfile,
    WindowProfile,
    series_key,
    series_labels,
)
from pipeline.aggregate.sketch import Sketch

__all__ = ["ResourceProfile", "Sketch", "WindowProfile", "series_key", "series_labels"]
