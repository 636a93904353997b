#!/usr/bin/env bash
# `make up`: the local FreshRec stack.
#   serving tier (freshrec serve, :8000)  <- models from the registry under FRESHREC_HOME; live user
#                                            tails in Redis (127.0.0.1:6379: one that answers, else ours)
#   Airflow 3 standalone (:8080)          <- api-server, scheduler, dag-processor, triggerer;
#                                            LocalExecutor on SQLite, DAGs from the repo's dags/
#   traffic simulator (on by default with the demo data: a canary needs traffic to reach its verdict)
# Seeds demo data when the lake is empty and bootstraps a first champion when the registry has none.
# Idempotent: services already running are left alone. On failure everything this run started is
# stopped again. Knobs: see _common.sh, plus
#   SIMULATE=0|1                    `freshrec simulate` off / on (default: on when serving runs on the demo
#                                   data this script seeded, whose ground truth the simulator clicks by)
#   FRESHREC_SIMULATE_RATE          simulator requests/s (default 100: at the first canary step, 5% of it
#                                   gives release.min_requests_per_step = 200 requests within a 60 s window)
#   FRESHREC_UP_SEED=0              do not seed demo data (bring your own under lake/raw/events)
#   FRESHREC_UP_SERVING=0           do not start the serving tier (and do not bootstrap a champion)
#   FRESHREC_UP_BOOTSTRAP=0         do not run the pipeline to bootstrap a champion
#   FRESHREC_UP_REDIS=0             no Redis: serving keeps live tails in its embedded store (SQLite
#                                   under FRESHREC_HOME); FRESHREC_ONLINE__STORE_URL set by the caller wins
#   FRESHREC_UP_UNPAUSE="a b"       DAG ids to unpause (default: the four FreshRec DAGs)
#   FRESHREC_DEMO_DAYS=14           days of synthetic demo data, ending yesterday
#   FRESHREC_DEMO_SYNTH_ARGS        size of the demo world (default: 1500 users, 600 items, 8000 events/day)
#   FRESHREC_UP_TIMEOUT_S=900       how long to wait for each service to answer
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
airflow_env

SIMULATE="${SIMULATE:-auto}"
UP_SEED="${FRESHREC_UP_SEED:-1}"
UP_SERVING="${FRESHREC_UP_SERVING:-1}"
UP_BOOTSTRAP="${FRESHREC_UP_BOOTSTRAP:-$UP_SERVING}"
UP_REDIS="${FRESHREC_UP_REDIS:-$UP_SERVING}"
read -r -a UNPAUSE <<<"${FRESHREC_UP_UNPAUSE-${EXPECTED_DAGS[*]}}"
DEMO_DAYS="${FRESHREC_DEMO_DAYS:-14}"
# Big enough for the models to learn something, small enough to bootstrap in minutes on a laptop.
read -r -a DEMO_SYNTH_ARGS <<<"${FRESHREC_DEMO_SYNTH_ARGS:---users 1500 --items 600 --events-per-day 8000}"
TIMEOUT="${FRESHREC_UP_TIMEOUT_S:-900}"
# Where `freshrec simulate` looks for the ground truth by default.
TRUTH="$FRESHREC_HOME/truth.npz"

STARTED=()
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "make up failed (exit $rc); logs: $LOG_DIR" >&2
    for name in "${STARTED[@]}"; do
      echo "--- last lines of $LOG_DIR/$name.log" >&2
      tail -n 25 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
      stop_service "$name" 20 >&2
    done
  fi
}
trap on_exit EXIT

step() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

need_cli() {
  freshrec "$@" --help >/dev/null 2>&1 || die "\`freshrec $*\` is not available (is that plane installed?)"
}

# A port we are about to use must be free, unless our own service already holds it.
claim_port() {
  local port="$1" service="$2"
  if service_running "$service"; then return 0; fi
  if port_listening "$port"; then
    die "port $port is taken by another process: $(ss -Hltnp "sport = :$port" | head -n1)"
  fi
}

start() {
  local name="$1"
  shift
  if service_running "$name"; then
    echo "    $name already running (pid $(service_pid "$name"))"
    return 0
  fi
  start_service "$name" "$LOG_DIR/$name.log" "$@"
  STARTED+=("$name")
  echo "    $name started (pid $(service_pid "$name")), log $LOG_DIR/$name.log"
}

