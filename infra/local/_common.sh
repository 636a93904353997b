# Shared by up.sh, down.sh, status.sh, demo.sh and airflow.sh: where things live, the Airflow
# environment of the local stack, and process bookkeeping. Source it; it defines no side effects
# beyond exported variables.
#
# Knobs (environment):
#   FRESHREC_HOME            state root (default <checkout>/.freshrec)
#   FRESHREC_AIRFLOW_HOST    API server bind address (default 127.0.0.1)
#   FRESHREC_AIRFLOW_PORT    API server / UI port (default 8080)
#   FRESHREC_SERVING__HOST   serving bind address (default 127.0.0.1)
#   FRESHREC_SERVING__PORT   serving port (default 8000)
#   FRESHREC_AIRFLOW_LOG_PORTS    worker and triggerer log server ports (default "8793 8794"; a
#                            second stack on one machine needs other ones)
#   FRESHREC_AIRFLOW_DB      Airflow metadata DB: auto (local Postgres when it answers, else
#                            SQLite), sqlite, or a SQLAlchemy URL; see airflow_db_url below
#   FRESHREC_AIRFLOW_PARALLELISM  task slots of the LocalExecutor (default 4: Spark and torch
#                            tasks each want a core or two, and a dev box has few)
#   FRESHREC_REDIS_PORT      the online store's Redis on 127.0.0.1 (default 6379)
#   FRESHREC_ONLINE__NAMESPACE    key prefix in that Redis (default: one per FRESHREC_HOME)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$REPO/.venv/bin:$PATH"
export FRESHREC_HOME="${FRESHREC_HOME:-$REPO/.freshrec}"
FRESHREC_HOME="$(mkdir -p "$FRESHREC_HOME" && cd "$FRESHREC_HOME" && pwd)"
export FRESHREC_HOME

AIRFLOW_BIND_HOST="${FRESHREC_AIRFLOW_HOST:-127.0.0.1}"
AIRFLOW_PORT="${FRESHREC_AIRFLOW_PORT:-8080}"
export FRESHREC_SERVING__HOST="${FRESHREC_SERVING__HOST:-127.0.0.1}"
export FRESHREC_SERVING__PORT="${FRESHREC_SERVING__PORT:-8000}"
SERVING_HOST="$FRESHREC_SERVING__HOST"
SERVING_PORT="$FRESHREC_SERVING__PORT"
# Tasks (release, slo_monitor) reach the serving tier through this URL.
export FRESHREC_SERVING_URL="${FRESHREC_SERVING_URL:-http://$SERVING_HOST:$SERVING_PORT}"
AIRFLOW_URL="http://127.0.0.1:$AIRFLOW_PORT"
SERVING_URL="$FRESHREC_SERVING_URL"

# The serving tier's online store (live user tails): a Redis on 127.0.0.1, either one that already
# answers there or one `make up` starts. Several stacks (homes) may share one Redis: each keeps its keys
# under a namespace of its own, or one stack's users would see another's live events.
REDIS_PORT="${FRESHREC_REDIS_PORT:-6379}"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export FRESHREC_ONLINE__NAMESPACE="${FRESHREC_ONLINE__NAMESPACE:-freshrec-$(printf %s "$FRESHREC_HOME" | sha256sum | cut -c1-12)}"

LOG_DIR="$FRESHREC_HOME/logs"
RUN_DIR="$FRESHREC_HOME/run"
mkdir -p "$LOG_DIR" "$RUN_DIR"

