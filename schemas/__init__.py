"""InferWatch wire contracts: msgspec Structs shared by producers, processors and sinks."""

from schemas.event import SCHEMA_VERSION, InferenceEvent, ResourceSample
from schemas.export import export_json_schemas

__all__ = ["SCHEMA_VERSION", "InferenceEvent", "ResourceSample", "export_json_schemas"]
