#!/usr/bin/env bash
# `make demo`: one headless end-to-end run in a throw-away FRESHREC_HOME; nothing is left running.
#   synthetic events (with ground truth) -> pipeline (features -> retrain -> release: first champion)
#   -> serving tier answers /v1/recommend -> traffic simulator (when available) -> one more day of
#   events -> pipeline again (a fresher candidate goes through the canary against the live server)
# Knobs: FRESHREC_DEMO_HOME (default: a new temp dir, kept for inspection), FRESHREC_DEMO_PORT
# (default 8100, so a running `make up` stack is not disturbed), FRESHREC_DEMO_DAYS (default 7).
set -euo pipefail
export FRESHREC_HOME="${FRESHREC_DEMO_HOME:-$(mktemp -d -t freshrec-demo-XXXXXX)}"
export FRESHREC_SERVING__PORT="${FRESHREC_DEMO_PORT:-8100}"
unset FRESHREC_SERVING_URL
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
DAYS="${FRESHREC_DEMO_DAYS:-7}"
TRUTH="$FRESHREC_HOME/truth.npz"
SYNTH=(--users 800 --items 400 --events-per-day 8000 --seed 7 --truth "$TRUTH" --no-progress)

cleanup() {
  local rc=$?
  stop_service simulator 10
  stop_service serving 20
  [ "$rc" -eq 0 ] || echo "demo failed (exit $rc); logs under $LOG_DIR" >&2
}
trap cleanup EXIT
step() { echo; echo "==> $*"; }

claim() { if port_listening "$1"; then echo "error: port $1 is in use; set FRESHREC_DEMO_PORT" >&2; exit 1; fi; }
claim "$SERVING_PORT"

step "demo home $FRESHREC_HOME"
# Whole days only (events later than "now" would be quarantined): DAYS days ending the day before
# yesterday, then yesterday arrives as "new data".
start_day="$(date -u -d "$((DAYS + 1)) days ago" +%F)"
freshrec data synth --out "$FRESHREC_HOME/lake/raw/events" --start "$start_day" --days "$DAYS" "${SYNTH[@]}"

step "serving tier on $SERVING_URL (waits for a champion)"
start_service serving "$LOG_DIR/serving.log" freshrec serve --host "$SERVING_HOST" --port "$SERVING_PORT"

step "pipeline: features -> retrain -> release (first champion)"
freshrec pipeline run
wait_http "$SERVING_URL/readyz" 300 serving

step "a recommendation"
curl -fsS -X POST "$SERVING_URL/v1/recommend" -H 'Content-Type: application/json' \
  -d '{"user_id": "u1", "k": 5, "exclude_seen": true}'
echo

if freshrec simulate --help >/dev/null 2>&1; then
  step "traffic simulator (background) while a fresher model is released"
  start_service simulator "$LOG_DIR/simulator.log" freshrec simulate --rate 20 --duration 600 --truth "$TRUTH" --url "$SERVING_URL"
fi

step "one more day of events, then the pipeline again: the new candidate goes through the canary"
# Same seed and options extend the same synthetic world by one day (yesterday).
freshrec data synth --out "$FRESHREC_HOME/lake/raw/events" --start "$start_day" --days "$((DAYS + 1))" "${SYNTH[@]}"
yesterday="$(date -u -d "1 day ago" +%F)"
freshrec pipeline run --from "$yesterday" --to "$yesterday" || echo "(the second release did not promote; see above)"

step "registry"
freshrec registry list
echo
echo "Demo finished. State (lake, models, reports, registry) kept in $FRESHREC_HOME"
