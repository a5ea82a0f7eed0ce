"""Thin aiokafka helpers: connection options from settings, topic creation, headers,
and what a refusal means.

Kafka refusing *who* a client is (wrong SASL credentials, a certificate the client does
not trust) or *what* it asks (a topic or group its ACLs do not allow) is not an outage:
retrying cannot help. :class:`KafkaAccessError` is that failure, with one line saying
what to fix (never a secret). :func:`access_error` recognises one in an aiokafka error;
:func:`diagnose` also finds the cause aiokafka's bootstrap hides behind "Unable to
bootstrap" by opening one connection itself (:func:`check_access`). ``wait_for_broker``
raises it at once instead of waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidPartitionsError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
    for_code,
)

from pipeline.config import KafkaSettings, Settings
from pipeline.runtime.topic_config import apply_dlq_retention, dlq_topic_configs

__all__ = ["KafkaAccessError", "access_error", "check_access", "client_options",
           "describe_error", "diagnose", "ensure_topics", "headers_dict", "start_client",
           "wait_for_broker"]

log = logging.getLogger(__name__)


class KafkaAccessError(Exception):
    """Kafka refused this client's identity or request: authentication, TLS trust or
    authorization. Terminal: the configuration (or the broker's ACLs) must change."""


def _principal(kafka: KafkaSettings) -> str:
    if kafka.security_protocol.startswith("SASL") and kafka.sasl_username:
        return f"user {kafka.sasl_username}"
    return "the anonymous principal (no SASL user)"


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> str:
    """The topics or group an aiokafka authorization error carries (its first argument:
    a name, or a set of names)."""
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, (set, frozenset, list, tuple)):
        return ", ".join(sorted(map(str, arg)))
    text = str(arg)
    return text.split("]")[-1].strip() or "?"


