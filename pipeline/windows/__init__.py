"""Event-time windows: watermarks, mergeable sketches and histograms, window profiles,
and the two aggregation stages (stage 1 per source partition, stage 2 per series).

Stage 1 adds event batches to a :class:`WindowProfile` per (series, window); stage 2
merges the partials and finalizes one ``WindowMetrics`` per closed window. Pure: no I/O.
Scoring (``pipeline.scoring``) builds on these; nothing here imports scoring.
"""

from pipeline.windows.profile import ResourceProfile, WindowProfile, series_key, series_labels
from pipeline.windows.sketch import Sketch

__all__ = ["ResourceProfile", "Sketch", "WindowProfile", "series_key", "series_labels"]
