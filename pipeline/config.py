"""One typed settings object, read from an optional TOML file and ``INFERWATCH_*`` env vars.

Precedence: defaults < TOML file < environment. Two short variables cover the common
case: ``INFERWATCH_KAFKA`` (bootstrap servers) and ``INFERWATCH_CLICKHOUSE`` (a
clickhouse-connect DSN). Any other field is ``INFERWATCH_<SECTION>__<FIELD>``, e.g.
``INFERWATCH_KAFKA__SASL_PASSWORD`` or ``INFERWATCH_WORKER__SINK_BATCH_SIZE``.
Secrets are never printed: ``Settings.describe()`` masks them.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["ConfigError", "Settings", "load_settings"]

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
SECRET_FIELDS = {"sasl_password", "password", "ssl_password"}
RETENTION_MARGIN_SECONDS = 86400.0  # accepted age = raw retention less this (see below)


class ConfigError(ValueError):
    """A configuration problem, with the file and line when there is one."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "inferwatch"


class TopicSettings(_Section):
    events: str = "inferwatch.events"
    dlq: str = "inferwatch.events.dlq"
    resources: str = "inferwatch.resources"
    partials: str = "inferwatch.partials"
    metrics: str = "inferwatch.metrics"
    scores: str = "inferwatch.scores"
    alerts: str = "inferwatch.alerts"
    silences: str = "inferwatch.silences"  # compacted: the durable silences, by id
    baselines: str = "inferwatch.baselines"  # compacted: pinned drift baselines, by series
    feedback: str = "inferwatch.feedback"  # FeedbackEvent: labels, satisfaction, value (late)
    joins: str = "inferwatch.joins"  # internal: inferences and feedback, by join id
    outcomes: str = "inferwatch.outcomes"  # internal: joined feedback and tallies, by series
    audit: str = "inferwatch.audit"  # AuditEvent: who changed what (docs/audit.md)
    partitions: PositiveInt = 6
    replication_factor: PositiveInt = 1

    def all(self) -> list[str]:
        """Every topic of design.md, in data-flow order."""
        return [
            self.events, self.dlq, self.resources, self.partials,
            self.metrics, self.scores, self.alerts, self.silences, self.baselines,
            self.feedback, self.joins, self.outcomes, self.audit,
        ]

    def compacted(self) -> list[str]:
        """The single-partition compacted topics: durable state keyed by id, not streams."""
        return [self.silences, self.baselines]


class ClickHouseSettings(_Section):
    dsn: str = ""  # empty: embedded chDB under <home>/clickhouse
    database: str = "inferwatch"
    raw_retention_days: PositiveInt = 30
    aggregate_retention_days: PositiveInt = 400

    @property
    def max_accepted_age_seconds(self) -> float:
        """The oldest event age the sources accept: the raw retention less a margin.

        The margin (1 day, or a quarter of a retention shorter than 4 days) is how long
        an event accepted at the edge stays queryable before the table TTL removes it.

        >>> ClickHouseSettings(raw_retention_days=30).max_accepted_age_seconds / 86400
        29.0
        >>> ClickHouseSettings(raw_retention_days=1).max_accepted_age_seconds / 3600
        18.0
        """
        retention = self.raw_retention_days * 86400.0
        return retention - min(RETENTION_MARGIN_SECONDS, retention / 4)


class IngestLimits(_Section):
    max_message_bytes: PositiveInt = 1 << 20
    max_decompressed_bytes: PositiveInt = 8 << 20
    max_batch_events: PositiveInt = 10_000
    # A dead letter larger than this (the broker's record limit, less framing) is sent as
    # a bounded reference: source coordinates, size, sha256 and the first 4 KiB.
    max_dead_letter_bytes: Annotated[int, msgspec.Meta(ge=16_384)] = 900 * 1024
    max_future_seconds: PositiveFloat = 3600.0
    # Older events are rejected (stale_timestamp): they would soon fall out of the raw
    # table's TTL. load_settings sets it to ClickHouseSettings.max_accepted_age_seconds
    # (raw retention less a margin) unless given, and refuses a value beyond that. The
    # default fits the default 30-day retention, for limits built without load_settings.
    max_past_seconds: PositiveFloat = 29 * 86400.0