def access_error(kafka: KafkaSettings, exc: BaseException) -> KafkaAccessError | None:
    """The :class:`KafkaAccessError` that ``exc`` (or an exception it was raised from)
    is, worded for ``kafka``'s settings, or None when it is something else (an outage).

    >>> from aiokafka.errors import SaslAuthenticationFailed, TopicAuthorizationFailedError
    >>> kafka = KafkaSettings(bootstrap_servers="broker:9093", security_protocol="SASL_SSL",
    ...                       sasl_mechanism="SCRAM-SHA-512", sasl_username="producer",
    ...                       sasl_password="hunter2", ssl_cafile="/etc/ca.pem")
    >>> print(access_error(kafka, SaslAuthenticationFailed("invalid credentials")))
    authentication failed for user producer via SCRAM-SHA-512 at broker:9093 (check \
kafka.sasl_username and kafka.sasl_password)
    >>> print(access_error(kafka, TopicAuthorizationFailedError("inferwatch.alerts")))
    not authorized: user producer may not use topic inferwatch.alerts at broker:9093 (no ACL \
allows it; see docs/security.md)
    >>> access_error(kafka, ConnectionRefusedError()) is None
    True
    """
    where = kafka.bootstrap_servers
    for cause in _chain(exc):
        if isinstance(cause, KafkaAccessError):
            return cause
        if isinstance(cause, (SaslAuthenticationFailed, AuthenticationFailedError)):
            return KafkaAccessError(
                f"authentication failed for {_principal(kafka)} via "
                f"{kafka.sasl_mechanism or 'PLAIN'} at {where} (check kafka.sasl_username "
                "and kafka.sasl_password)")
        if isinstance(cause, (UnsupportedSaslMechanismError, AuthenticationMethodNotSupported)):
            return KafkaAccessError(f"SASL at {where}: {describe_error(cause)} "
                                    "(kafka.sasl_mechanism)")
        if isinstance(cause, ssl.SSLCertVerificationError):
            trust = f"ssl_cafile={kafka.ssl_cafile}" if kafka.ssl_cafile else \
                "the system's CAs (kafka.ssl_cafile is not set)"
            reason = cause.verify_message or cause.reason or "verification failed"
            if cause.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
                return KafkaAccessError(f"TLS: the broker's certificate at {where} is not "
                                        f"valid for that host name ({reason})")
            return KafkaAccessError(f"TLS: the broker's certificate at {where} is not trusted "
                                    f"by {trust} ({reason})")
        if isinstance(cause, ssl.SSLError) and not isinstance(
                cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # those: a dropped link
            return KafkaAccessError(
                f"TLS handshake with {where} failed ({cause.reason or cause}); is that a TLS "
                f"listener, and kafka.security_protocol={kafka.security_protocol} right?")
        if isinstance(cause, TopicAuthorizationFailedError):
            return KafkaAccessError(
                f"not authorized: {_principal(kafka)} may not use topic {_names(cause)} at "
                f"{where} (no ACL allows it; see docs/security.md)")
        if isinstance(cause, GroupAuthorizationFailedError):
            return KafkaAccessError(
                f"not authorized: {_principal(kafka)} may not use consumer group "
                f"{_names(cause)} at {where} (see docs/security.md)")
        if isinstance(cause, (ClusterAuthorizationFailedError,
                              TransactionalIdAuthorizationFailed)):
            return KafkaAccessError(f"not authorized: {_principal(kafka)} at {where}: "
                                    f"{describe_error(cause)} (see docs/security.md)")
    return None


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for one line of a log or an error, naming the type once:
    aiokafka's errors start with it already (after ``[Error <code>]`` for a broker's
    error code); a type name elsewhere in a message is not taken for it.

    >>> from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError
    >>> describe_error(KafkaConnectionError("Unable to bootstrap"))
    'KafkaConnectionError: Unable to bootstrap'
    >>> describe_error(NotLeaderForPartitionError("t-0"))
    '[Error 6] NotLeaderForPartitionError: t-0'
    >>> describe_error(TimeoutError()), describe_error(ValueError("a ValueError elsewhere"))
    ('TimeoutError', 'ValueError: a ValueError elsewhere')
    """
    name, text = type(exc).__name__, str(exc)
    if re.match(rf"(\[Error -?\d+\] )?{re.escape(name)}\b", text):
        return text
    return f"{name}: {text}" if text else name


async def check_access(kafka: KafkaSettings, timeout: float = 10.0) -> None:
    """Open one connection to the first bootstrap server, with TLS and SASL as configured,
    and raise :class:`KafkaAccessError` if the broker refuses who we are (or we refuse its
    certificate). An unreachable broker is not this check's business: it returns."""
    from aiokafka.conn import create_conn

    host, _, port = kafka.bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = client_options(kafka)
    options.pop("bootstrap_servers")
    try:
        async with asyncio.timeout(timeout):
            conn = await create_conn(host.strip("[]"), int(port),
                                     request_timeout_ms=int(timeout * 1000), **options)
        conn.close()
    except Exception as exc:
        access = access_error(kafka, exc)
        if access is not None:
            raise access from None
        log.debug("access check at %s: %s", kafka.bootstrap_servers, describe_error(exc))


async def diagnose(kafka: KafkaSettings, exc: BaseException,
                   timeout: float = 10.0) -> KafkaAccessError | None:
    """What a failure of a Kafka client means: a :class:`KafkaAccessError`, or None for
    an outage. aiokafka reports a refused SASL login or certificate as "Unable to
    bootstrap" (the cause only goes to its log): then one connection of our own (within
    ``timeout`` s) finds it."""
    access = access_error(kafka, exc)
    if access is None and isinstance(exc, KafkaConnectionError):
        try:
            await check_access(kafka, timeout)
        except KafkaAccessError as found:
            return found
    return access


async def start_client(client: Any, kafka: KafkaSettings) -> None:
    """``await client.start()`` for an aiokafka producer, consumer or admin client made from
    ``kafka``; when it fails, the client is stopped, and a refusal is raised as a
    :class:`KafkaAccessError` (an outage as aiokafka raised it)."""
    try:
        await client.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        access = await diagnose(kafka, exc)
        if access is not None:
            raise access from None
        raise


