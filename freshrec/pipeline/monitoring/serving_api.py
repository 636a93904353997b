"""HTTP access to the serving replicas (tasks reach serving over HTTP only, never by import)."""

from __future__ import annotations

from typing import Any

import httpx

from freshrec.core.errors import FreshRecError, Unauthorized
from freshrec.core.settings import Settings
from freshrec.pipeline.monitoring.promtext import Scrape, parse_scrape


class ServingUnavailable(FreshRecError):
    """A replica did not answer (or answered with an error) where the caller needs it."""

    http_status = 503
    exit_code = 9


def reported_generation(models: dict[str, Any]) -> int:
    """The registry generation a replica reports in GET /v1/models (-1 when it has none yet)."""
    for holder in (models, models.get("registry") or {}):
        if isinstance(holder, dict) and isinstance(holder.get("generation"), int):
            return int(holder["generation"])
    return -1


class ServingClient:
    """Scrapes, reads and administers every replica named by the settings."""

    def __init__(self, settings: Settings, *, timeout_s: float = 5.0) -> None:
        self.replicas = [url.rstrip("/") for url in settings.replicas]
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self._admin_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _get(self, url: str) -> httpx.Response:
        try:
            response = self._http.get(url)
            response.raise_for_status()
            return response
        except httpx.HTTPError as exc:
            raise ServingUnavailable(f"GET {url} failed: {exc}") from exc

    def metrics_text(self, replica: str) -> str:
        return self._get(f"{replica}/metrics").text

    def scrape_all(self) -> dict[str, Scrape]:
        """Every replica's counters now; a replica that does not answer is an error (no silent gaps)."""
        return {replica: parse_scrape(self.metrics_text(replica)) for replica in self.replicas}

    def models(self, replica: str) -> dict[str, Any]:
        return self._get(f"{replica}/v1/models").json()

    def admin(self, replica: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{replica}{path}"
        try:
            response = self._http.post(url, json=body or {}, headers=self._admin_headers)
        except httpx.HTTPError as exc:
            raise ServingUnavailable(f"POST {url} failed: {exc}") from exc
        if response.status_code == 401 or response.status_code == 403:
            raise Unauthorized(f"POST {url}: the admin token was refused (set FRESHREC_ADMIN_TOKEN)")
        if response.status_code >= 400:
            raise ServingUnavailable(f"POST {url} answered {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def reconcile_all(self) -> None:
        """Ask every replica to load the registry's desired state now instead of at its next poll."""
        for replica in self.replicas:
            self.admin(replica, "/admin/reconcile")