class WorkerSettings(_Section):
    app_id: str = "inferwatch"
    roles: list[Literal["process", "sink"]] = msgspec.field(
        default_factory=lambda: ["process", "sink"]
    )
    process_batch_size: PositiveInt = 5_000
    process_batch_seconds: PositiveFloat = 0.2
    sink_batch_size: PositiveInt = 50_000
    sink_flush_seconds: PositiveFloat = 1.0
    sink_retry_max_seconds: PositiveFloat = 30.0
    # How soon a dead worker's partitions move to the others (consumer session timeout).
    session_timeout_seconds: Annotated[float, msgspec.Meta(ge=6)] = 30.0
    # Static group membership (Kafka KIP-345): a stable id, unique per worker and kept
    # across its restarts (e.g. the pod name of a StatefulSet, INFERWATCH_WORKER__INSTANCE_ID).
    # A restarted worker with the same id gets its partitions back at once instead of after
    # the session timeout. A static worker that stops (even cleanly) and does not come back
    # keeps its partitions until the session times out. Empty: dynamic membership.
    instance_id: Annotated[str, msgspec.Meta(max_length=249, pattern=r"^[A-Za-z0-9._-]*$")] = ""
    rollup_interval_seconds: PositiveFloat = 30.0


class MetricsSettings(_Section):
    """Windowed metrics (stage 1 / stage 2 of design.md)."""

    window_seconds: PositiveFloat = 10.0
    hop_seconds: PositiveFloat | None = None  # None: tumbling; else hopping every hop_seconds
    lateness_seconds: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # A caught-up partition with no event for this long advances with the wall clock, so
    # the last window after traffic stops closes ~window + lateness + this later (was 30 s).
    idle_timeout_seconds: PositiveFloat = 10.0
    series_labels: list[str] = msgspec.field(
        default_factory=lambda: ["model", "model_version", "operation"]
    )
    latency_slo_ms: PositiveFloat = 1000.0
    feature_usage_attributes: list[str] = msgspec.field(default_factory=lambda: ["app_feature"])
    relative_accuracy: Annotated[float, msgspec.Meta(gt=0, lt=0.5)] = 0.01
    max_series_per_worker: PositiveInt = 10_000
    correction_horizon_windows: PositiveInt = 30


