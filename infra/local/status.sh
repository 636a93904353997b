#!/usr/bin/env bash
# `make status`: which stack processes run, whether they answer, and where their logs are.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

probe() {
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null)"
  echo "${code:-000}"
}

printf '%-10s %-8s %-8s %-45s %s\n' SERVICE STATE PID CHECK LOG
for name in airflow serving simulator redis; do
  state=stopped pid=- check=-
  if service_running "$name"; then
    state=running pid="$(service_pid "$name")"
  fi
  case "$name" in
    airflow) check="$AIRFLOW_URL/api/v2/monitor/health -> $(probe "$AIRFLOW_URL/api/v2/monitor/health")" ;;
    serving) check="$SERVING_URL/readyz -> $(probe "$SERVING_URL/readyz")" ;;
    redis)
      if redis_answers "$REDIS_PORT"; then
        check="$REDIS_URL PING -> PONG"
        # Answering but not ours: a shared Redis the stack uses (make down leaves it alone).
        [ "$state" = running ] || state=external
      else
        check="$REDIS_URL PING -> no answer"
      fi ;;
  esac
  printf '%-10s %-8s %-8s %-45s %s\n' "$name" "$state" "$pid" "$check" "$LOG_DIR/$name.log"
done
echo "FRESHREC_HOME=$FRESHREC_HOME  FRESHREC_ONLINE__NAMESPACE=$FRESHREC_ONLINE__NAMESPACE"
