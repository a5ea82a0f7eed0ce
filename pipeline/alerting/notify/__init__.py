"""Notifiers: webhook bodies (Alertmanager format, Slack) and a resilient async sender."""

from pipeline.alerting.notify.alertmanager import AlertmanagerWebhook
from pipeline.alerting.notify.base import Notifier, rfc3339
from pipeline.alerting.notify.slack import SlackWebhook

__all__ = ["AlertmanagerWebhook", "Notifier", "SlackWebhook", "rfc3339"]