# The serving tier's admin routes and the release/SLO tasks that call them must share one bearer
# token, or every canary step is refused with 401. Unless the caller set one, this home keeps a random
# token of its own (readable by its owner only).
if [ -z "${FRESHREC_ADMIN_TOKEN:-}" ]; then
  if [ ! -s "$FRESHREC_HOME/admin_token" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$FRESHREC_HOME/admin_token")
  fi
  FRESHREC_ADMIN_TOKEN="$(cat "$FRESHREC_HOME/admin_token")"
fi
export FRESHREC_ADMIN_TOKEN

# Local login of the simple auth manager (development only; production uses a real auth manager).
AIRFLOW_USER="admin"
AIRFLOW_PASSWORD="admin"
EXPECTED_DAGS=(features_daily retrain release slo_monitor)

airflow_env() {
  # The base (AIRFLOW_HOME, DAGs folder, examples off, the spark_default connection) comes from the
  # same helper `freshrec pipeline run` uses, so the in-process runs and the stack agree.
  eval "$(cd "$REPO" && python -c '
import shlex
from freshrec.dags._local import airflow_environment
from freshrec.core.settings import get_settings
for key, value in airflow_environment(get_settings()).items():
    print(f"export {key}={shlex.quote(value)}")')" || { echo "error: could not compute the Airflow environment" >&2; return 1; }
  mkdir -p "$AIRFLOW_HOME"
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__PARALLELISM="${FRESHREC_AIRFLOW_PARALLELISM:-4}"
  local db_url
  db_url="$(airflow_db_url)" || return 1
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$db_url"
  if [[ "$db_url" == postgresql* ]]; then
    # Airflow would derive postgresql+asyncpg for its async engine; psycopg 3 does both.
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC="$db_url"
  fi
  if [[ "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" == sqlite* ]]; then
    # Four processes share one SQLite file: wait for locks instead of failing (see the module).
    export PYTHONPATH="$REPO/infra/local/airflow${PYTHONPATH:+:$PYTHONPATH}"
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=freshrec_airflow_local.SQLITE_CONNECT_ARGS
  fi
  export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="$AIRFLOW_USER:admin"
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
  export AIRFLOW__API__HOST="$AIRFLOW_BIND_HOST"
  export AIRFLOW__API__PORT="$AIRFLOW_PORT"
  local log_ports
  read -r -a log_ports <<<"${FRESHREC_AIRFLOW_LOG_PORTS:-8793 8794}"
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="${log_ports[0]}"
  export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="${log_ports[1]}"
  export AIRFLOW__API__BASE_URL="$AIRFLOW_URL"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AIRFLOW_URL/execution/"
  # Quick feedback while developing DAGs: look for new files and re-parse changed ones often.
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=10
  export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=10
  export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1
  export AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL=10
  # One secret shared by every component (scheduler-issued task tokens must validate in the API server).
  local secret_file="$AIRFLOW_HOME/.jwt_secret"
  if [ ! -s "$secret_file" ]; then
    (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(48))' >"$secret_file")
  fi
  AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$secret_file")"
  export AIRFLOW__API_AUTH__JWT_SECRET
}

# The Airflow metadata database of this FRESHREC_HOME. FRESHREC_AIRFLOW_DB: "auto" (default) uses a
# database on the local Postgres (127.0.0.1:5432, user postgres) when one answers, else SQLite under
# AIRFLOW_HOME; "sqlite" forces SQLite; anything else is used as the SQLAlchemy URL. Why Postgres
# first: with a scheduler writing all the time, Airflow refuses most backfill creations on SQLite
# ("Database is locked. Backfill creation is not supported on SQLite under concurrent access").
# The choice is remembered in $AIRFLOW_HOME/metadata_db_url so a stack keeps its database.
airflow_db_url() {
  local remembered="$AIRFLOW_HOME/metadata_db_url" choice="${FRESHREC_AIRFLOW_DB:-auto}"
  if [ -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]; then echo "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"; return 0; fi
  if [ "$choice" = auto ] && [ -s "$remembered" ]; then cat "$remembered"; return 0; fi
  case "$choice" in
    sqlite) echo "sqlite:///$AIRFLOW_HOME/airflow.db" ;;
    auto)
      python - "$FRESHREC_HOME" "$AIRFLOW_HOME" >"$remembered.tmp" <<'PY' || return 1
import hashlib, sys
home, airflow_home = sys.argv[1:]
try:
    import psycopg
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3)
except Exception:
    print(f"sqlite:///{airflow_home}/airflow.db")
    raise SystemExit(0)
name = "freshrec_airflow_" + hashlib.sha256(home.encode()).hexdigest()[:12]
with admin:
    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        admin.execute(f'CREATE DATABASE "{name}"')
print(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
PY
      mv "$remembered.tmp" "$remembered"
      cat "$remembered" ;;
    *) echo "$choice" ;;
  esac
}

