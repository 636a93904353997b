#!/usr/bin/env bash
# `make down`: stops exactly the processes `make up` started (by their PID files / sessions) and
# checks that their ports are free afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

# A Redis counts only when `make up` started it (a PID file of ours); a shared one is left alone.
ports=("$AIRFLOW_PORT" "$SERVING_PORT")
if service_running redis; then ports+=("$REDIS_PORT"); fi

# Reverse start order: traffic first, then the serving tier, then Airflow (which may be mid-task),
# then the online store (TERM: Redis flushes its append-only file before it exits).
for name in simulator serving airflow redis; do
  stop_service "$name" 30
done

busy=()
for port in "${ports[@]}"; do
  for _ in $(seq 20); do port_listening "$port" || break; sleep 0.5; done
  if port_listening "$port"; then busy+=("$port"); fi
done
if [ "${#busy[@]}" -gt 0 ]; then
  for port in "${busy[@]}"; do
    echo "error: port $port is still in use by a process make up did not start:" >&2
    ss -Hltnp "sport = :$port" >&2 || true
  done
  exit 1
fi
echo "FreshRec stack stopped; ports ${ports[*]} are free."
