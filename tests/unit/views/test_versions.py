"""Per-version figures and verdicts (pipeline.views.versions) against the embedded engine.

Rows go in as the sink writes them (``event_columns``, ``feedback_columns`` of fates);
every expected figure is computed here in Python from the same inputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.quality.records import Fate
from pipeline.sinks.clickhouse.quality_rows import FEEDBACK_COLUMNS, feedback_columns
from pipeline.sinks.clickhouse.query import run_query
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, event_columns
from pipeline.views.versions import (
    VERSION_COLUMNS,
    UnknownVersionError,
    compare_versions,
    versions_sql,
)
from pipeline.windows.profile import series_key
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent

# inferences two hours ago, well inside the raw retention (the TTL drops older rows)
T0 = float(int(time.time()) // 3600 * 3600 - 7200)
HOSTILE = "evil'); DROP TABLE events --\\|=\\'"  # quotes, backslashes, | and =


def inference(event_id: str, model: str, version: str, at: float, *, status: str = "ok",
              latency: float = 10.0, operation: str = "classify",
              prediction: str | float | None = "cat", tenant: str = "") -> InferenceEvent:
    return InferenceEvent(event_id=event_id, request_id=f"r-{event_id}", timestamp=at,
                          model=model, model_version=version, operation=operation,
                          tenant=tenant, status=status, latency_ms=latency,
                          prediction=prediction)


def fate(feedback_id: str, event: InferenceEvent, kind: str, value: str | float, *,
         status: str = "joined", by_request: bool = False,
         labels: Sequence[str] = ("model", "model_version", "operation")) -> Fate:
    """Feedback on ``event`` with its fate, as the join records it (series key of the
    event's series labels, its time and prediction)."""
    field = {"label": "label", "satisfaction": "satisfaction"}[kind]
    ref = ({"request_id": event.request_id} if by_request else {"event_id": event.event_id})
    feedback = FeedbackEvent(feedback_id=feedback_id, timestamp=event.timestamp + 600,
                             kind=kind, **ref, **{field: value})  # type: ignore[arg-type]
    key = series_key({name: str(getattr(event, name)) for name in labels})
    return Fate(feedback, status, key, event.timestamp, event.prediction)


def store_rows(client: Any, events: Sequence[InferenceEvent], fates: Sequence[Fate]) -> None:
    """Insert as the sink does (column-oriented rows of its column builders)."""
    if events:
        client.insert("events", event_columns(events, [0] * len(events), range(len(events))),
                      column_names=EVENT_COLUMNS, column_oriented=True)
    if fates:
        client.insert("feedback", feedback_columns(fates), column_names=FEEDBACK_COLUMNS,
                      column_oriented=True)


def versions(store: Any, model: str, start: float = T0 - 60, end: float = T0 + 3600,
             **options: Any) -> dict[str, dict[str, Any]]:
    result = run_query(store.settings, versions_sql(model, start, end, **options))
    assert not result.rows or tuple(result.columns) == VERSION_COLUMNS
    return {r[0]: dict(zip(result.columns, r, strict=True)) for r in result.rows}


@pytest.fixture(scope="module")
def small(store: Any) -> dict[str, list[float]]:
    """Model ``clf``: v1 and v2 with known figures, and rows that must not count."""
    lat1, lat2 = [10.0, 20.0, 30.0, 45.0], [100.0, 250.0, 300.0]
    e1 = [inference(f"a{i}", "clf", "v1", T0 + i, latency=x, status="error" if i == 0 else "ok")
          for i, x in enumerate(lat1)]
    e2 = [inference(f"b{i}", "clf", "v2", T0 + i, latency=x, prediction="dog",
                    status="ok" if i == 0 else "error") for i, x in enumerate(lat2)]
    numeric = inference("a9", "clf", "v1", T0 + 9, prediction=1.0)
    others = [
        inference("x1", "clf", "v1", T0 + 5, operation="embed", status="error"),  # other op
        inference("x2", "clf", "v1", T0 - 3600, status="error"),  # before the range
        inference("x3", "clf-2", "v1", T0 + 5, status="error"),  # another model
    ]
    fates = [
        fate("f1", e1[0], "label", "cat"),  # right
        fate("f2", e1[1], "label", "dog"),  # wrong
        fate("f3", e1[2], "label", "cat", by_request=True),  # right, found by request id
        fate("f4", numeric, "label", 1.5),  # a regression error: not an accuracy outcome
        fate("f5", e1[3], "label", "dog", status="repeat"),  # not counted by the join
        fate("f6", e1[0], "satisfaction", 0.2),
        fate("f7", e1[1], "satisfaction", 0.9),
        fate("f8", e1[2], "satisfaction", 0.5),  # not below 0.5: no thumbs down
        fate("f9", e2[0], "label", "dog"),  # right
        fate("f10", e2[1], "satisfaction", 0.1),
        fate("f11", others[0], "label", "dog"),  # operation embed
        fate("f12", others[1], "label", "dog"),  # inference before the range
        fate("f13", others[2], "label", "dog"),  # another model
        # a second copy of f2 as a duplicate: FINAL keeps the joined one (higher rank)
        fate("f2", e1[1], "label", "dog", status="duplicate"),
    ]
    store_rows(store.client, [*e1, *e2, numeric, *others], fates)
    return {"v1": [*lat1, 10.0], "v2": lat2}


def test_per_version_figures_count_what_the_quality_windows_count(store, small) -> None:
    got = versions(store, "clf", filters={"operation": "classify"})
    assert sorted(got) == ["v1", "v2"]
    v1, v2 = got["v1"], got["v2"]
    assert (v1["inferences"], v1["errors"], v2["inferences"], v2["errors"]) == (5, 1, 3, 2)
    for row, latencies in ((v1, small["v1"]), (v2, small["v2"])):
        assert row["latency_n"] == len(latencies)
        assert row["latency_mean"] == pytest.approx(statistics.mean(latencies))
        assert row["latency_var"] == pytest.approx(statistics.variance(latencies))
    assert (v1["labelled"], v1["correct"], v2["labelled"], v2["correct"]) == (3, 2, 1, 1)
    assert v1["satisfaction_n"] == 3 and v1["thumbs_down"] == 1
    assert v1["satisfaction_mean"] == pytest.approx(statistics.mean([0.2, 0.9, 0.5]))
    assert v1["satisfaction_var"] == pytest.approx(statistics.variance([0.2, 0.9, 0.5]))
    # one satisfaction: a mean, no variance (0, which compare_means ignores below n = 2)
    assert (v2["satisfaction_n"], v2["satisfaction_mean"], v2["thumbs_down"]) == (1, 0.1, 1)
    assert v2["satisfaction_var"] == 0


def test_without_filters_every_operation_counts_and_thumbs_down_follows_its_threshold(
        store, small) -> None:
    v1 = versions(store, "clf", thumbs_down_below=0.6)["v1"]
    assert (v1["inferences"], v1["errors"], v1["labelled"]) == (6, 2, 4)
    assert v1["thumbs_down"] == 2  # 0.2 and 0.5 are below 0.6
    assert versions(store, "clf", filters={"operation": "nothing"}) == {}
    assert versions(store, "nobody") == {}
    assert versions(store, "clf", start=T0 + 1000, end=T0 + 2000) == {}


def test_compare_versions_reads_the_rows(store, small) -> None:
    rows = list(versions(store, "clf", filters={"operation": "classify"}).values())
    diffs = {d.metric: d for d in compare_versions(rows, "v1", "v2", min_n=1)}
    assert list(diffs) == ["error_rate", "latency_ms", "accuracy", "satisfaction",
                           "thumbs_down_rate"]
    assert diffs["error_rate"].baseline == pytest.approx(0.2)
    assert diffs["error_rate"].candidate == pytest.approx(2 / 3)
    assert (diffs["accuracy"].n_baseline, diffs["accuracy"].n_candidate) == (3, 1)
    assert diffs["satisfaction"].difference == pytest.approx(0.1 - statistics.mean([0.2, 0.9,
                                                                                    0.5]))
    assert diffs["satisfaction"].low is None  # one satisfaction of v2: no interval
    assert diffs["satisfaction"].verdict == "insufficient_data"
    assert all(d.verdict == "insufficient_data"
               for d in compare_versions(rows, "v1", "v2"))  # the default minimum counts
    with pytest.raises(UnknownVersionError, match="versions there: v1, v2"):
        compare_versions(rows, "v1", "v3")
    with pytest.raises(ValueError, match="no metric 'p99'"):
        compare_versions(rows, "v1", "v2", margin={"p99": 1.0})


def test_a_hostile_model_version_and_label_are_quoted_and_unescaped(store, small) -> None:
    version, tenant = "v'1\\|=", "t'\\"
    events = [inference(f"h{i}", HOSTILE, version, T0 + i, tenant=tenant,
                        status="error" if i < 2 else "ok") for i in range(5)]
    labels = ("model", "model_version", "operation", "tenant")
    fates = [fate(f"hf{i}", e, "label", "cat" if i % 2 else "dog", labels=labels)
             for i, e in enumerate(events)]
    store_rows(store.client, events, fates)
    got = versions(store, HOSTILE, filters={"tenant": tenant, "operation": "classify"})
    assert list(got) == [version]
    row = got[version]
    assert (row["inferences"], row["errors"], row["labelled"], row["correct"]) == (5, 2, 5, 2)
    assert versions(store, HOSTILE, filters={"tenant": "t'"}) == {}
    assert versions(store, "clf")["v1"]["inferences"] == 6  # nothing else changed
    sql = versions_sql(HOSTILE, 0, 1, filters={"tenant": tenant})
    assert "DROP TABLE events --" in sql and "'evil\\');" in sql  # inside a literal
    with pytest.raises(ValueError, match="not a label"):
        versions_sql("clf", 0, 1, filters={"x'y": "1"})
    with pytest.raises(ValueError, match="start must be finite"):
        versions_sql("clf", float("nan"), 1)


def canary(model: str = "canary") -> tuple[list[InferenceEvent], list[Fate]]:
    """1,000 inferences, 300 labels and 300 satisfactions per version: v2 errs,
    misclassifies and disappoints more than v1; v3 is v1's twin; latencies are alike."""
    events, fates = [], []
    for version, error_every, wrong_every in (("v1", 100, 10), ("v2", 20, 3), ("v3", 100, 10)):
        for i in range(1000):
            e = inference(f"{model}-{version}-{i}", model, version, T0 + i % 3000,
                          status="error" if i % error_every == 0 else "ok",
                          latency=50.0 + i % 7)
            events.append(e)
            if i < 300:
                fates.append(fate(f"{model}-{version}-f{i}", e, "label",
                                  "dog" if i % wrong_every == 0 else "cat"))
                fates.append(fate(f"{model}-{version}-s{i}", e, "satisfaction",
                                  0.0 if i % wrong_every == 0 else 1.0))
    return events, fates


def test_a_worse_candidate_is_called_worse_and_a_twin_is_not(store) -> None:
    store_rows(store.client, *canary())
    rows = list(versions(store, "canary").values())
    worse = {d.metric: d.verdict for d in compare_versions(rows, "v1", "v2")}
    assert worse == {"error_rate": "worse", "latency_ms": "no_difference",
                     "accuracy": "worse", "satisfaction": "worse",
                     "thumbs_down_rate": "worse"}
    twin = {d.metric: d.verdict for d in compare_versions(rows, "v1", "v3")}
    assert set(twin.values()) == {"no_difference"}
    better = {d.metric: d.verdict for d in compare_versions(rows, "v2", "v1")}
    assert better["accuracy"] == "better" and better["error_rate"] == "better"
    # a margin wider than the difference: no longer called worse
    margin = {d.metric: d.verdict for d in compare_versions(rows, "v1", "v2",
                                                            margin={"error_rate": 0.1})}
    assert margin["error_rate"] == "no_difference"


def test_the_metrics_are_those_of_the_version_comparison_rules() -> None:
    """One meaning per metric name, whether compared from the store or on the stream."""
    from pipeline.alerting.conditions.version_comparison import METRICS as RULE_METRICS
    from pipeline.views.versions import METRICS

    assert {m.name: (m.kind, m.higher_is_worse) for m in METRICS} == RULE_METRICS
    for m in METRICS:
        assert {m.n, m.k, m.mean, m.var} - {""} <= set(VERSION_COLUMNS)
