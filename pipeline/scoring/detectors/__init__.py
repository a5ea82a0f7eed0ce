"""Change-point detectors on per-window series, checkpointable (see ``base``).

>>> sorted(DETECTORS)
['adwin', 'page_hinkley']
"""

from pipeline.scoring.detectors.adwin import ADWINDetector
from pipeline.scoring.detectors.base import ChangeDetector
from pipeline.scoring.detectors.page_hinkley import PageHinkleyDetector

__all__ = ["DETECTORS", "ADWINDetector", "ChangeDetector", "PageHinkleyDetector"]

DETECTORS: dict[str, type[ChangeDetector]] = {
    ADWINDetector.name: ADWINDetector,
    PageHinkleyDetector.name: PageHinkleyDetector,
}
