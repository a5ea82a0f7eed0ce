"""Re-aggregate the 1-minute and 1-hour roll-ups touched since the last refresh.

Every event stored reaches the roll-ups whatever its age (a replayed trace, a backlog
after a sink outage), and exactly once:

- *Which buckets.* A refresh finds the minutes that rows ingested since the last
  successful refresh fall in (``ingested_at``, set by the store at insert), recomputes
  each of those minutes whole from ``events FINAL``, then the hours they belong to from
  ``rollup_1m FINAL``. Roll-up tables are ReplacingMergeTree on the bucket key, so a
  recompute replaces a bucket instead of adding to it, and recomputing one twice is
  harmless. ``events`` keeps the first copy stored of each event_id (migration 0008), so
  a later copy never changes which bucket counts an event: the buckets touched by new
  rows are the only ones that can change.
- *Crash-safe progress.* ``rollup_progress`` (migration 0009) records the ingestion-time
  cutoff only after the buckets it covers are stored; a crash repeats work, never skips
  it. The next scan starts ``margin_seconds`` before the cutoff, for inserts that began
  before it but became visible after it.
- *Bounded.* A pass over a large backlog (the first refresh after an upgrade re-aggregates
  every stored event) does at most ``max_minutes`` minute buckets per refresh, oldest
  first, and continues on the next refresh; progress is logged.

Percentile states are quantilesDD (DDSketch, 1% relative error) and merge exactly: hours
are built from minutes by merging states.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["RollupRefresh", "refresh_rollups"]

log = logging.getLogger(__name__)

MAX_MINUTES = 1440  # minute buckets per refresh: a day of backlog per run
MARGIN_SECONDS = 60.0  # inserts in flight when the cutoff is taken
_FOREVER = 4102444800  # 2100-01-01: no upper bound on event time

_COLUMNS = ("bucket, model, model_version, operation, tenant, requests, errors, cache_hits, "
            "input_tokens, output_tokens, cost_usd, latency_ms, ttft_ms, output_tokens_q")

# The rows ingested in [low, target) with an event time in [first, end). Every row, not
# only the kept copy of each event_id: a bucket recomputed for nothing is harmless.
_ROWS = """
FROM {db}.events
WHERE ingested_at >= fromUnixTimestamp64Milli(toInt64({low}), 'UTC')
  AND ingested_at < fromUnixTimestamp64Milli(toInt64({target}), 'UTC')
  AND timestamp >= toDateTime64({first}, 3, 'UTC') AND timestamp < toDateTime64({end}, 3, 'UTC')
"""

# Minutes as Unix seconds, ascending.
_TOUCHED = "SELECT DISTINCT toUnixTimestamp(toStartOfMinute(timestamp)) AS m {rows} ORDER BY m"

# FINAL first, then the WHERE: a minute counts the kept copy of each event_id only.
_MINUTES = f"""
INSERT INTO {{db}}.rollup_1m ({_COLUMNS})
SELECT toStartOfMinute(timestamp) AS b, model, model_version, operation, tenant,
       count(), countIf(status = 'error'), countIf(cache_hit = true),
       sum(ifNull(input_tokens, 0)), sum(ifNull(output_tokens, 0)), sum(ifNull(cost_usd, 0)),
       quantilesDDState(0.01, 0.5, 0.9, 0.95, 0.99)(latency_ms),
       quantilesDDState(0.01, 0.5, 0.9, 0.99)(time_to_first_token_ms),
       quantilesDDState(0.01, 0.5, 0.99)(toFloat64OrNull(toString(output_tokens)))
FROM {{db}}.events FINAL
WHERE timestamp >= toDateTime64({{start}}, 3, 'UTC') AND timestamp < toDateTime64({{end}}, 3, 'UTC')
  AND toStartOfMinute(timestamp) IN (SELECT DISTINCT toStartOfMinute(timestamp) {{rows}})
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
WHERE bucket >= toDateTime({{start}}, 'UTC') AND bucket < toDateTime({{end}}, 'UTC')
  AND toStartOfHour(bucket) IN (SELECT DISTINCT toStartOfHour(timestamp) {{rows}})
