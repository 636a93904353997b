"""Assets shared between DAGs: the producer and its consumers import the same object."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by features_daily each time it publishes feature partitions; schedules `retrain`.
FEATURES = Asset("freshrec://features")
