"""Freshness SLO: how old the serving champion is and how old the newest published features are."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Freshness:
    model_age_h: float | None
    features_age_h: float | None
    max_model_age_h: float
    max_features_age_h: float

    @property
    def model_stale(self) -> bool:
        # No champion at all is as stale as it gets: a model must be trained.
        return self.model_age_h is None or self.model_age_h > self.max_model_age_h

    @property
    def features_stale(self) -> bool:
        return self.features_age_h is None or self.features_age_h > self.max_features_age_h


def hours_between(earlier: dt.datetime, later: dt.datetime) -> float:
    if earlier.tzinfo is None:
        earlier = earlier.replace(tzinfo=dt.UTC)
    return (later - earlier).total_seconds() / 3600.0


def features_age_h(feature_days: Sequence[dt.date], now: dt.datetime) -> float | None:
    """A partition ds=D holds features as of the end of D, so its age counts from D+1 00:00 UTC."""
    if not feature_days:
        return None
    newest = max(feature_days)
    as_of = dt.datetime.combine(newest + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return max(hours_between(as_of, now), 0.0)


def assess_freshness(model_trained_at: dt.datetime | None, feature_days: Sequence[dt.date], now: dt.datetime,
                     *, max_model_age_h: float, max_features_age_h: float) -> Freshness:
    model_age = None if model_trained_at is None else max(hours_between(model_trained_at, now), 0.0)
    return Freshness(model_age, features_age_h(feature_days, now), max_model_age_h, max_features_age_h)
