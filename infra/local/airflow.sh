#!/usr/bin/env bash
# The `airflow` CLI with the local stack's environment (AIRFLOW_HOME under FRESHREC_HOME, the repo's
# DAGs folder, the same database), e.g.
#   bash infra/local/airflow.sh backfill create --dag-id features_daily \
#       --from-date 2026-11-01 --to-date 2026-11-03 --reprocess-behavior completed
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
airflow_env
exec airflow "$@"
