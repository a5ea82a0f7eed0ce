"""Notifiers: Alertmanager's API v2 (alerts posted to an Alertmanager), webhook bodies
(Alertmanager's webhook format, Slack) and a resilient async sender."""

from pipeline.alerting.notify.alertmanager import AlertmanagerWebhook
from pipeline.alerting.notify.alertmanager_api import AlertmanagerAPI
from pipeline.alerting.notify.base import Notifier, rfc3339
from pipeline.alerting.notify.slack import SlackWebhook

__all__ = ["AlertmanagerAPI", "AlertmanagerWebhook", "Notifier", "SlackWebhook", "rfc3339"]
