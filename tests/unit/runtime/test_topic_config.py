"""The DLQ retention's pure parts: the config it is created with, what AlterConfigs must be
sent (every override kept), and how a refusal is reported. The broker round trip is in
tests/integration/test_privacy.py."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import NotControllerError

from pipeline.config import PrivacySettings, Settings
from pipeline.runtime.topic_config import (
    DAY_MS,
    apply_dlq_retention,
    dlq_topic_configs,
    retention_update,
    topic_settings,
)

WEEK = str(7 * DAY_MS)


@pytest.mark.parametrize("days", [1, 7, 30, 365])
def test_the_dlq_is_created_with_the_settings_retention(days: int) -> None:
    settings = Settings(privacy=PrivacySettings(dlq_retention_days=days))
    assert dlq_topic_configs(settings) == {"retention.ms": str(days * 86_400 * 1000)}


def test_the_default_retention_is_seven_days() -> None:
    assert dlq_topic_configs(Settings()) == {"retention.ms": WEEK}


def test_topic_overrides_are_the_entries_set_on_the_topic_itself() -> None:
    entries = [  # (name, value, read_only, config_source, is_sensitive, synonyms)
        ("retention.ms", "86400000", False, 1, False, []),
        ("max.message.bytes", "2000000", False, 1, False, []),
        ("cleanup.policy", "delete", False, 5, False, []),  # the default
        ("segment.bytes", "1073741824", False, 4, False, []),  # the broker's static config
    ]
    assert topic_settings(entries, 2) == (
        {"retention.ms": "86400000", "max.message.bytes": "2000000"}, "86400000")
    v0 = [("retention.ms", WEEK, False, True, False),  # (…, is_default, is_sensitive)
          ("max.message.bytes", "2000000", False, False, False)]
    assert topic_settings(v0, 0) == ({"max.message.bytes": "2000000"}, WEEK)


def test_the_update_keeps_every_other_override_and_is_none_when_already_right() -> None:
    overrides = {"retention.ms": WEEK, "max.message.bytes": "2000000"}
    assert retention_update(overrides, WEEK, "86400000") == {
        "retention.ms": "86400000", "max.message.bytes": "2000000"}
    assert retention_update({}, WEEK, "86400000") == {"retention.ms": "86400000"}
    assert retention_update(overrides, WEEK, WEEK) is None


def test_a_hidden_sensitive_override_is_not_wiped() -> None:
    with pytest.raises(ValueError, match=r"sensitive settings \(secret\.thing\)"):
        retention_update({"secret.thing": None}, WEEK, "86400000")


# ------------------------------------------------------------------ how apply reports


@dataclass
class _Response:
    resources: list[Any]
    API_VERSION: int = 2


@dataclass
class _Admin:
    """Answers DescribeConfigs with ``describe`` and records AlterConfigs requests."""

    describe: list[Any]
    alter_error: int = 0
    altered: list[dict[str, str]] = field(default_factory=list)

    async def describe_configs(self, resources: list[Any]) -> list[_Response]:
        return [_Response(self.describe)]

    async def alter_configs(self, resources: list[Any]) -> list[_Response]:
        self.altered += [r.configs for r in resources]
        return [_Response([(self.alter_error, "denied" if self.alter_error else None, 2,
                            resources[0].name)])]


def _topic(entries: list[Any], error: int = 0) -> list[Any]:
    return [(error, None, 2, "inferwatch.events.dlq", entries)]


def _apply(admin: _Admin, days: int = 1) -> bool:
    return asyncio.run(apply_dlq_retention(
        admin, Settings(privacy=PrivacySettings(dlq_retention_days=days))))


def test_apply_sends_the_new_retention_with_the_topics_other_overrides(caplog) -> None:
    caplog.set_level(logging.INFO)
    admin = _Admin(_topic([("retention.ms", WEEK, False, 5, False, []),
                           ("max.message.bytes", "2000000", False, 1, False, [])]))
    assert _apply(admin, days=1)
    assert admin.altered == [{"max.message.bytes": "2000000", "retention.ms": str(DAY_MS)}]
    assert "retention.ms 604800000 (7 days) -> 86400000 (1 days" in caplog.text
    admin = _Admin(_topic([("retention.ms", str(DAY_MS), False, 1, False, [])]))
    assert not _apply(admin, days=1) and admin.altered == []  # already right


def test_a_missing_topic_is_left_alone_and_a_refusal_is_one_warning(caplog) -> None:
    assert not _apply(_Admin(_topic([], error=3)))  # UNKNOWN_TOPIC_OR_PARTITION
    assert caplog.records == [] or all(r.levelno < logging.WARNING for r in caplog.records)

    refused = _Admin(_topic([("retention.ms", WEEK, False, 5, False, [])]), alter_error=29)
    assert not _apply(refused)  # TOPIC_AUTHORIZATION_FAILED: the worker starts anyway
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "retention.ms=86400000" in warning.getMessage()
    assert "TopicAuthorizationFailedError" in warning.getMessage()
    assert "by hand" in warning.getMessage()


def test_other_broker_errors_are_raised() -> None:
    with pytest.raises(NotControllerError, match="broken"):
        _apply(_Admin([(41, "broken", 2, "inferwatch.events.dlq", [])]))  # NOT_CONTROLLER
