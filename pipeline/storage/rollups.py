"""Recompute the 1-minute and 1-hour roll-ups from the raw events (idempotent).

Each run rewrites the recent buckets from ``events FINAL``; the roll-up tables are
ReplacingMergeTree on the bucket key, so a rewrite replaces a bucket rather than
adding to it. Percentile states are quantilesDD (DDSketch, 1% relative error) and
merge exactly: hours are built from minutes by merging states.
"""

from __future__ import annotations

from typing import Any

__all__ = ["refresh_rollups"]

_COLUMNS = ("bucket, model, model_version, operation, tenant, requests, errors, cache_hits, "
            "input_tokens, output_tokens, cost_usd, latency_ms, ttft_ms, output_tokens_q")

_MINUTES = f"""
INSERT INTO {{db}}.rollup_1m ({_COLUMNS})
SELECT toStartOfMinute(timestamp) AS b, model, model_version, operation, tenant,
       count(), countIf(status = 'error'), countIf(cache_hit = true),
       sum(ifNull(input_tokens, 0)), sum(ifNull(output_tokens, 0)), sum(ifNull(cost_usd, 0)),
       quantilesDDState(0.01, 0.5, 0.9, 0.95, 0.99)(latency_ms),
       quantilesDDState(0.01, 0.5, 0.9, 0.99)(time_to_first_token_ms),
       quantilesDDState(0.01, 0.5, 0.99)(toFloat64OrNull(toString(output_tokens)))
FROM {{db}}.events FINAL
WHERE timestamp >= toDateTime64({{start}}, 3) AND timestamp < toDateTime64({{end}}, 3)
GROUP BY b, model, model_version, operation, tenant
"""

_HOURS = f"""
INSERT INTO {{db}}.rollup_1h ({_COLUMNS})
SELECT toStartOfHour(bucket) AS b, model, model_version, operation, tenant,
       sum(requests), sum(errors), sum(cache_hits), sum(input_tokens), sum(output_tokens),
       sum(cost_usd),
       quantilesDDMergeState(0.01, 0.5, 0.9, 0.95, 0.99)(latency_ms),
       quantilesDDMergeState(0.01, 0.5, 0.9, 0.99)(ttft_ms),
       quantilesDDMergeState(0.01, 0.5, 0.99)(output_tokens_q)
FROM {{db}}.rollup_1m FINAL
WHERE bucket >= toDateTime({{start}}) AND bucket < toDateTime({{end}})
GROUP BY b, model, model_version, operation, tenant
"""


def refresh_rollups(client: Any, db: str, now: float, lookback_minutes: int = 15) -> None:
    """Rewrite the minutes of the last ``lookback_minutes`` and the hours they touch."""
    first_minute = int((now - lookback_minutes * 60) // 60 * 60)
    end_minute = int(now // 60 * 60) + 60
    client.command(_MINUTES.format(db=db, start=first_minute, end=end_minute))
    first_hour = first_minute // 3600 * 3600
    client.command(_HOURS.format(db=db, start=first_hour, end=end_minute // 3600 * 3600 + 3600))
