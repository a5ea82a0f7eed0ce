"""``inferwatch simulate``: synthetic traffic, or a replayed trace, to the events topic;
with ``--feedback``, its delayed feedback to the feedback topic as it falls due."""

from __future__ import annotations

import click

from pipeline.cli import _log_to_stderr, _settings, cli


@cli.command()
@click.option("--rate", default=200.0, show_default=True, help="Events per second (synthetic).")
@click.option("--duration", default=60.0, show_default=True,
              help="Seconds of event time to generate (synthetic).")
@click.option("--seed", default=7, show_default=True, help="Random seed: same seed, same traffic.")
@click.option("--speed", default=1.0, show_default=True,
              help="Pace: 1 = real time, 10 = ten times faster, 0 = as fast as Kafka takes it.")
@click.option("--incident", "incidents", multiple=True, metavar="SPEC",
              help="KIND@OFFSET+DURATION[:model=NAME][:version=V][:factor=X], KIND one of "
                   "latency_spike, error_burst, feature_drift, token_surge, or (with "
                   "--feedback) accuracy_drop (factor: points lost) and satisfaction_drop "
                   "(factor: share lost). Repeatable.")
@click.option("--replay", "replay_file", type=click.Path(exists=True, dir_okay=False),
              help="Replay a CSV trace (arrival time, input tokens, output tokens), "
                   "e.g. data/azure_llm_inference_conv_2023.csv.")
@click.option("--limit", type=int, default=None, help="Replay at most this many rows.")
@click.option("--model", default=None, help="Model name for replayed events.")
@click.option("--batch-size", default=500, show_default=True,
              help="Events per Kafka message; 1 sends one event per message.")
@click.option("--format", "fmt", default="json", show_default=True,
              type=click.Choice(["json", "msgpack"]))
@click.option("--start", type=float, default=None, help="Event time of offset 0 (default: now).")
@click.option("--buffer", "buffer_events", default=50_000, show_default=True,
              type=click.IntRange(min=1),
              help="Records kept while Kafka is unreachable. When full, a paced run drops "
                   "the newest (counted); --speed 0 waits for room instead.")
@click.option("--otlp", "otlp_encoding", type=click.Choice(["otlp_proto", "otlp_json"]),
              default=None,
              help="Send the events as OpenTelemetry GenAI spans, as an OTel Collector would, "
                   "to the first OTLP topic configured with this encoding (otlp.topics).")
@click.option("--drain-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to keep trying to send what is left once generation ends.")
@click.option("--feedback", "with_feedback", is_flag=True,
              help="Also send delayed feedback (labels, thumbs) to the feedback topic, each "
                   "when it falls due in simulated time; the run lasts until the last is due. "
                   "Faster than real time, give a --start in the past so feedback is not "
                   "stamped in the future (the worker refuses far-future timestamps).")
@click.option("--label-delay", default="1m", show_default=True, metavar="DELAY",
              help="Label delay: [fixed:|exp:|lognormal:]DURATION (90s, 1m, 1h, 1d); "
                   "exponential when no kind is given.")
@click.option("--label-rate", default=0.2, show_default=True, type=click.FloatRange(0, 1),
              help="Share of predictions that get a ground-truth label.")
@click.option("--label-noise", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of labels flipped to another class.")
@click.option("--satisfaction-rate", default=0.05, show_default=True,
              type=click.FloatRange(0, 1), help="Share of inferences rated (thumbs up/down).")
@click.option("--feedback-horizon", type=click.FloatRange(min=0), default=None,
              help="Leave out feedback due more than this many seconds after the last event.")
@click.pass_context
def simulate(ctx: click.Context, rate: float, duration: float, seed: int, speed: float,
             incidents: tuple[str, ...], replay_file: str | None, limit: int | None,
             model: str | None, batch_size: int, fmt: str, start: float | None,
             buffer_events: int, otlp_encoding: str | None, drain_timeout: float,
             with_feedback: bool, label_delay: str, label_rate: float, label_noise: float,
             satisfaction_rate: float, feedback_horizon: float | None) -> None:
    """Publish realistic inference traffic (or replay a trace) to the events topic.

    A Kafka outage does not stop the run: records wait in a bounded buffer and are sent
    when the broker is back. The last line says what could not be sent (exit status 1
    when anything was not).
    """
    import asyncio
    import time

    from pipeline.dev.feedback import FeedbackModel
    from pipeline.dev.incidents import QUALITY_KINDS
    from pipeline.dev.publish import PublishStats, publish
    from pipeline.dev.replay import replay
    from pipeline.dev.simulate import Incident, TrafficModel
    from pipeline.sources.codec import JSON, MSGPACK

    settings = _settings(ctx)
    try:
        parsed = [Incident.parse(text) for text in incidents]
        quality = [inc for inc in parsed if inc.kind in QUALITY_KINDS]
        parsed = [inc for inc in parsed if inc.kind not in QUALITY_KINDS]
        if quality and not with_feedback:
            raise ValueError(f"{quality[0].kind} is a quality incident: it needs --feedback")
        begin = time.time() if start is None else start
        models = None
        if replay_file:
            records = replay(replay_file, seed, begin, model=model, limit=limit, incidents=parsed)
            what = f"replaying {replay_file}"
        else:
            # The run's start in the ids: a rerun with the same seed is new traffic, not a replay.
            traffic = TrafficModel(incidents=parsed, seed=seed, id_prefix=f"sim-{seed}-{begin:.0f}")
            records = traffic.stream(rate, duration, begin)
            models = traffic.models
            what = f"simulating {rate:g} ev/s for {duration:g}s"
        if with_feedback:
            feedback = FeedbackModel(quality, seed=seed, label_rate=label_rate,
                                     label_delay=label_delay, noise=label_noise,
                                     satisfaction_rate=satisfaction_rate, models=models)
            records = feedback.stream(records, horizon=feedback_horizon)
            what += (f" with feedback (labels {label_rate:g} after {feedback.label_delay}) "
                     f"to {settings.topics.feedback}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    otlp = None
    if otlp_encoding is not None:
        topic = next((t for t, enc in settings.otlp.topics.items() if enc == otlp_encoding),
                     None)
        if topic is None:
            raise click.BadParameter(
                f"no OTLP topic is configured with {otlp_encoding} (otlp.topics = "
                f"{settings.otlp.topics})", param_hint="--otlp")
        otlp = (topic, otlp_encoding)
    target = f"{otlp[0]} as OTLP spans ({otlp[1]})" if otlp else settings.topics.events
    click.echo(f"{what} at speed {speed:g} to {target} "
               f"({settings.kafka.bootstrap_servers})", err=True)
    _log_to_stderr()
    stats = PublishStats()
    interrupted = False
    try:
        asyncio.run(publish(
            settings, records, speed=speed, batch_size=batch_size,
            content_type=MSGPACK if fmt == "msgpack" else JSON,
            progress=lambda s: click.echo(s.line(), err=True),
            buffer_events=buffer_events, drain_timeout=drain_timeout, stats=stats,
            otlp=otlp,
        ))
    except KeyboardInterrupt:
        interrupted = True  # stats still say what was sent and what was not
    click.echo(stats.line() + (" (interrupted)" if interrupted else ""))
    if not stats.complete:
        click.echo(stats.unsent_line(), err=True)
        ctx.exit(1)
    if interrupted:
        ctx.exit(130)
