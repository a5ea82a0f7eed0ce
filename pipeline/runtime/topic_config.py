"""Topic configs the pipeline keeps in force: the dead-letter topic's retention.

The DLQ keeps what could not be ingested as it came, raw: a dead letter holds the original
bytes, so identities and attributes the ingest rules would have dropped (``privacy``) are in
it. How long it keeps them is therefore a privacy setting, ``privacy.dlq_retention_days``:
the topic is created with that ``retention.ms`` (:func:`dlq_topic_configs`) and brought to it
on every start when it differs (:func:`apply_dlq_retention`), so changing the setting and
restarting a worker is enough.

Kafka's ``AlterConfigs`` replaces *all* of a topic's own settings with the ones sent, so
:func:`apply_dlq_retention` sends back every override the topic already has (read with
``DescribeConfigs``) with ``retention.ms`` changed; :func:`retention_update` is that pure
step. A broker that refuses (no ``ALTER_CONFIGS`` / ``DESCRIBE_CONFIGS`` ACL on the topic:
the platform team owns topic configs) gets one warning saying what to set by hand, and the
worker starts anyway.

>>> from pipeline.config import PrivacySettings, Settings
>>> dlq_topic_configs(Settings(privacy=PrivacySettings(dlq_retention_days=3)))
{'retention.ms': '259200000'}
>>> retention_update({"cleanup.policy": "delete", "retention.ms": "604800000"},
...                  "604800000", "259200000")
{'cleanup.policy': 'delete', 'retention.ms': '259200000'}
>>> retention_update({}, "259200000", "259200000") is None  # already right
True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from pipeline.config import Settings

__all__ = ["apply_dlq_retention", "dlq_topic_configs", "retention_update", "topic_settings"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
RETENTION = "retention.ms"
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs v1+ config_source: set on the topic itself
_REFUSED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


def dlq_topic_configs(settings: Settings) -> dict[str, str]:
    """The configs to create the dead-letter topic with."""
    return {RETENTION: str(settings.privacy.dlq_retention_days * DAY_MS)}


def topic_settings(entries: Sequence[Sequence[Any]], version: int,
                   ) -> tuple[dict[str, str | None], str | None]:
    """From one resource's DescribeConfigs entries: the topic's own overrides (name →
    value; None for a sensitive value the broker does not show) and the effective
    ``retention.ms``. ``version`` is the response's API version (v0 has ``is_default``
    where later versions have ``config_source``).

    >>> entries = [("retention.ms", "604800000", False, 5, False, []),
    ...            ("cleanup.policy", "delete", False, 1, False, [])]
    >>> topic_settings(entries, 1)
    ({'cleanup.policy': 'delete'}, '604800000')
    """
    overrides: dict[str, str | None] = {}
    effective: str | None = None
    for entry in entries:
        name, value, _read_only, fourth = entry[0], entry[1], entry[2], entry[3]
        own = (not fourth) if version == 0 else fourth == _DYNAMIC_TOPIC_CONFIG
        if own:
            overrides[name] = value
        if name == RETENTION:
            effective = value
    return overrides, effective


def retention_update(overrides: Mapping[str, str | None], effective: str | None,
                     wanted: str) -> dict[str, str] | None:
    """Every override to send with ``AlterConfigs`` (it replaces them all) so that
    ``retention.ms`` becomes ``wanted``; None when it already is.

    A sensitive override (value hidden, None) cannot be sent back: ``ValueError``, rather
    than wiping it.
    """
    if effective == wanted:
        return None
    hidden = sorted(name for name, value in overrides.items() if value is None)
    if hidden:
        raise ValueError(f"the topic has sensitive settings ({', '.join(hidden)}) that "
                         "AlterConfigs would erase")
    return {**{k: v for k, v in overrides.items() if v is not None}, RETENTION: wanted}


async def apply_dlq_retention(admin: Any, settings: Settings) -> bool:
    """Bring the dead-letter topic's ``retention.ms`` to ``privacy.dlq_retention_days``;
    True if it was changed. ``admin`` is a started ``AIOKafkaAdminClient``.

    A missing topic is left alone (False); a refusal (ACLs) or a topic whose settings
    cannot be sent back is logged as a warning naming the value to set by hand (False).
    """
    topic = settings.topics.dlq
    wanted = dlq_topic_configs(settings)[RETENTION]
    days = settings.privacy.dlq_retention_days
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        (resource,) = response.resources
        error = for_code(resource[0]) if resource[0] else None
        if error is UnknownTopicOrPartitionError:
            log.debug("dead-letter topic %s does not exist yet: retention not applied", topic)
            return False
        if error is not None:
            raise error(resource[1] or topic)
        overrides, effective = topic_settings(resource[4], response.API_VERSION)
        update = retention_update(overrides, effective, wanted)
        if update is None:
            return False
        (altered,) = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=update)])
        for code, message, *_ in altered.resources:
            if code:
                raise for_code(code)(message or topic)
    except (*_REFUSED, ValueError) as exc:
        log.warning("could not set retention.ms=%s (privacy.dlq_retention_days=%d) on the "
                    "dead-letter topic %s: %s: %s; it keeps raw payloads, so set it there by "
                    "hand", wanted, days, topic, type(exc).__name__, exc)
        return False
    was = f"{int(effective) / DAY_MS:g} days" if effective and effective.isdigit() else effective
    log.info("dead-letter topic %s: retention.ms %s (%s) -> %s (%d days, "
             "privacy.dlq_retention_days)", topic, effective, was, wanted, days)
    return True
