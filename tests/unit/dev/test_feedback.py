"""Unit tests of pipeline.dev.feedback: determinism, delays, noise, satisfaction, incidents."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import IngestLimits
from pipeline.dev.feedback import Delay, FeedbackModel, parse_duration
from pipeline.dev.simulate import DEFAULT_MODELS, TrafficModel, synthetic
from pipeline.sources.codec import decode_events, encode_events
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent

START = 1_700_000_000.0
CLF = next(m for m in DEFAULT_MODELS if m.operation == "classify")
CHAT = tuple(m for m in DEFAULT_MODELS if m.name in ("gpt-chat", "code-complete"))


def traffic(seed: int = 3, rate: float = 500.0, duration: float = 60.0, incidents=(),
            models=DEFAULT_MODELS) -> list:
    return list(synthetic(seed, rate, duration, START, models, incidents, resources=False))


def by_event(records: list) -> dict[str, InferenceEvent]:
    return {r.event_id: r for _, r in records if isinstance(r, InferenceEvent)}


def of_kind(feedback: list, kind: str) -> list[FeedbackEvent]:
    return [f for _, f in feedback if f.kind == kind]


def test_same_seed_same_feedback_other_seed_other_feedback() -> None:
    records = traffic(duration=20.0)
    a = FeedbackModel(seed=5).apply(records)
    assert a == FeedbackModel(seed=5).apply(records)
    b = FeedbackModel(seed=6).apply(records)
    assert [f.feedback_id for _, f in a[1]] != [f.feedback_id for _, f in b[1]]
    ids = [f.feedback_id for _, f in a[1]]
    assert len(ids) == len(set(ids))  # one id per (event, kind): a re-send keeps it


@pytest.mark.parametrize("spec", ["fixed:1m", "1h", "exp:30s", "lognormal:1d",
                                  "lognormal:2h:sigma=0.5"])
def test_delay_distributions_have_their_mean(spec: str) -> None:
    delay = Delay.parse(spec)
    draws = delay.draw(np.random.default_rng(0), 200_000)
    assert draws.min() >= 0
    assert abs(draws.mean() / delay.mean - 1) < 0.02
    if delay.kind == "fixed":
        assert np.all(draws == delay.mean)


def test_label_delays_follow_the_configured_distribution() -> None:
    records = traffic(rate=100.0, duration=120.0, models=(CLF,))
    events = by_event(records)
    _, feedback = FeedbackModel(seed=1, label_rate=1.0, label_delay="exp:10m").apply(records)
    delays = np.array([f.timestamp - events[f.event_id].timestamp
                       for f in of_kind(feedback, "label")])
    assert len(delays) > 10_000
    assert abs(delays.mean() / 600 - 1) < 0.03
    assert abs(np.median(delays) / (600 * np.log(2)) - 1) < 0.05  # exponential, not fixed
    _, fixed = FeedbackModel(seed=1, label_rate=1.0, label_delay="fixed:1m").apply(records)
    assert {round(f.timestamp - events[f.event_id].timestamp, 6)
            for f in of_kind(fixed, "label")} == {60.0}


def test_parse_bad_delays_and_durations() -> None:
    for text in ("", "soon", "fixed:", "1w", "exp:1h:sigma=2", "lognormal:1h:shape=2", "-1s"):
        with pytest.raises(ValueError, match="bad delay"):
            Delay.parse(text)
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("1 week")
    with pytest.raises(ValueError, match="label_rate"):
        FeedbackModel(label_rate=1.5)


def test_labels_only_for_predictions_and_calibrated_against_confidence() -> None:
    records = traffic(rate=800.0, duration=120.0, models=(CLF, *CHAT))
    events = by_event(records)
    _, feedback = FeedbackModel(seed=2, label_rate=0.5).apply(records)
    labels = of_kind(feedback, "label")
    assert all(events[f.event_id].prediction is not None for f in labels)
    assert {f.label for f in labels} <= set(CLF.labels)
    clf = [e for e in events.values() if e.model == CLF.name and e.prediction is not None]
    assert abs(len(labels) / len(clf) - 0.5) < 0.02
    conf = np.array([events[f.event_id].confidence for f in labels])
    right = np.array([f.label == events[f.event_id].prediction for f in labels])
    assert abs(right.mean() - conf.mean()) < 0.015  # calibrated: accuracy = confidence
    low, high = conf < 0.7, conf > 0.9
    assert right[low].mean() < right[high].mean() - 0.2  # and per confidence, not just overall


def test_label_noise_flips_that_share_of_labels() -> None:
    records = traffic(rate=100.0, duration=120.0, models=(CLF,))
    clean = of_kind(FeedbackModel(seed=4, label_rate=1.0).apply(records)[1], "label")
    noisy = of_kind(FeedbackModel(seed=4, label_rate=1.0, noise=0.2).apply(records)[1], "label")
    assert [f.feedback_id for f in clean] == [f.feedback_id for f in noisy]  # same draws
    flipped = np.mean([a.label != b.label for a, b in zip(clean, noisy, strict=True)])
    assert abs(flipped - 0.2) < 0.02


def _satisfaction(feedback: list, events: dict, model: str, lo: float, hi: float,
                  offsets: dict) -> tuple[float, float]:
    inside, outside = [], []
    for f in of_kind(feedback, "satisfaction"):
        if events[f.event_id].model != model:
            continue
        (inside if lo <= offsets[f.event_id] < hi else outside).append(f.satisfaction)
    return float(np.mean(inside)), float(np.mean(outside))


def test_satisfaction_falls_with_latency_and_errors() -> None:
    incidents = ["latency_spike@40+40:model=gpt-chat:factor=5",
                 "error_burst@40+40:model=code-complete:factor=0.8"]
    records = traffic(rate=250.0, duration=120.0, incidents=incidents, models=CHAT)
    events = by_event(records)
    offsets = {r.event_id: o for o, r in records}
    model = FeedbackModel(seed=7, satisfaction_rate=0.5)
    _, feedback = model.apply(records)
    slow_in, slow_out = _satisfaction(feedback, events, "gpt-chat", 40, 80, offsets)
    err_in, err_out = _satisfaction(feedback, events, "code-complete", 40, 80, offsets)
    assert slow_in < slow_out - 0.3
    assert err_in < err_out - 0.4
    assert {f.satisfaction for f in of_kind(feedback, "satisfaction")} == {0.0, 1.0}
    stars = of_kind(FeedbackModel(seed=7, satisfaction_rate=0.5, stars=True).apply(records)[1],
                    "satisfaction")
    assert {f.satisfaction for f in stars} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert {f.source for f in stars} == {"stars"}


def test_satisfaction_drop_hits_the_deployed_version_only() -> None:
    records = traffic(rate=250.0, duration=120.0, models=CHAT)
    events = by_event(records)
    offsets = {r.event_id: o for o, r in records}
    model = FeedbackModel(["satisfaction_drop@60+60:model=gpt-chat:version=2024-09:factor=0.5"],
                          seed=8, satisfaction_rate=1.0)
    _, feedback = model.apply(records)

    def mean(version: str, after: bool) -> float:
        return float(np.mean([f.satisfaction for f in of_kind(feedback, "satisfaction")
                              if events[f.event_id].model_version == version
                              and (offsets[f.event_id] >= 60) == after]))

    assert 0.4 < mean("2024-09", True) / mean("2024-09", False) < 0.6
    assert 0.9 < mean("2024-06", True) / mean("2024-06", False) < 1.1


@pytest.mark.parametrize("informative", [True, False])
def test_accuracy_drop_lowers_realised_accuracy_by_its_points(informative: bool) -> None:
    records = traffic(rate=400.0, duration=120.0, models=(CLF, replace(CHAT[0], share=0.1)))
    events = by_event(records)
    offsets = {r.event_id: o for o, r in records}
    model = FeedbackModel([f"accuracy_drop@60+60:model={CLF.name}:factor=10"], seed=9,
                          label_rate=1.0, informative=informative)
    served, feedback = model.apply(records)
    served_events = by_event(served)
    accuracy, confidence = {}, {}
    for after in (False, True):
        labels = [f for f in of_kind(feedback, "label") if (offsets[f.event_id] >= 60) == after]
        accuracy[after] = np.mean([f.label == events[f.event_id].prediction for f in labels])
        confidence[after] = np.mean([served_events[f.event_id].confidence for f in labels])
    assert abs((accuracy[False] - accuracy[True]) - 0.10) < 0.02
    if informative:  # the confidences fall with it: the model stays calibrated
        assert abs((confidence[False] - confidence[True]) - 0.10) < 0.01
        assert abs(confidence[True] - accuracy[True]) < 0.02
    else:  # the confidences do not move: only labels can tell
        assert abs(confidence[False] - confidence[True]) < 0.01
    untouched = [e for e in served_events.values() if e.model != CLF.name]
    assert all(e == events[e.event_id] for e in untouched)


def test_conversions_are_business_values() -> None:
    records = traffic(rate=1000.0, duration=30.0)
    _, feedback = FeedbackModel(seed=10, conversion_rate=0.1).apply(records)
    business = of_kind(feedback, "business")
    n = sum(isinstance(r, InferenceEvent) and r.status == "ok" for _, r in records)
    assert 0.04 < len(business) / n < 0.1  # 10 % scaled by satisfaction
    assert {(f.value, f.source) for f in business} == {(1.0, "conversion")}


def test_stream_is_in_offset_order_and_feedback_follows_its_event() -> None:
    records = list(synthetic(11, 300.0, 30.0, START))  # resource samples too
    merged = list(FeedbackModel(seed=11, label_delay="exp:5s").stream(records))
    offsets = [o for o, _ in merged]
    assert offsets == sorted(offsets)
    position = {r.event_id: i for i, (_, r) in enumerate(merged) if isinstance(r, InferenceEvent)}
    feedback = [(i, r) for i, (_, r) in enumerate(merged) if isinstance(r, FeedbackEvent)]
    assert feedback and all(position[f.event_id] < i for i, f in feedback)
    assert len(merged) - len(feedback) == len(records)
    last = records[-1][0]
    cut = list(FeedbackModel(seed=11, label_delay="exp:5s").stream(records, horizon=2.0))
    assert max(o for o, _ in cut) <= last + 2.0 and len(cut) < len(merged)


def test_feedback_is_valid_under_the_contract() -> None:
    records = traffic(rate=300.0, duration=20.0)
    _, feedback = FeedbackModel(seed=12, label_rate=0.5, noise=0.1, satisfaction_rate=0.3,
                                stars=True, conversion_rate=0.2).apply(records)
    values = [f for _, f in feedback]
    assert {f.kind for f in values} == {"label", "satisfaction", "business"}
    for content_type in ("application/json", "application/msgpack"):
        out = decode_events(encode_events(values, content_type),
                            {"content-type": content_type.encode()},
                            IngestLimits(max_past_seconds=1e10), START + 86_400, FeedbackEvent)
        assert not out.rejections, out.rejections[:3]
        assert out.events == values


def test_quality_incidents_are_checked_and_kept_apart_from_traffic_ones() -> None:
    with pytest.raises(ValueError, match="matches no model"):
        FeedbackModel(["accuracy_drop@0+60:model=intent-clf:version=9.9"])
    with pytest.raises(ValueError, match="traffic incident"):
        FeedbackModel(["latency_spike@0+60"])
    with pytest.raises(ValueError, match="quality incident"):
        TrafficModel(incidents=["accuracy_drop@0+60"])
    with pytest.raises(ValueError, match="version= applies to quality incidents"):
        TrafficModel(incidents=["latency_spike@0+60:version=1"])
    with pytest.raises(ValueError, match="points of accuracy <= 100"):
        FeedbackModel(["accuracy_drop@0+60:factor=101"])
    with pytest.raises(ValueError, match="share <= 1"):
        FeedbackModel(["satisfaction_drop@0+60:factor=2"])
    FeedbackModel(["accuracy_drop@0+60:model=anything"], models=None)  # no check without models


# --------------------------------------------------------------------------- publishing
class _Broker:
    """A fake aiokafka producer that acknowledges everything (see test_simulate for outages)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes | None, list]] = []

    def producer(self) -> _Broker:
        return self

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key=None, headers=None):
        import asyncio

        self.messages.append((topic, value, key, headers))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.mark.parametrize("batch_size", [1, 50])
