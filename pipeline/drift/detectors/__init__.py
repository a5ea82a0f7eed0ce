"""Change-point detectors on per-window series, checkpointable (see ``base``).

>>> sorted(DETECTORS)
['adwin', 'page_hinkley']
"""

from pipeline.drift.detectors.adwin import ADWINDetector
from pipeline.drift.detectors.base import ChangeDetector
from pipeline.drift.detectors.page_hinkley import PageHinkleyDetector

__all__ = ["DETECTORS", "ADWINDetector", "ChangeDetector", "PageHinkleyDetector"]

DETECTORS: dict[str, type[ChangeDetector]] = {
    ADWINDetector.name: ADWINDetector,
    PageHinkleyDetector.name: PageHinkleyDetector,
}
