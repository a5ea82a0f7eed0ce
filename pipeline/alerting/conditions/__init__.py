"""Rule conditions: one implementation per rule type, beside their base."""

from pipeline.alerting.conditions.base import Condition, Outcome
from pipeline.alerting.conditions.burn_rate import BurnRateCondition
from pipeline.alerting.conditions.error_rate_bound import ErrorRateBoundCondition
from pipeline.alerting.conditions.threshold import ThresholdCondition
from pipeline.alerting.conditions.version_comparison import VersionComparisonCondition

__all__ = [
    "BurnRateCondition",
    "Condition",
    "ErrorRateBoundCondition",
    "Outcome",
    "ThresholdCondition",
    "VersionComparisonCondition",
]
