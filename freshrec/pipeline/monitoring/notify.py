"""Pluggable alert notifiers: the log always, a JSON webhook when configured."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

log = logging.getLogger("freshrec.alerts")


@dataclass(frozen=True)
class Alert:
    severity: str          # "page" | "ticket" | "info"
    summary: str
    source: str            # which check raised it (e.g. "availability", "freshness", "canary")
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Notifier(Protocol):
    def notify(self, alert: Alert) -> None: ...


class LogNotifier:
    """Alerts as log records: WARNING for tickets, ERROR for pages."""

    def notify(self, alert: Alert) -> None:
        level = {"page": logging.ERROR, "ticket": logging.WARNING}.get(alert.severity, logging.INFO)
        log.log(level, "[%s] %s: %s %s", alert.severity.upper(), alert.source, alert.summary, alert.details)


class WebhookNotifier:
    """POSTs the alert as JSON (Slack-compatible `text` plus the structured alert)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def notify(self, alert: Alert) -> None:
        body = {"text": f"[{alert.severity.upper()}] {alert.source}: {alert.summary}", "alert": alert.to_dict()}
        try:
            httpx.post(self.url, json=body, timeout=self.timeout_s).raise_for_status()
        except httpx.HTTPError as exc:
            # A broken webhook must not hide the alert: it still reaches the log.
            log.error("webhook %s failed (%s); alert was: %s", self.url, exc, alert.summary)


class FanOutNotifier:
    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = list(notifiers)

    def notify(self, alert: Alert) -> None:
        for notifier in self.notifiers:
            notifier.notify(alert)


def build_notifier(webhook_url: str | None) -> Notifier:
    notifiers: list[Notifier] = [LogNotifier()]
    if webhook_url:
        notifiers.append(WebhookNotifier(webhook_url))
    return FanOutNotifier(notifiers)
