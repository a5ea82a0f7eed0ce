"""Model quality on the real broker and store: inferences, then feedback out of order,
duplicated, by request id, for an unknown inference and hostile; then the quality
windows and their versions in ClickHouse, every feedback's fate, and an alert on an
accuracy drop of one model version.

Event time is wall time: a second wave of labels for the same inferences arrives
windows later, so the inference-time windows are published again with a higher version.
The two versions of the model serve side by side: a version comparison rule finds v2
worse than v1.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from pipeline.sdk.producer import Producer
from schemas.alert import AlertEvent
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

WINDOW = 5.0
RULES = """
rules:
  - name: AccuracyLow
    condition: accuracy < 0.8 and labelled >= 20
    severity: warning
    annotations:
      summary: "accuracy {{ value }} on {{ labels.model_version }}"
  - name: CanaryWorse
    type: version_comparison
    severity: warning
    metrics: [accuracy, error_rate]
    min_samples: 20
"""


def _send(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Any Kafka client: plain aiokafka, JSON values, acks from every replica."""
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                    acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, value=v, key=k,
                                           headers=[("content-type", b"application/json")])
                       for k, v in messages]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
    asyncio.run(go())


def test_feedback_fills_quality_windows_and_an_accuracy_drop_alerts(kafka_bootstrap,
                                                                    tmp_path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    pipe = Pipeline(kafka_bootstrap, tmp_path,
                    INFERWATCH_ALERTS__RULES=str(rules),
                    INFERWATCH_METRICS__WINDOW_SECONDS="5",
                    INFERWATCH_METRICS__LATENESS_SECONDS="1",
                    INFERWATCH_QUALITY__WINDOW_SECONDS=str(WINDOW),
                    INFERWATCH_QUALITY__WAIT_FOR_INFERENCE_SECONDS="15",
                    INFERWATCH_QUALITY__MIN_CALIBRATION_LABELS="20")
    topics = pipe.settings.topics
    try:
        worker = pipe.start_worker()
        pipe.wait_processor_ready(worker)
        pipe.wait_sink_ready(worker)
        now = time.time()
        # 40 inferences per version; v1 right 9 times in 10, v2 right 1 time in 2
        events, truth = [], {}
        for version in ("v1", "v2"):
            for i in range(40):
                event_id = f"{version}-{i}"
                right = (i % 10 != 0) if version == "v1" else (i % 2 == 0)
                events.append({"event_id": event_id, "request_id": f"req-{event_id}",
                               "timestamp": now + i * 0.05, "model": "clf",
                               "model_version": version, "operation": "classify",
                               "latency_ms": 20.0, "prediction": "spam",
                               "confidence": 0.9 if right else 0.55})
                truth[event_id] = "spam" if right else "ham"

        def label(event_id: str, by_request: bool = False) -> dict:
            ref = ({"request_id": f"req-{event_id}"} if by_request
                   else {"event_id": event_id})
            return {"feedback_id": f"fb-{event_id}", **ref, "timestamp": time.time(),
                    "kind": "label", "label": truth[event_id], "source": "review"}

        first = [e["event_id"] for e in events if int(e["event_id"].split("-")[1]) < 20]
        second = [e["event_id"] for e in events if e["event_id"] not in first]
        # feedback before its inference (any Kafka client), and a hostile one
        _send(pipe.settings, topics.feedback,
              [(None, msgspec.json.encode([label(i, by_request=n % 4 == 0)
                                           for n, i in enumerate(first[:10])])),
               (b"x", b'{"feedback_id": "h", "kind": "label"}'),
               (b"y", b"\xff\xfe not json")])
        pipe.produce([(None, msgspec.json.encode(events[k:k + 20]),
                       [("content-type", b"application/json")])
                      for k in range(0, len(events), 20)])
        # the rest of the first wave with the SDK, two of them twice, one for nobody
        with Producer(pipe.settings) as sdk:
            for event_id in first[10:] + first[10:12]:
                sdk.feedback(event_id=event_id, label=truth[event_id], source="review",
                             feedback_id=f"fb-{event_id}")
            sdk.feedback(event_id="never-sent", label="spam", feedback_id="fb-nobody")
            sdk.feedback(event_id=first[0], satisfaction=0.0, feedback_id="sat-1")
        # the second wave two windows later: the same inference windows fill in
        time.sleep(2 * WINDOW)
        _send(pipe.settings, topics.feedback,
              [(None, msgspec.json.encode([label(i) for i in second]))])

        total = "SELECT sum(labelled) FROM quality_windows FINAL WHERE basis = 'inference_time'"
        assert pipe.wait_count(80, timeout=120, sql=total) == 80, pipe.log(worker)
        per_version = {r["model_version"]: r for r in pipe.query(
            "SELECT model_version, sum(labelled) AS n_labelled, "
            "sum(accuracy * labelled) / sum(labelled) AS accuracy, sum(inferences) AS n, "
            "max(version) AS newest, sum(satisfaction_count) AS sat "
            "FROM quality_windows FINAL WHERE basis = 'inference_time' "
            "GROUP BY model_version")}
        assert per_version["v1"]["n"] == per_version["v2"]["n"] == 40
        assert abs(per_version["v1"]["accuracy"] - 0.9) < 1e-9
        assert abs(per_version["v2"]["accuracy"] - 0.5) < 1e-9
        assert per_version["v1"]["sat"] == 1
        assert max(r["newest"] for r in per_version.values()) >= 2  # filled in later
        estimated = pipe.scalar("SELECT count() FROM quality_windows FINAL "
                                "WHERE estimated_accuracy IS NOT NULL")
        assert estimated >= 1  # the calibration learned from the first wave
        # every feedback is stored with its fate; the unknown one once the wait is over
        unmatched = "SELECT count() FROM feedback FINAL WHERE status = 'unmatched'"
        assert pipe.wait_count(1, timeout=60, sql=unmatched) == 1
        fates = {r["status"]: r["n"] for r in pipe.query(
            "SELECT status, count() AS n FROM feedback FINAL GROUP BY status")}
        assert fates == {"joined": 81, "unmatched": 1}
        # the hostile feedback went to the DLQ with its reason; nothing else did
        dead = pipe.consume_all(topics.dlq, 2, timeout=30)
        reasons = sorted(dict(r.headers)["inferwatch-error-reason"] for r in dead)
        assert reasons == [b"malformed", b"schema"]
        # the accuracy drop of v2 fires on its feedback-time quality series
        # and v2 beside v1 is worse (accuracy), once both versions' sums met
        alerts = [msgspec.json.decode(r.value, type=AlertEvent)
                  for r in pipe.consume_all(topics.alerts, 2, timeout=60)]
        firing = {(a.rule, a.labels.get("model_version"), a.labels.get("quality"))
                  for a in alerts if a.state == "firing"}
        assert ("AccuracyLow", "v2", "feedback_time") in firing
        assert ("AccuracyLow", "v1", "feedback_time") not in firing
        assert ("CanaryWorse", "v2", "comparison") in firing
        (canary,) = [a for a in alerts if a.rule == "CanaryWorse" and a.state == "firing"]
        assert canary.labels["baseline_version"] == "v1"
    finally:
        pipe.close()
