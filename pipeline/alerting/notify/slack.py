"""A Slack-compatible incoming webhook: ``text`` (the fallback every compatible receiver —
Slack, Mattermost, Rocket.Chat — shows) and Block Kit ``blocks`` for Slack."""

from __future__ import annotations

from typing import Any

from pipeline.alerting.grouping import AlertGroup
from pipeline.alerting.notify.base import Notifier, rfc3339
from pipeline.alerting.templates import format_value
from schemas.alert import AlertEvent

__all__ = ["SlackWebhook"]

_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
         "info": ":large_blue_circle:"}
_SECTION_LIMIT = 3000  # characters of a section's text, Slack's limit
_LINK_KEYS = ("runbook_url", "runbook", "dashboard_url")


def _escape(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhook(Notifier):
    """Slack message for a group: a header line, one section per alert (summary, value,
    labels, runbook link, contact, escalation), at most ``max_alerts`` of them.

    >>> from pipeline.alerting.grouping import group
    >>> e = AlertEvent(fingerprint="0123456789abcdef", rule="HighP99Latency",
    ...                state="firing", severity="critical",
    ...                labels={"alertname": "HighP99Latency", "model": "m"},
    ...                annotations={"summary": "p99 is 2500 ms"}, value=2500.0,
    ...                window_start=0.0, window_end=60.0, starts_at=60.0)
    >>> body = SlackWebhook("https://hooks.slack.com/x").body(group([e], ["alertname"])[0])
    >>> body["text"]
    '[FIRING:1] HighP99Latency'
    >>> body["blocks"][1]["text"]["text"].splitlines()[0]
    ':red_circle: *HighP99Latency* (critical) p99 is 2500 ms'
    """

    kind = "slack"

    def __init__(self, url: str, *, receiver: str = "slack", channel: str | None = None,
                 username: str | None = None, max_alerts: int = 20) -> None:
        super().__init__(url, receiver=receiver)
        self.channel = channel
        self.username = username
        self.max_alerts = max_alerts

    def title(self, group: AlertGroup) -> str:
        firing = sum(1 for a in group.alerts if a.state == "firing")
        count = firing if group.status == "firing" else len(group.alerts)
        names = " ".join(f"{v}" for _, v in sorted(group.labels.items())) or "alerts"
        return f"[{group.status.upper()}:{count}] {names}"

    def _section(self, e: AlertEvent) -> dict[str, Any]:
        icon = ":white_check_mark:" if e.state == "resolved" else _ICON.get(e.severity, "")
        summary = e.annotations.get("summary", "")
        lines = [f"{icon} *{_escape(e.rule)}* ({e.severity}) {_escape(summary)}".rstrip()]
        if e.value is not None:
            threshold = f" (threshold {format_value(e.threshold)})" if e.threshold is not None \
                else ""
            lines.append(f"value: {format_value(e.value)}{threshold}")
        if desc := e.annotations.get("description"):
            lines.append(_escape(desc))
        labels = ", ".join(f"{k}={v}" for k, v in sorted(e.labels.items())
                           if k not in ("alertname", "severity"))
        if labels:
            lines.append(f"labels: `{_escape(labels)}`")
        for key in _LINK_KEYS:
            if url := e.annotations.get(key):
                lines.append(f"<{url}|runbook>" if key.startswith("runbook") else
                             f"<{url}|dashboard>")
        for key in ("resolution", "contact", "escalation"):
            if text := e.annotations.get(key):
                lines.append(f"{key}: {_escape(text)}")
        when = f"since {rfc3339(e.starts_at)}" if e.state == "firing" else \
            f"resolved {rfc3339(e.ends_at)}"
        lines.append(f"_{when}_")
        text = "\n".join(lines)
        if len(text) > _SECTION_LIMIT:
            text = text[: _SECTION_LIMIT - 1] + "…"
        return {"type": "section", "text": {"type": "mrkdwn", "text": text}}

    def body(self, group: AlertGroup) -> dict[str, Any]:
        title = self.title(group)
        shown = group.alerts[: self.max_alerts] if self.max_alerts > 0 else group.alerts
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            *(self._section(e) for e in shown),
        ]
        if len(shown) < len(group.alerts):
            more = len(group.alerts) - len(shown)
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"… and {more} more"}]})
        body: dict[str, Any] = {"text": title, "blocks": blocks}
        if self.channel:
            body["channel"] = self.channel
        if self.username:
            body["username"] = self.username
        return body