class _QuietAccessFailures(logging.Filter):
    """aiokafka's own lines for a refused login or certificate ("Unable connect to …:
    <error>") and a refused topic ("Topic … is not authorized for this client") go to
    DEBUG: the caller raises a KafkaAccessError saying the same in one line, naming the
    user and the CA file, which aiokafka's wording does not. So does its "Authenticated
    as …" for every new connection (a worker opens dozens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        text = str(record.msg)
        quiet = "is not authorized for this client" in text or (
            text.startswith("Authenticated as")) or (
            bool(args) and isinstance(args[-1], BaseException)
            and access_error(KafkaSettings(), args[-1]) is not None)
        if quiet and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET_ACCESS = _QuietAccessFailures()
for _name in ("aiokafka", "aiokafka.cluster", "aiokafka.conn"):
    logging.getLogger(_name).addFilter(_QUIET_ACCESS)


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for bootstrap, TLS and SASL, from configuration only."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    return options


async def wait_for_broker(kafka: KafkaSettings, timeout: float = 60.0) -> None:
    """Return once the cluster answers a metadata request; raise TimeoutError after
    ``timeout`` s otherwise (and up to 3 s more to tell a TLS mismatch), and
    :class:`KafkaAccessError` at once when the broker refuses the credentials or its
    certificate is not trusted (waiting cannot fix either)."""
    deadline = asyncio.get_running_loop().time() + timeout
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "Unable connect" on every retry is noise here
    try:
        await _wait(kafka, deadline)
    finally:
        quiet.setLevel(level)


async def _wait(kafka: KafkaSettings, deadline: float) -> None:
    """Attempts until ``deadline`` (loop time), each one, and its diagnosis, within it."""
    loop = asyncio.get_running_loop()
    last: Exception | None = None
    while loop.time() < deadline:
        admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=5000)
        try:
            async with asyncio.timeout_at(deadline):
                await admin.start()
                await admin.describe_cluster()
            return
        except Exception as exc:  # broker not up yet: any other error means "try again"
            access = await diagnose(kafka, exc, timeout=max(0.1, deadline - loop.time()))
            if access is not None:
                raise access from None
            last = last if isinstance(exc, TimeoutError) and last is not None else exc
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
        finally:
            await admin.close()
    hint = await _protocol_hint(kafka)
    why = describe_error(last) if last is not None else "no attempt in time"
    raise TimeoutError(f"Kafka at {kafka.bootstrap_servers} did not answer: {why}"
                       + (f"; {hint}" if hint else ""))


async def _protocol_hint(kafka: KafkaSettings, timeout: float = 3.0) -> str:
    """Why a listener that accepts connections never answers, when the cause is a TLS
    mismatch: a plaintext listener hangs up on a TLS handshake, and a TLS listener on a
    plaintext request. '' when it is not that (or not known)."""
    from aiokafka.conn import create_conn

    host, _, port = kafka.bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = client_options(kafka)
    options.pop("bootstrap_servers")
    tls = kafka.security_protocol in ("SSL", "SASL_SSL")
    try:
        async with asyncio.timeout(timeout):
            conn = await create_conn(host.strip("[]"), int(port),
                                     request_timeout_ms=int(timeout * 1000), **options)
        conn.close()
    except (TimeoutError, ConnectionResetError) as exc:
        if tls:  # a plaintext listener reads a TLS hello as a huge request and hangs up
            what = "reset the TLS handshake" if isinstance(exc, ConnectionResetError) else \
                f"gave no TLS handshake within {timeout:g}s"
            return (f"{host}:{port} {what}: a plaintext listener? "
                    f"(kafka.security_protocol={kafka.security_protocol})")
    except KafkaConnectionError as exc:
        if not tls and "closed" in str(exc):
            return (f"{host}:{port} closed the connection: a TLS listener? "
                    f"(kafka.security_protocol={kafka.security_protocol})")
    except Exception as exc:  # a hint is optional
        log.debug("no protocol hint for %s: %s", kafka.bootstrap_servers, describe_error(exc))
    return ""


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Idempotent.

    By default: every topic of the settings, with the OTLP span topics when that source
    is enabled (``otlp.partitions`` partitions; the Collector may also create them)."""
    topics = settings.topics
    otlp = set(settings.otlp.topics) if settings.otlp.enabled else set()
    wanted = list(names) if names is not None else topics.all() + sorted(otlp)
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await start_client(admin, settings.kafka)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            compacted = {"cleanup.policy": "compact"}
            state = set(topics.compacted())  # silences, baselines: one partition, compacted
            new = [
                NewTopic(t, 1 if t in state else settings.otlp.partitions if t in otlp
                         else topics.partitions, topics.replication_factor,
                         topic_configs=compacted if t in state
                         else dlq_topic_configs(settings) if t == topics.dlq else None)
                for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # raced another creator: fine
                _check_created(settings.kafka, await admin.create_topics(new))
            log.info("created topics %s", ", ".join(missing))
        if topics.dlq in wanted and topics.dlq in existing:  # a new one was created with it
            await apply_dlq_retention(admin, settings)  # raw payloads: privacy's retention
        return missing
    finally:
        await admin.close()


def _check_created(kafka: KafkaSettings, response: Any) -> None:
    """Raise the first error of a CreateTopics response (aiokafka returns them): a topic
    that exists already is fine, a refused one is a :class:`KafkaAccessError`."""
    for topic, code, *rest in response.topic_errors:
        if not code or code == TopicAlreadyExistsError.errno:
            continue
        error = for_code(code)(f"creating topic {topic}: {rest[0] if rest else ''}".rstrip(": "))
        if isinstance(error, TopicAuthorizationFailedError):
            error = TopicAuthorizationFailedError(topic)
        raise access_error(kafka, error) or error


async def ensure_changelog(settings: Settings, name: str, sources: Sequence[str] = (),
                           at_least: int = 0) -> int:
    """Make a stage's state topic exist, compacted, with a partition for every partition
    of its ``sources`` (partition ``p`` holds the state of source partition ``p``) and at
    least ``at_least``; return its partition count.

    A source topic may be wider than ``topics.partitions`` (created by a team, or grown
    later): the state topic is created as wide, or grown, so no source partition is left
    without a place for its state. Growing is safe: state goes to an explicit partition,
    never by key hash."""
    from aiokafka.admin import NewPartitions

    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await start_client(admin, settings.kafka)
    try:
        widths = await _partition_counts(admin, [name, *sources])
        needed = max(settings.topics.partitions, at_least,
                     *(widths.get(s, 0) for s in sources))
        have = widths.get(name, 0)
        if not have:
            topic = NewTopic(name, needed, settings.topics.replication_factor,
                             topic_configs={"cleanup.policy": "compact"})
            with contextlib.suppress(TopicAlreadyExistsError):  # raced another worker: fine
                _check_created(settings.kafka, await admin.create_topics([topic]))
                log.info("created state topic %s (%d partitions)", name, needed)
        elif have < needed:
            with contextlib.suppress(InvalidPartitionsError):  # another worker grew it first
                await admin.create_partitions({name: NewPartitions(needed)})
            log.info("state topic %s grown from %d to %d partitions, as wide as its source",
                     name, have, needed)
        return max(have, needed)
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """Partitions per existing topic of ``names`` (missing topics are left out)."""
    existing = set(await admin.list_topics())
    asked = [n for n in dict.fromkeys(names) if n in existing]
    if not asked:
        return {}
    described = await admin.describe_topics(asked)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}


async def send_one(kafka: KafkaSettings, topic: str, key: bytes, value: bytes) -> None:
    """Write one record and wait until every in-sync replica has it (acks=all): for the
    durable-state topics a command writes once (silences, baselines)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options(kafka), acks="all")
    await start_client(producer, kafka)
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def headers_dict(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None) -> dict:
    """Kafka headers as a dict (last value wins), whatever shape the client gave us."""
    return dict(headers or ())
