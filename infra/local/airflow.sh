#!/usr/bin/env bash
# The `airflow` CLI with the local stack's environment (AIRFLOW_HOME under FRESHREC_HOME, the repo's
# DAGs folder, the same database), e.g.
#   bash infra/local/airflow.sh backfill create --dag-id features_daily \
#       --from-date 2026-11-01 --to-date 2026-11-03 --reprocess-behavior completed
# The stack keeps its metadata in SQLite, shared with the running scheduler: a write that collides
# with the scheduler's fails with "database is locked" and is rolled back. Commands that are a single
# transaction (creating a backfill, triggering, pausing) are therefore retried a few times.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
airflow_env

case "${1:-} ${2:-}" in
  "backfill create" | "dags trigger" | "dags pause" | "dags unpause") attempts=4 ;;
  *) exec airflow "$@" ;;
esac

output="$(mktemp)"
trap 'rm -f "$output"' EXIT
for attempt in $(seq "$attempts"); do
  airflow "$@" 2>&1 | tee "$output"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ] || ! grep -q "database is locked" "$output"; then
    exit "$rc"
  fi
  [ "$attempt" -lt "$attempts" ] && echo "airflow.sh: the SQLite database was locked; retrying ($attempt/$attempts)" >&2 && sleep 5
done
exit "$rc"