GROUP BY b, model, model_version, operation, tenant
"""

_PROGRESS = """
SELECT run, toUnixTimestamp64Milli(cutoff), toUnixTimestamp64Milli(target),
       toUnixTimestamp(next_bucket)
FROM {db}.rollup_progress
ORDER BY run DESC, updated_at DESC
LIMIT 1
"""

_RECORD = """
INSERT INTO {db}.rollup_progress (id, run, cutoff, target, next_bucket)
SELECT 0, {run}, fromUnixTimestamp64Milli(toInt64({cutoff}), 'UTC'),
       fromUnixTimestamp64Milli(toInt64({target}), 'UTC'), toDateTime({next_bucket}, 'UTC')
"""


@dataclass(frozen=True)
class RollupRefresh:
    """What one refresh did.

    >>> RollupRefresh(minutes=3, hours=1, remaining=0, cutoff_ms=1_700_000_000_000).done
    True
    """

    minutes: int  # minute buckets re-aggregated by this refresh
    hours: int  # hour buckets re-aggregated by this refresh
    remaining: int  # minute buckets of the current pass left for the next refreshes
    cutoff_ms: int  # every event ingested before this (less the margin) is rolled up

    @property
    def done(self) -> bool:
        """True when the roll-ups have caught up with every row ingested before the pass."""
        return self.remaining == 0


def refresh_rollups(
    client: Any, db: str, *, max_minutes: int = MAX_MINUTES,
    margin_seconds: float = MARGIN_SECONDS,
) -> RollupRefresh:
    """Re-aggregate the buckets touched since the last refresh (at most ``max_minutes``)."""
    if max_minutes < 1:
        raise ValueError("max_minutes must be at least 1")
    row = client.query(_PROGRESS.format(db=db)).result_rows
    run, cutoff, target, first = row[0] if row else (0, 0, 0, 0)
    if target <= cutoff:  # no pass under way: start one up to now (the store's clock)
        target = client.query("SELECT toUnixTimestamp64Milli(now64(3))").result_rows[0][0]
        first = 0
    low = max(0, cutoff - int(margin_seconds * 1000))
    everything = _ROWS.format(db=db, low=low, target=target, first=first, end=_FOREVER)
    touched = [m for (m,) in client.query(_TOUCHED.format(rows=everything)).result_rows]
    batch = touched[:max_minutes]
    hours = sorted({m // 3600 * 3600 for m in batch})
    if batch:  # the sets go as subqueries, not literals: no query-size limit to meet
        rows = _ROWS.format(db=db, low=low, target=target, first=first, end=batch[-1] + 60)
        client.command(_MINUTES.format(db=db, start=batch[0], end=batch[-1] + 60, rows=rows))
        client.command(_HOURS.format(db=db, start=hours[0], end=hours[-1] + 3600, rows=rows))
    remaining = len(touched) - len(batch)
    if remaining:  # the pass goes on next time, after the last minute done
        client.command(_RECORD.format(db=db, run=run + 1, cutoff=cutoff, target=target,
                                      next_bucket=batch[-1] + 60))
    else:  # the pass is complete: everything ingested before target is rolled up
        client.command(_RECORD.format(db=db, run=run + 1, cutoff=target, target=target,
                                      next_bucket=0))
        cutoff = target
    if remaining or len(batch) > 60:
        log.info("roll-ups: re-aggregated %d minutes (%s to %s) and %d hours; "
                 "%d minutes left in this pass", len(batch), _iso(batch[0]),
                 _iso(batch[-1]), len(hours), remaining)
    else:
        log.debug("roll-ups: re-aggregated %d minutes and %d hours", len(batch), len(hours))
    return RollupRefresh(len(batch), len(hours), remaining, cutoff)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