def test_publish_sends_feedback_to_the_feedback_topic(batch_size: int) -> None:
    import asyncio

    from pipeline.config import Settings
    from pipeline.dev.publish import publish

    records = list(synthetic(13, 200.0, 5.0, START, models=(CLF,)))
    merged = list(FeedbackModel(seed=13, label_rate=0.5, label_delay="fixed:1s").stream(records))
    expected = [r for _, r in merged if isinstance(r, FeedbackEvent)]
    broker = _Broker()
    settings = Settings()
    stats = asyncio.run(publish(settings, merged, speed=0, batch_size=batch_size,
                                _connect=broker.producer))
    assert stats.complete and stats.feedback == stats.generated_feedback == len(expected)
    assert stats.events == sum(isinstance(r, InferenceEvent) for _, r in records)
    assert f"{len(expected)} of {len(expected)} feedback events" in stats.line()
    sent: list[FeedbackEvent] = []
    for topic, value, key, headers in broker.messages:
        if topic != settings.topics.feedback:
            continue
        out = decode_events(value, headers, IngestLimits(max_past_seconds=1e10), START + 100,
                            FeedbackEvent)
        assert not out.rejections
        sent += out.events
        if batch_size == 1:
            assert key == out.events[0].event_id.encode()
    assert sent == expected


def test_simulate_command_with_feedback() -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    env = {"INFERWATCH_KAFKA": "127.0.0.1:1"}
    result = CliRunner().invoke(
        cli, ["simulate", "--rate", "50", "--duration", "1", "--speed", "0", "--drain-timeout",
              "0.3", "--feedback", "--label-delay", "fixed:2s", "--label-rate", "1",
              "--incident", "accuracy_drop@0+1:model=intent-clf:factor=5"], env=env)
    assert result.exit_code == 1, result.output
    assert "with feedback (labels 1 after fixed:2s)" in result.output
    assert "NOT sent:" in result.output and "feedback events" in result.output
    refused = CliRunner().invoke(
        cli, ["simulate", "--duration", "1", "--incident", "accuracy_drop@0+1"], env=env)
    assert refused.exit_code == 1 and "needs --feedback" in refused.output
    bad = CliRunner().invoke(
        cli, ["simulate", "--duration", "1", "--feedback", "--label-delay", "soon"], env=env)
    assert bad.exit_code == 1 and "bad delay 'soon'" in bad.output