seed_demo_data() {
  if [ -n "$(python -c 'from freshrec.core.layout import Layout; from freshrec.core.settings import get_settings; print(*Layout(get_settings().home).raw_days())')" ]; then
    echo "    lake already has raw events; not seeding"
    return 0
  fi
  need_cli data synth
  local start_day
  # Whole days ending yesterday: today is not over, and events later than "now" would be quarantined.
  start_day="$(date -u -d "$DEMO_DAYS days ago" +%F)"
  freshrec data synth --out "$FRESHREC_HOME/lake/raw/events" --start "$start_day" --days "$DEMO_DAYS" \
    --seed 7 --truth "$TRUTH" "${DEMO_SYNTH_ARGS[@]}" --no-progress 2>&1 | tee -a "$LOG_DIR/bootstrap.log"
}

# Points serving (and everything else this stack starts) at the online store: the caller's URL, a Redis
# already answering on REDIS_PORT (shared, under this home's namespace), or a redis-server of our own
# with its data and AOF under FRESHREC_HOME (appendfsync everysec: live tails survive its restart).
online_store() {
  if [ -n "${FRESHREC_ONLINE__STORE_URL:-}" ]; then
    echo "    online store $FRESHREC_ONLINE__STORE_URL (from the environment)"
    return 0
  fi
  if [ "$UP_REDIS" != 1 ]; then
    echo "    online store: embedded (SQLite under $FRESHREC_HOME)"
    return 0
  fi
  if service_running redis; then
    echo "    redis already running (pid $(service_pid redis))"
  elif redis_answers "$REDIS_PORT"; then
    echo "    a Redis already answers on 127.0.0.1:$REDIS_PORT: using it"
  elif port_listening "$REDIS_PORT"; then
    die "port $REDIS_PORT is taken by something that is not Redis; set FRESHREC_REDIS_PORT or FRESHREC_UP_REDIS=0"
  elif ! command -v redis-server >/dev/null; then
    echo "warning: redis-server is missing (make sysdeps installs it): serving uses its embedded store" >&2
    return 0
  else
    mkdir -p "$FRESHREC_HOME/redis"
    # set-proc-title no: Redis would otherwise rewrite the memory /proc/<pid>/environ shows, where
    # service_running looks for the marker that proves the PID is ours.
    start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$FRESHREC_HOME/redis" \
      --appendonly yes --appendfsync everysec --save "" --set-proc-title no
    local waited=0
    until redis_answers "$REDIS_PORT"; do
      service_running redis || die "redis-server exited (log $LOG_DIR/redis.log)"
      [ "$waited" -lt 60 ] || die "redis-server did not answer on 127.0.0.1:$REDIS_PORT within 30 s"
      sleep 0.5
      waited=$((waited + 1))
    done
  fi
  export FRESHREC_ONLINE__STORE_URL="$REDIS_URL"
  echo "    online store $FRESHREC_ONLINE__STORE_URL, namespace $FRESHREC_ONLINE__NAMESPACE"
}

has_champion() {
  python - <<'PY'
import sys
from freshrec.core.registry import open_registry
from freshrec.core.settings import get_settings
sys.exit(0 if open_registry(get_settings()).serving_state().champion is not None else 1)
PY
}

bootstrap_champion() {
  python -c 'import freshrec.core.registry' 2>/dev/null || die "the registry (freshrec.core.registry) is not available"
  if has_champion; then
    echo "    registry has a champion"
    return 0
  fi
  need_cli pipeline run
  echo "    no champion yet: running the pipeline once (features -> retrain -> release, a few minutes)"
  echo "    details: $LOG_DIR/bootstrap.log"
  freshrec pipeline run --log "$LOG_DIR/bootstrap.log"
  has_champion || die "the bootstrap pipeline finished without a champion (see $LOG_DIR/bootstrap.log)"
}