# The documented local login: write admin/admin into the simple auth manager's password file
# (a JSON object {user: password}) before Airflow first starts, so it never generates a random one.
write_airflow_password() {
  python - "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" "$AIRFLOW_USER" "$AIRFLOW_PASSWORD" <<'PY'
import json, os, sys
path, user, password = sys.argv[1:]
passwords = {}
if os.path.exists(path):
    text = open(path).read().strip()
    passwords = json.loads(text) if text else {}
if passwords.get(user) != password:
    passwords[user] = password
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(passwords) + "\n")
    os.replace(tmp, path)
PY
}

# ---- process bookkeeping: one PID file per service; every service starts in its own session
# (setsid), so the PID is also the session id. Stopping a service signals every process of that
# session: its children too, including task processes that Airflow moves into process groups of
# their own (they stay in the session).

pidfile() { echo "$RUN_DIR/$1.pid"; }

service_pid() {
  local file
  file="$(pidfile "$1")"
  [ -s "$file" ] && cat "$file"
}

# True when the service's recorded session still has members that are ours: the leader's
# environment must carry the marker we started it with (guards against a recycled PID).
service_running() {
  local pid
  pid="$(service_pid "$1")" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || return 1
  pgrep -s "$pid" >/dev/null 2>&1 || return 1
  if [ -r "/proc/$pid/environ" ]; then
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "FRESHREC_STACK_SERVICE=$1" && return 0
    return 1
  fi
  return 0  # leader gone but its session lives on: still ours to stop
}

# start_service NAME LOGFILE CMD...: detached, in a new session, logging to LOGFILE.
start_service() {
  local name="$1" log="$2"
  shift 2
  FRESHREC_STACK_SERVICE="$name" setsid "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# stop_service NAME [GRACE_S]: TERM the whole session, wait, then KILL what is left.
stop_service() {
  local name="$1" grace="${2:-30}" pid
  pid="$(service_pid "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] && pgrep -s "$pid" >/dev/null 2>&1; then
    echo "stopping $name (session $pid)"
    pkill -TERM -s "$pid" 2>/dev/null || true
    local waited=0
    while pgrep -s "$pid" >/dev/null 2>&1 && [ "$waited" -lt "$((grace * 2))" ]; do
      sleep 0.5
      waited=$((waited + 1))
    done
    if pgrep -s "$pid" >/dev/null 2>&1; then
      echo "  $name did not stop within ${grace}s; killing it"
      pkill -KILL -s "$pid" 2>/dev/null || true
      sleep 1
    fi
  fi
  rm -f "$(pidfile "$name")"
}

port_listening() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN
}

# wait_http URL TIMEOUT_S SERVICE: poll until URL answers 2xx; fail early when SERVICE died.
wait_http() {
  local url="$1" timeout="$2" service="$3" start
  start=$(date +%s)
  until curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; do
    if ! service_running "$service"; then
      echo "error: $service exited while waiting for $url" >&2
      return 1
    fi
    if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
      echo "error: $url did not answer within ${timeout}s" >&2
      return 1
    fi
    sleep 2
  done
}

# redis_answers PORT: a Redis answers PING on 127.0.0.1:PORT (not merely something listening there).
redis_answers() {
  python - "$1" <<'PY' 2>/dev/null
import sys
import redis
sys.exit(0 if redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=2, socket_connect_timeout=2).ping() else 1)
PY
}

# airflow_token: a JWT for the REST API from POST /auth/token with the local login.
airflow_token() {
  curl -fsS --retry 3 --retry-delay 3 --max-time 30 -X POST "$AIRFLOW_URL/auth/token" -H 'Content-Type: application/json' \
    -d "{\"username\": \"$AIRFLOW_USER\", \"password\": \"$AIRFLOW_PASSWORD\"}" |
    python -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

# Migrate the metadata DB before the components start (clear errors, one writer).
migrate_airflow_db() {
  airflow db migrate >>"$LOG_DIR/airflow-migrate.log" 2>&1 || {
    tail -n 30 "$LOG_DIR/airflow-migrate.log" >&2
    echo "error: airflow db migrate failed (log $LOG_DIR/airflow-migrate.log)" >&2
    return 1
  }
}
