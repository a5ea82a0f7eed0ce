"""The local broker's secured mode: SASL_SSL with SCRAM-SHA-512, TLS from a private CA,
the standard authorizer and one principal per role.

Everything that decides something is a plain function of its inputs, tested without a
broker: the broker's extra properties (:func:`broker_properties`), the SCRAM users given
to the storage format (:func:`scram_arguments`), the ACLs of each role
(:func:`role_acls`) and the client settings of a user (:func:`client_settings`,
:func:`env_file`). :func:`create_acls` sends the ACLs with aiokafka's protocol classes (its
admin client has no ACL call). ``LocalKafka`` (``pipeline.dev.kafka``) puts it together.

Roles:

======== ============================================================================
admin    a super user: the broker itself (inter-broker and controller listeners) and
         ``dev up`` (topics, ACLs)
worker   ``inferwatch``: everything the workers and the operator commands read and write
producer ``producer``: writes inference events and feedback (the SDK), nothing else
======== ============================================================================

Passwords are random, written once to ``<home>/kafka/secure/users.json`` (mode 0600) and
never printed; ``<user>.env`` beside it holds a user's ``INFERWATCH_KAFKA__*`` settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import msgspec
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request

from pipeline.config import KafkaSettings, Settings

__all__ = ["ADMIN", "PRODUCER", "ROLES", "WORKER", "Acl", "broker_properties",
           "client_settings", "create_acls", "env_file", "load_users", "role_acls",
           "scram_arguments"]

MECHANISM = "SCRAM-SHA-512"
ADMIN, WORKER, PRODUCER = "admin", "inferwatch", "producer"
ROLES = (ADMIN, WORKER, PRODUCER)

# Kafka's enum codes (org.apache.kafka.common.resource / acl)
TOPIC, GROUP, CLUSTER = 2, 3, 4
LITERAL, PREFIXED = 3, 4
READ, WRITE, CREATE, ALTER, DESCRIBE = 3, 4, 5, 7, 8
DESCRIBE_CONFIGS, ALTER_CONFIGS = 10, 11
_ALLOW = 3
_OPERATIONS = {READ: "Read", WRITE: "Write", CREATE: "Create", ALTER: "Alter",
               DESCRIBE: "Describe", DESCRIBE_CONFIGS: "DescribeConfigs",
               ALTER_CONFIGS: "AlterConfigs"}
_RESOURCES = {TOPIC: "topic", GROUP: "group", CLUSTER: "cluster"}


class Acl(NamedTuple):
    """One ALLOW rule: ``principal`` may ``operation`` on a resource, from any host."""

    principal: str  # "User:inferwatch"
    operation: int
    resource: int  # TOPIC, GROUP, CLUSTER
    name: str
    pattern: int = LITERAL  # or PREFIXED: every name starting with ``name``

    def __str__(self) -> str:
        kind = "prefixed " if self.pattern == PREFIXED else ""
        return (f"{self.principal} {_OPERATIONS[self.operation]} on {kind}"
                f"{_RESOURCES[self.resource]} {self.name}")


def role_acls(settings: Settings, worker: str = WORKER, producer: str = PRODUCER) -> list[Acl]:
    """The ACLs of the worker and producer roles for these settings' topics and app id.

    The worker (``worker`` user) reads, writes, describes and creates every configured
    topic (the commands create missing ones), and owns everything named after its app id:
    the state topics ``<app_id>-<stage>-state`` (also grown: Alter) and the consumer groups
    ``<app_id>-<stage>`` and ``<app_id>-sink``. It also reads and sets the dead-letter
    topic's configs: every start brings its retention to ``privacy.dlq_retention_days``.
    The producer (``producer`` user) may only write to, and describe, the events and
    feedback topics: what the SDK sends.

    >>> acls = role_acls(Settings())
    >>> [str(a) for a in acls if a.principal == "User:producer"]
    ['User:producer Write on topic inferwatch.events', 'User:producer Describe on topic \
inferwatch.events', 'User:producer Write on topic inferwatch.feedback', 'User:producer \
Describe on topic inferwatch.feedback']
    >>> sorted({str(a) for a in acls if a.resource == GROUP})
    ['User:inferwatch Describe on prefixed group inferwatch-', 'User:inferwatch Read on \
prefixed group inferwatch-']
    """
    topics = settings.topics
    names = list(topics.all())
    if settings.otlp.enabled:
        names += sorted(settings.otlp.topics)
    own = f"{settings.worker.app_id}-"
    w, p = f"User:{worker}", f"User:{producer}"
    acls = [Acl(w, op, TOPIC, name) for name in names for op in (READ, WRITE, DESCRIBE, CREATE)]
    acls += [Acl(w, op, TOPIC, own, PREFIXED) for op in (READ, WRITE, DESCRIBE, CREATE, ALTER)]
    acls += [Acl(w, op, GROUP, own, PREFIXED) for op in (READ, DESCRIBE)]
    acls += [Acl(w, op, TOPIC, topics.dlq) for op in (DESCRIBE_CONFIGS, ALTER_CONFIGS)]
    acls += [Acl(p, op, TOPIC, name) for name in (topics.events, topics.feedback)
             for op in (WRITE, DESCRIBE)]
    return acls


def broker_properties(*, port: int, controller_port: int, cafile: Path, keystore: Path,
                      admin_password: str, plaintext_port: int | None = None) -> dict[str, str]:
    """The server.properties entries of the secured broker (they replace the plaintext
    listener's): a SASL_SSL listener with SCRAM-SHA-512 on ``port`` for clients and for
    the broker itself, a SASL_PLAINTEXT controller listener with PLAIN on 127.0.0.1
    (KRaft cannot use SCRAM there: its credentials live in the metadata the controller
    serves), the standard authorizer with ``admin`` as the only super user, and no topic
    created by a mere read. ``plaintext_port`` adds an unauthenticated PLAINTEXT listener
    (benchmarks compare the two on one broker); its principal is ``User:ANONYMOUS``.

    >>> props = broker_properties(port=9092, controller_port=9093, cafile=Path("ca.pem"),
    ...                           keystore=Path("broker.pem"), admin_password="pw")
    >>> props["listeners"]
    'SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093'
    >>> props["super.users"], props["sasl.enabled.mechanisms"]
    ('User:admin', 'SCRAM-SHA-512')
    """
    listeners = [f"SASL_SSL://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
    advertised = [f"SASL_SSL://127.0.0.1:{port}"]
    protocols = ["CONTROLLER:SASL_PLAINTEXT", "SASL_SSL:SASL_SSL"]
    if plaintext_port is not None:
        listeners.append(f"PLAINTEXT://127.0.0.1:{plaintext_port}")
        advertised.append(f"PLAINTEXT://127.0.0.1:{plaintext_port}")
        protocols.append("PLAINTEXT:PLAINTEXT")
    scram = _jaas("org.apache.kafka.common.security.scram.ScramLoginModule", ADMIN,
                  admin_password)
    plain = _jaas("org.apache.kafka.common.security.plain.PlainLoginModule", ADMIN,
                  admin_password, **{f"user_{ADMIN}": admin_password})
    return {
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(cafile),
        "ssl.client.auth": "none",
        "ssl.endpoint.identification.algorithm": "https",  # the broker checks itself too
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
        "auto.create.topics.enable": "false",
    }


def _jaas(module: str, username: str, password: str, **extra: str) -> str:
    options = {"username": username, "password": password, **extra}
    return f"{module} required " + " ".join(f'{k}="{v}"' for k, v in options.items()) + ";"


def scram_arguments(users: Mapping[str, str]) -> list[str]:
    """``kafka-storage format`` arguments creating the SCRAM-SHA-512 credentials of
    ``users`` (name → password) in the new cluster's metadata. They hold passwords: pass
    them in a 0600 argument file (``java @file``), never on a command line.

    >>> scram_arguments({"admin": "s3cret"})
    ['--add-scram', 'SCRAM-SHA-512=[name=admin,password=s3cret]']
    """
    out: list[str] = []
    for name, password in users.items():
        if not _safe(name) or not _safe(password):
            raise ValueError(f"SCRAM user {name!r}: names and passwords are limited to "
                             "letters, digits, '-' and '_' here")
        out += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return out


def _safe(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_" for c in text)


def load_users(path: Path, names: Iterable[str] = ROLES) -> dict[str, str]:
    """The users' passwords from ``path`` (JSON, name → password); missing users get a
    random password and the file is (re)written with mode 0600. Passwords never leave
    this file except into the broker's own configuration and the users' env files."""
    users: dict[str, str] = {}
    if path.exists():
        users = json.loads(path.read_text())
    missing = [n for n in names if n not in users]
    if missing:
        users.update({n: secrets.token_urlsafe(24) for n in missing})
        write_private(path, json.dumps(users, indent=2) + "\n")
    return users


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` with mode 0600 from the start
    (no window where it is readable by others), atomically: a reader sees the old file
    or the new one, never a part.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "key.pem"
    >>> write_private(path, b"key"); write_private(path, "pässword")
    >>> path.read_bytes(), oct(path.stat().st_mode & 0o777)
    (b'p\\xc3\\xa4ssword', '0o600')
    >>> [p.name for p in path.parent.iterdir()]
    ['key.pem']
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)


def client_settings(kafka: KafkaSettings, bootstrap: str, user: str, password: str,
                    cafile: Path) -> KafkaSettings:
    """``kafka`` pointed at the secured broker as ``user``.

    >>> s = client_settings(KafkaSettings(), "127.0.0.1:9092", "producer", "pw", Path("/ca"))
    >>> s.security_protocol, s.sasl_mechanism, s.sasl_username, s.ssl_cafile
    ('SASL_SSL', 'SCRAM-SHA-512', 'producer', '/ca')
    """
    return msgspec.structs.replace(
        kafka, bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
        sasl_mechanism=MECHANISM, sasl_username=user, sasl_password=password,
        ssl_cafile=str(cafile), ssl_certfile=None, ssl_keyfile=None,
    )


def env_file(bootstrap: str, user: str, password: str, cafile: Path) -> str:
    """The ``INFERWATCH_*`` variables connecting as ``user`` (``set -a; . FILE; set +a``).

    >>> print(env_file("127.0.0.1:9092", "producer", "pw", Path("/ca.pem")), end="")
    INFERWATCH_KAFKA=127.0.0.1:9092
    INFERWATCH_KAFKA__SECURITY_PROTOCOL=SASL_SSL
    INFERWATCH_KAFKA__SASL_MECHANISM=SCRAM-SHA-512
    INFERWATCH_KAFKA__SASL_USERNAME=producer
    INFERWATCH_KAFKA__SASL_PASSWORD=pw
    INFERWATCH_KAFKA__SSL_CAFILE=/ca.pem
    """
    return "".join(f"{k}={v}\n" for k, v in (
        ("INFERWATCH_KAFKA", bootstrap),
        ("INFERWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
        ("INFERWATCH_KAFKA__SASL_MECHANISM", MECHANISM),
        ("INFERWATCH_KAFKA__SASL_USERNAME", user),
        ("INFERWATCH_KAFKA__SASL_PASSWORD", password),
        ("INFERWATCH_KAFKA__SSL_CAFILE", str(cafile)),
    ))


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """CreateAcls v1 with any number of creations (aiokafka's own request takes one)."""

    API_KEY = 30

    def __init__(self, acls: Iterable[Acl]) -> None:
        self.acls = list(acls)

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class([(a.resource, a.name, a.pattern, a.principal, "*",
                                      a.operation, _ALLOW) for a in self.acls])


async def create_acls(kafka: KafkaSettings, acls: Iterable[Acl], wait: float = 15.0) -> int:
    """Create ``acls`` on the cluster as the (super) user of ``kafka``; return how many.
    Creating an ACL that exists already is a no-op for Kafka, so this is idempotent.

    The controller accepts ACLs before the broker's authorizer applies them (they travel
    through the metadata log): this returns once the broker lists them all, so a client
    started next is already allowed (up to ``wait`` seconds, then RuntimeError)."""
    from aiokafka.client import AIOKafkaClient

    from pipeline.runtime.kafka import client_options

    acls = list(acls)
    if not acls:
        return 0
    client = AIOKafkaClient(**client_options(kafka))
    await client.bootstrap()
    try:
        node = client.get_random_node()
        response = await client.send(node, _CreateAcls(acls))
        failed = [(acl, code, message) for acl, (code, message)
                  in zip(acls, response.creation_responses, strict=True) if code]
        if failed:
            acl, code, message = failed[0]
            raise RuntimeError(f"creating {len(failed)} ACL(s) failed, first {acl}: "
                               f"error {code} {message or ''}".rstrip())
        deadline = asyncio.get_running_loop().time() + wait
        while not set(acls) <= await _acls_in_force(client, node):
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the broker did not apply {len(acls)} new ACLs in {wait}s")
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    return len(acls)


async def _acls_in_force(client: object, node: int) -> set[Acl]:
    """Every ALLOW ACL the broker's authorizer holds (DescribeAcls, all filters ANY)."""
    any_ = 1
    response = await client.send(node, DescribeAclsRequest(  # type: ignore[attr-defined]
        any_, None, any_, None, None, any_, any_))
    if response.error_code:
        raise RuntimeError(f"describing ACLs failed: error {response.error_code} "
                           f"{response.error_message or ''}".rstrip())
    return {Acl(principal, operation, resource, name, pattern)
            for resource, name, pattern, entries in response.resources
            for principal, _host, operation, permission in entries if permission == _ALLOW}
