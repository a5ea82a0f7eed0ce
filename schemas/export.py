"""JSON Schema export, so producers in other languages can validate before they send."""

from __future__ import annotations

from pathlib import Path

import msgspec

from schemas.alert import AlertEvent
from schemas.event import SCHEMA_VERSION, InferenceEvent, ResourceSample
from schemas.feedback import FeedbackEvent
from schemas.metrics import ResourceMetrics, WindowMetrics
from schemas.scores import WindowScores

CONTRACTS: dict[str, type[msgspec.Struct]] = {
    "InferenceEvent": InferenceEvent,
    "ResourceSample": ResourceSample,
    "FeedbackEvent": FeedbackEvent,
    "WindowMetrics": WindowMetrics,
    "ResourceMetrics": ResourceMetrics,
    "WindowScores": WindowScores,
    "AlertEvent": AlertEvent,
}


def json_schema(struct: type[msgspec.Struct]) -> dict:
    """One self-contained JSON Schema (draft 2020-12) for ``struct``.

    A contract with rules its types cannot express (checked in ``__post_init__``)
    states them as JSON Schema in a ``json_schema_rules`` class attribute; they are
    merged into its definition here.
    """
    (ref,), components = msgspec.json.schema_components(
        [struct], ref_template="#/$defs/{name}"
    )
    components[struct.__name__].update(getattr(struct, "json_schema_rules", {}))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://inferwatch.dev/schemas/v{SCHEMA_VERSION}/{struct.__name__}.json",
        **ref,
        "$defs": components,
    }


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one ``<Name>.schema.json`` per contract into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, struct in CONTRACTS.items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(msgspec.json.format(msgspec.json.encode(json_schema(struct)), indent=2))
        written.append(path)
    return written