# Wait until the DAG processor has parsed the expected DAGs, report import errors, unpause.
unpause_dags() {
  [ "${#UNPAUSE[@]}" -gt 0 ] || return 0
  local token start missing
  token="$(airflow_token)" || die "could not get a token from $AIRFLOW_URL/auth/token"
  start=$(date +%s)
  while :; do
    missing="$(curl -fsS --retry 3 --retry-delay 3 -H "Authorization: Bearer $token" "$AIRFLOW_URL/api/v2/dags?limit=100" |
      python -c 'import json, sys
present = {d["dag_id"] for d in json.load(sys.stdin)["dags"]}
print(" ".join(d for d in sys.argv[1:] if d not in present))' "${UNPAUSE[@]}")"
    [ -z "$missing" ] && break
    if [ $(( $(date +%s) - start )) -ge 300 ]; then
      echo "warning: DAGs not parsed after 300s: $missing" >&2
      break
    fi
    sleep 5
  done
  curl -fsS --retry 3 --retry-delay 3 -H "Authorization: Bearer $token" "$AIRFLOW_URL/api/v2/importErrors" | python -c '
import json, sys
errors = json.load(sys.stdin)["import_errors"]
for e in errors:
    print("warning: DAG import error in", e["filename"], file=sys.stderr)
    print(e["stack_trace"], file=sys.stderr)'
  for dag_id in "${UNPAUSE[@]}"; do
    case " $missing " in *" $dag_id "*) continue ;; esac
    curl -fsS --retry 5 --retry-delay 3 -o /dev/null -X PATCH -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      "$AIRFLOW_URL/api/v2/dags/$dag_id" -d '{"is_paused": false}' || die "could not unpause $dag_id"
    echo "    unpaused $dag_id"
  done
}

step "FreshRec home: $FRESHREC_HOME"
if [ "$UP_SERVING" = 1 ]; then claim_port "$SERVING_PORT" serving; fi
claim_port "$AIRFLOW_PORT" airflow

if [ "$UP_SEED" = 1 ]; then
  step "demo data"
  seed_demo_data
fi

if [ "$UP_SERVING" = 1 ]; then
  step "online store"
  online_store
  step "serving tier on $SERVING_URL"
  need_cli serve
  start serving freshrec serve --host "$SERVING_HOST" --port "$SERVING_PORT"
fi

if [ "$UP_BOOTSTRAP" = 1 ]; then
  step "first champion"
  # Runs before Airflow starts: the in-process pipeline and the scheduler share one SQLite file.
  bootstrap_champion
  freshrec export edge >/dev/null || echo "warning: the champion's edge bundle was not exported (freshrec export edge)" >&2
fi

step "Airflow (standalone) on $AIRFLOW_URL"
write_airflow_password
if ! service_running airflow; then migrate_airflow_db; fi
start airflow airflow standalone

step "waiting for services (up to ${TIMEOUT}s each)"
wait_http "$AIRFLOW_URL/api/v2/monitor/health" "$TIMEOUT" airflow
echo "    Airflow answers"
if [ "$UP_SERVING" = 1 ]; then
  wait_http "$SERVING_URL/readyz" "$TIMEOUT" serving
  echo "    serving is ready"
fi

step "DAGs"
unpause_dags

if [ "$SIMULATE" = auto ]; then
  SIMULATE=0
  if [ "$UP_SERVING" = 1 ] && [ -f "$TRUTH" ]; then SIMULATE=1; fi
fi
if [ "$SIMULATE" = 1 ]; then
  step "traffic simulator"
  need_cli simulate
  # Open-loop traffic with ground-truth clicks for a day (restart with make up).
  if [ ! -f "$TRUTH" ]; then
    echo "warning: no ground truth at $TRUTH (only a lake seeded by make up has one); not simulating" >&2
  else
    start simulator freshrec simulate --rate "${FRESHREC_SIMULATE_RATE:-100}" --duration 86400 --truth "$TRUTH" --url "$SERVING_URL"
  fi
fi

trap - EXIT
cat <<EOF

FreshRec is up.
  Airflow UI     $AIRFLOW_URL   (login: $AIRFLOW_USER / $AIRFLOW_PASSWORD, local development only)
  Airflow API    $AIRFLOW_URL/api/v2   (token: POST $AIRFLOW_URL/auth/token)
EOF
if [ "$UP_SERVING" = 1 ]; then
  cat <<EOF
  Serving        $SERVING_URL   (OpenAPI $SERVING_URL/docs, metrics $SERVING_URL/metrics)
  Canary         $SERVING_URL/canary   (weight, checks, verdict so far; JSON at /v1/canary)
  Edge demo      $SERVING_URL/edge/   (the champion scored in the browser; manifest at /v1/edge/manifest)
  Online store   ${FRESHREC_ONLINE__STORE_URL:-embedded (SQLite under $FRESHREC_HOME)}
EOF
fi
cat <<EOF
  Airflow CLI    bash infra/local/airflow.sh <command>   (the stack's AIRFLOW_HOME and settings)
  Logs           $LOG_DIR$( [ "$SIMULATE" = 1 ] && [ -f "$TRUTH" ] && printf '   (simulator req/s and CTR every 10 s: simulator.log)')
  Stop           make down        Status: make status
EOF