class AlertReceiverSettings(_Section):
    """One receiver of alert notifications, routed by label matchers (Alertmanager's
    route + receiver in one): an alert goes to the first receiver, in order, whose
    ``matchers`` all match its labels (none: every alert), and on to later ones only when
    that receiver says ``continue``. Kinds: ``alertmanager`` (its API v2, ``urls`` are the
    Alertmanagers of an HA pair, each one gets every alert), ``webhook`` (Alertmanager's
    webhook body) and ``slack`` (an incoming webhook)."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    kind: Literal["alertmanager", "webhook", "slack"]
    urls: Annotated[list[str], msgspec.Meta(min_length=1)]
    matchers: list[str] = msgspec.field(default_factory=list)  # e.g. 'severity="critical"'
    continue_: bool = msgspec.field(default=False, name="continue")
    group_by: list[str] | None = None  # webhook, slack; None: the rule files' group_by

    def __post_init__(self) -> None:
        from pipeline.alerting.matchers import parse_matcher  # config stays import-light

        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"receiver {self.name!r}: url {url!r} is not http(s)://")
        for text in self.matchers:
            try:
                parse_matcher(text)
            except ValueError as exc:
                raise ValueError(f"receiver {self.name!r}: {exc}") from None


class AlertSettings(_Section):
    """Alert rules and where notifications go (alert events always go to the alerts topic).

    ``webhook_urls``, ``slack_webhook_url`` and ``alertmanager_urls`` are shorthands for
    receivers named ``webhook``, ``slack`` and ``alertmanager`` that take every alert and
    let it continue; they come before the ``receivers`` (see
    ``pipeline.alerting.receivers``)."""

    rules: str = ""  # a rules file or directory; empty: no alerting
    webhook_urls: list[str] = msgspec.field(default_factory=list)  # Alertmanager format
    slack_webhook_url: str = ""
    alertmanager_urls: list[str] = msgspec.field(default_factory=list)  # its API v2
    receivers: list[AlertReceiverSettings] = msgspec.field(default_factory=list)
    # Firing alerts are re-sent to Alertmanager this often (Prometheus: every minute); a
    # firing alert's endsAt is 4 re-sends ahead, so Alertmanager resolves it by itself
    # when InferWatch stops sending.
    alertmanager_resend_seconds: PositiveFloat = 60.0
    # A link to the alert (generatorURL); {fingerprint} and {rule} are replaced.
    generator_url: str = ""
    # A series without a window for this many windows counts as not holding: it resolves.
    stale_after_windows: PositiveInt = 6

    def __post_init__(self) -> None:
        shorthands = {"webhook": self.webhook_urls, "slack": self.slack_webhook_url,
                      "alertmanager": self.alertmanager_urls}
        for name, given in shorthands.items():
            for url in [given] if isinstance(given, str) else given:
                if url and not url.startswith(("http://", "https://")):
                    raise ValueError(f"receiver {name!r} (shorthand): url {url!r} is not "
                                     "http(s)://")
        try:
            self.generator_url.format(fingerprint="0" * 16, rule="rule")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"generator_url {self.generator_url!r}: only {{fingerprint}} "
                             f"and {{rule}} can be replaced ({exc!r})") from None
        seen = {name for name, given in shorthands.items() if given}
        for receiver in self.receivers:
            if receiver.name in seen:
                raise ValueError(f"receiver {receiver.name!r} is defined twice (a receiver "
                                 "of that name, or its shorthand setting)")
            seen.add(receiver.name)


class DriftSettings(_Section):
    """Drift, change-point and anomaly scores per series and closed window (stage 2)."""

    enabled: bool = True
    numeric_features: list[str] = msgspec.field(default_factory=list)  # event.features keys
    categorical_features: list[str] = msgspec.field(default_factory=list)
    prediction: Literal["categorical", "numeric", "none"] = "categorical"
    confidence: bool = True
    operational: bool = True  # latency, time to first token, tokens, cost
    # auto: the series' pinned baseline when there is one, else the trailing windows
    reference: Literal["auto", "pinned", "trailing"] = "auto"
    trailing_windows: PositiveInt = 12
    # Per-statistic thresholds overriding pipeline.scoring.drift.thresholds (e.g. {psi = 0.25}).
    thresholds: dict[str, float] = msgspec.field(default_factory=dict)
    detector: Literal["page_hinkley", "adwin"] = "page_hinkley"
    anomaly: Literal["mad", "half_space_trees"] = "mad"
    # None: the scorer's recommended threshold
    # (pipeline.scoring.drift.thresholds.ANOMALY_THRESHOLDS)
    anomaly_threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    warm_up_windows: PositiveInt = 20  # no window is called anomalous before this many
    # Detector and scorer state go to the changelog every this many windows of a series.
    checkpoint_every_windows: PositiveInt = 6


class OtlpSettings(_Section):
    """OpenTelemetry spans from the OTel Collector's Kafka exporter (``sources/otlp``).

    The exporter sends no content-type header, so each topic names its encoding:
    ``otlp_proto`` (the exporter's default) or ``otlp_json`` (protojson)."""

    enabled: bool = False
    topics: dict[str, Literal["otlp_proto", "otlp_json"]] = msgspec.field(
        default_factory=lambda: {"otlp_spans": "otlp_proto"}
    )
    partitions: PositiveInt = 6  # when InferWatch creates a missing spans topic


class QualitySettings(_Section):
    """Model quality from delayed feedback (``pipeline/quality``): the join of feedback to
    its inference and quality windows by inference time and by feedback time."""

    enabled: bool = True
    window_seconds: PositiveFloat = 300.0  # quality windows (labels are sparser than requests)
    # an inference waits this long for feedback; the join holds each for this long, ~0.3 KB
    # apiece (docs/quality.md, "Sizing"): set it to your labels' delay, not longer
    horizon_seconds: PositiveFloat = 21_600.0
    max_inferences_held: PositiveInt = 2_000_000  # per joins partition; beyond: oldest leave
    wait_for_inference_seconds: PositiveFloat = 600.0  # feedback that came first waits this
    # feedback waiting for its inference, per joins partition; beyond: oldest unmatched
    max_feedback_waiting: PositiveInt = 200_000
    confidence_bins: Annotated[int, msgspec.Meta(ge=2, le=100)] = 10  # calibration and ECE
    max_classes: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 50  # more: counted as "~other"
    thumbs_down_below: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5  # satisfaction < this
    # the estimate (CBPE) needs this many labelled inferences before it is published
    min_calibration_labels: PositiveInt = 200
    compare_seconds: PositiveFloat = 1_800.0  # versions are compared over this trailing span


class PricingSettings(_Section):
    """Cost of events that carry no ``cost_usd``, from a dated price table."""

    enabled: bool = True
    table: str = ""  # a price table file (TOML); empty: the table shipped with InferWatch


class TelemetrySettings(_Section):
    """The worker's own HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464  # 0: any free port (logged)
    # Opt-in: the model metrics themselves per series (requests, errors, latency, tokens,
    # cost) as Prometheus gauges, for teams that alert in Prometheus; at most this many.
    model_metrics: bool = False
    max_model_series: PositiveInt = 500


class QuerySettings(_Section):
    """The embedded store's read-only query endpoint (ClickHouse HTTP interface subset)."""

    bind: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8123  # 0: any free port
    user: str = "inferwatch"
    password: str = ""  # empty: a random one per start, in <home>/clickhouse.owner.json
    # HTTPS: both PEM files set (the certificate chain and its key); empty: plain HTTP
    tls_certfile: str = ""
    tls_keyfile: str = ""
    # per-query limits, so one query cannot starve the worker that owns the store
    max_execution_seconds: PositiveFloat = 30.0
    max_memory_bytes: PositiveInt = 1 << 30
    max_result_rows: PositiveInt = 1_000_000
    max_result_bytes: PositiveInt = 256 << 20


class AuditSettings(_Section):
    """Who changed what: silences, baselines, rules, queries, dashboard actions (``audit``
    table and log lines)."""

    enabled: bool = True
    retention_days: PositiveInt = 400


class PrivacySettings(_Section):
    """PII: pseudonymised identities (SDK), keys dropped or redacted at ingest, DLQ age."""

    # the SDK replaces these event fields by a keyed HMAC (hex) of their value; the key is
    # read from the environment variable named here, never from a file
    pseudonymize: list[str] = msgspec.field(default_factory=lambda: ["user"])
    key_env: str = "INFERWATCH_PSEUDONYM_KEY"
    drop_attributes: list[str] = []  # attribute keys removed at ingest
    drop_features: list[str] = []  # feature keys removed at ingest
    redact_attributes: list[str] = []  # attribute values replaced by "[redacted]"
    # the DLQ keeps raw payloads (PII included): the dead-letter topic's retention
    dlq_retention_days: PositiveInt = 7


class LogSettings(_Section):
    """``text`` (the human default) or ``json``: one object per line for log search."""

    format: Literal["text", "json"] = "text"


class DevKafkaSettings(_Section):
    kafka_version: str = "4.0.2"
    port: PositiveInt = 9092
    controller_port: PositiveInt = 9093
    heap: str = "512m"
    # SASL_SSL (SCRAM-SHA-512) with a private CA and ACLs on ``port`` (``dev up --secure``);
    # users, passwords and CA under <home>/kafka/secure/ (docs/security.md)
    secure: bool = False


class Settings(_Section):
    home: str = ".inferwatch"
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    topics: TopicSettings = msgspec.field(default_factory=TopicSettings)
    clickhouse: ClickHouseSettings = msgspec.field(default_factory=ClickHouseSettings)
    limits: IngestLimits = msgspec.field(default_factory=IngestLimits)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    alerts: AlertSettings = msgspec.field(default_factory=AlertSettings)
    drift: DriftSettings = msgspec.field(default_factory=DriftSettings)
    otlp: OtlpSettings = msgspec.field(default_factory=OtlpSettings)
    pricing: PricingSettings = msgspec.field(default_factory=PricingSettings)
    quality: QualitySettings = msgspec.field(default_factory=QualitySettings)
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)
    query: QuerySettings = msgspec.field(default_factory=QuerySettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    dev: DevKafkaSettings = msgspec.field(default_factory=DevKafkaSettings)

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve()

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN in force; the embedded default lives under ``home``."""
        return self.clickhouse.dsn or f"chdb://{self.home_path / 'clickhouse'}"

    @property
    def embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")

    def describe(self) -> dict[str, Any]:
        """Settings as plain data with secrets and DSN passwords masked, safe to print."""
        return _mask(msgspec.to_builtins(self))


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("***" if k in SECRET_FIELDS and v else _mask(v)) for k, v in value.items()
        }
    if isinstance(value, str):
        return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", value)
    return value


@functools.cache
def _list_fields() -> frozenset[tuple[str, str]]:
    """(section, field) of every list setting: set from one variable, comma separated."""
    out = set()
    for section in msgspec.inspect.type_info(Settings).fields:  # type: ignore[attr-defined]
        if not isinstance(section.type, msgspec.inspect.StructType):
            continue
        for f in section.type.fields:
            t = f.type
            options = t.types if isinstance(t, msgspec.inspect.UnionType) else (t,)
            if any(isinstance(o, msgspec.inspect.ListType) for o in options):
                out.add((section.name, f.name))
    return frozenset(out)


# mappings set from one variable as ``key=value,key=value``
_MAPS = {("otlp", "topics"), ("drift", "thresholds")}
_SHORT_ENV = {"INFERWATCH_KAFKA": ("kafka", "bootstrap_servers"),
              "INFERWATCH_CLICKHOUSE": ("clickhouse", "dsn"),
              "INFERWATCH_HOME": ("home",)}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if name in _SHORT_ENV:
            path = _SHORT_ENV[name]
        elif name.startswith("INFERWATCH_") and "__" in name:
            path = tuple(name.removeprefix("INFERWATCH_").lower().split("__"))
        else:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        leaf = path[-1]
        if tuple(path) in _MAPS:
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            node[leaf] = _Whole({k.strip(): v.strip() for k, _, v in pairs})
        elif tuple(path) in _list_fields():
            node[leaf] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            node[leaf] = value
    return out


class _Whole(dict):
    """A mapping from the environment that replaces the configured one (not merged)."""


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, _Whole):
            merged[key] = dict(value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _line_of(text: str, path: list[str]) -> int | None:
    r"""Best-effort line number of ``path`` in a TOML text: sections, then a key, where a
    part like ``receivers[1]`` is the second ``[[…receivers]]`` table. Without a key (a
    whole table is wrong) the table's header line.

    >>> text = ("[alerts]\nrules = 'r'\n[[alerts.receivers]]\nname = 'a'\n"
    ...         "[[alerts.receivers]]\nname = 'b'\n")
    >>> _line_of(text, ["alerts", "rules"]), _line_of(text, ["alerts", "receivers[1]", "name"])
    (2, 6)
    >>> _line_of(text, ["alerts", "receivers[0]"])
    3
    """
    parts = list(path or [""])
    indexed = next((i for i, part in enumerate(parts) if re.fullmatch(r"\w+\[\d+\]", part)),
                   None)
    if indexed is not None:
        name, number = parts[indexed][:-1].split("[")
        header, occurrence = ".".join([*parts[:indexed], name]), int(number)
        *sections, key = [header, *parts[indexed + 1:]] if indexed + 1 < len(parts) \
            else [header, ""]
    else:
        *sections, key = parts
        occurrence = -1
    table = ".".join(sections)
    in_section, seen = not sections, -1
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[["):
            in_section = stripped.strip("[] ") == table
            seen += in_section
            in_section = in_section and (occurrence < 0 or seen == occurrence)
            if in_section and not key:
                return lineno
        elif stripped.startswith("["):
            in_section = occurrence < 0 and stripped.strip("[] ") == table
        elif in_section and key and re.match(rf"{re.escape(key)}\s*=", stripped):
            return lineno
    return None


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings: defaults, then the TOML file (if any), then the environment.

    ``path`` defaults to ``$INFERWATCH_CONFIG``. Errors name the file, line and field.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("INFERWATCH_CONFIG")
    from_file: dict[str, Any] = {}
    text = ""
    if path:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from exc
        try:
            from_file = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: {exc}") from exc
    try:
        settings = msgspec.convert(from_file, Settings, strict=True)
    except msgspec.ValidationError as exc:
        where = _where(str(exc))
        line = _line_of(text, where)
        raise ConfigError(f"{path}:{line or '?'}: {exc}") from exc
    env = _env_overrides(environ)
    if env:
        try:
            settings = msgspec.convert(
                _merge(msgspec.to_builtins(settings), env), Settings, strict=False
            )
        except msgspec.ValidationError as exc:
            where = _where(str(exc))
            var = ("INFERWATCH_" + "__".join(re.sub(r"\[\d+\]", "", p).upper() for p in where)
                   if where else "INFERWATCH_*")
            raise ConfigError(f"environment ({var}): {exc}") from exc
    _accept_only_what_is_kept(settings, from_file, env, f"{path}:{_line_of(text, _PAST) or '?'}")
    _monitor_only_what_is_kept(settings, env, path, text)
    return settings


_PAST = ["limits", "max_past_seconds"]


def _accept_only_what_is_kept(
    settings: Settings, from_file: dict[str, Any], env: dict[str, Any], file_line: str
) -> None:
    """Accepted means kept: the accepted age follows the raw retention, less a margin."""
    edge = settings.clickhouse.max_accepted_age_seconds
    if "max_past_seconds" in env.get("limits", {}):
        where = "environment (INFERWATCH_LIMITS__MAX_PAST_SECONDS)"
    elif "max_past_seconds" in from_file.get("limits", {}):
        where = file_line
    else:
        settings.limits.max_past_seconds = edge
        return
    if settings.limits.max_past_seconds > edge:
        raise ConfigError(
            f"{where}: limits.max_past_seconds = {settings.limits.max_past_seconds:.0f} "
            f"is beyond the raw retention ({settings.clickhouse.raw_retention_days} days, "
            f"clickhouse.raw_retention_days) less its margin: events that old would be "
            f"stored and then deleted by the table TTL. Use at most {edge:.0f}, or leave "
            "it unset to follow the retention."
        )


def _monitor_only_what_is_kept(settings: Settings, env: dict[str, Any],
                               path: str | Path | None, text: str) -> None:
    """A feature dropped at ingest (``privacy.drop_features``) cannot be monitored for
    drift: live events never carry it, and a baseline of it would keep its values."""
    dropped = set(settings.privacy.drop_features)
    for name in ("numeric_features", "categorical_features"):
        clash = [f for f in getattr(settings.drift, name) if f in dropped]
        if not clash:
            continue
        where = (f"environment (INFERWATCH_DRIFT__{name.upper()})"
                 if name in env.get("drift", {})
                 else f"{path}:{_line_of(text, ['drift', name]) or '?'}")
        raise ConfigError(f"{where}: drift.{name} names {', '.join(map(repr, clash))}, which "
                          "privacy.drop_features drops at ingest: live events never carry "
                          "it, and a baseline of it would keep its values. Monitor it or "
                          "drop it, not both.")


def _where(message: str) -> list[str]:
    """The field path a msgspec error message points at, e.g. ``['kafka', 'client_id']``."""
    match = re.search(r"at `\$\.?([\w.\[\]]*)", message)
    found = match.group(1).replace("[...]", "") if match else ""  # [...]: a mapping's key
    path = [p for p in found.split(".") if p]
    unknown = re.search(r"unknown field `(\w+)`", message)
    return [*path, unknown.group(1)] if unknown else path
