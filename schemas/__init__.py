"""InferWatch wire contracts: msgspec Structs shared by producers, processors and sinks."""

from schemas.alert import AlertEvent, Silence
from schemas.event import SCHEMA_VERSION, InferenceEvent, ResourceSample
from schemas.export import export_json_schemas
from schemas.feedback import FeedbackEvent
from schemas.metrics import METRICS_SCHEMA_VERSION, ResourceMetrics, WindowMetrics

__all__ = [
    "METRICS_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AlertEvent",
    "FeedbackEvent",
    "InferenceEvent",
    "ResourceMetrics",
    "ResourceSample",
    "Silence",
    "WindowMetrics",
    "export_json_schemas",
]
