"""Write infra/prometheus/rules/*.rules.yml: the SLO rules from the slo_monitor DAG's definitions, and the
real-time event rules (ingestion and the online store).

The burn-rate rules (freshrec.pipeline.monitoring.burn.SRE_RULES), the SLO targets and the latency threshold
(settings defaults) and the metric names (freshrec.pipeline.monitoring.promtext.METRICS) are read from the code, so
the Prometheus rules cannot drift from the DAG's logic; tests/monitoring/test_prometheus_rules.py fails
when a committed file differs from what this script writes, and when a rule names a metric the serving
tier does not export. Run:

    .venv/bin/python infra/prometheus/generate_rules.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from freshrec.core.settings import MonitoringSettings, ServingSettings  # noqa: E402
from freshrec.pipeline.monitoring.burn import SRE_RULES, Severity  # noqa: E402
from freshrec.pipeline.monitoring.promtext import METRICS  # noqa: E402

RULES_DIR = Path(__file__).with_name("rules")
ROUTES = "|".join(METRICS.routes)
EVENTS_ROUTE = "events"  # the route label of POST /v1/events (freshrec.serving.middleware.ROUTES)
# Real-time event thresholds. A 5xx other than 503 is a fault (the log or a bug): page at 1%. 503 is the
# documented back-pressure (online store down, overload) that producers retry, so a trickle is normal
# and a sustained 5% means ingestion has stalled. Rejections are the producers' data quality: a ticket
# when their share is both material (5%) and well above the day's usual (3x), so a producer that always
# sends some bad rows does not page anyone. The store may fail a call now and then (its timeout is tight,
# recommend then serves the snapshot); 1% for 10 minutes is a degraded store worth a ticket.
EVENTS_SERVER_ERROR_RATIO = 0.01
EVENTS_REFUSED_RATIO = 0.05
REJECTED_RATIO, REJECTED_SPIKE_FACTOR = 0.05, 3
STORE_ERROR_RATIO = 0.01


def _window(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _le(threshold_s: float) -> str:
    # prometheus_client renders bucket bounds with repr(float): 0.01 -> "0.01"
    return repr(float(threshold_s))


def build_rules(monitoring: MonitoringSettings, serving: ServingSettings) -> dict:
    windows = sorted({w for r in SRE_RULES for w in (r.long_window.total_seconds(), r.short_window.total_seconds())})
    page_windows = sorted({w for r in SRE_RULES if r.severity is Severity.PAGE
                           for w in (r.long_window.total_seconds(), r.short_window.total_seconds())})
    sel = f'route=~"{ROUTES}"'
    count = f"{METRICS.latency}_count"
    fast = f'{METRICS.latency}_bucket{{{sel},le="{_le(serving.slo_latency_ms / 1000)}"}}'
    recording = []
    for scope, by, variant_sel, scope_windows in (("service", "", "", windows),
                                                  ("variant", " by (variant)", "", page_windows)):
        for w in scope_windows:
            win = _window(w)
            requests = f"sum{by} (rate({count}{{{sel}{variant_sel}}}[{win}]))"
            recording.append({"record": f"freshrec:{scope}_error_ratio:rate{win}",
                              "expr": f"sum{by} (rate({METRICS.errors}{{{sel}}}[{win}])) / {requests}"})
            recording.append({"record": f"freshrec:{scope}_slow_ratio:rate{win}",
                              "expr": f"1 - sum{by} (rate({fast}[{win}])) / {requests}"})
    alerts = []
    targets = {"availability": ("error", monitoring.availability_target),
               "latency": ("slow", monitoring.latency_target)}
    for slo, (kind, target) in targets.items():
        budget = round(1 - target, 10)
        for rule in SRE_RULES:
            long_w, short_w = _window(rule.long_window.total_seconds()), _window(rule.short_window.total_seconds())
            name = f"FreshRec{slo.capitalize()}Burn{long_w}{short_w}"
            alerts.append({
                "alert": name,
                "expr": (f"freshrec:service_{kind}_ratio:rate{long_w} > ({rule.factor} * {budget})\n"
                         f"and\nfreshrec:service_{kind}_ratio:rate{short_w} > ({rule.factor} * {budget})"),
                "labels": {"severity": str(rule.severity), "slo": slo},
                "annotations": {"summary": f"{slo} SLO ({target:.2%}) burning faster than {rule.factor}x over "
                                           f"{long_w} and {short_w}"},
            })
            if rule.severity is Severity.PAGE:
                alerts.append({
                    "alert": f"FreshRecCanary{slo.capitalize()}Burn{long_w}{short_w}",
                    "expr": (f'freshrec:variant_{kind}_ratio:rate{long_w}{{variant="canary"}} > ({rule.factor} * {budget})\n'
                             f'and\nfreshrec:variant_{kind}_ratio:rate{short_w}{{variant="canary"}} > ({rule.factor} * {budget})'),
                    "labels": {"severity": "page", "slo": slo, "action": "rollback"},
                    "annotations": {"summary": f"the canary burns its {slo} budget faster than {rule.factor}x: "
                                               "the slo_monitor DAG rolls it back"},
                })
    alerts.append({
        "alert": "FreshRecModelStale",
        "expr": f'max(freshrec_model_age_seconds{{role="champion"}}) > {monitoring.max_model_age_h * 3600:g}',
        "labels": {"severity": "ticket", "slo": "freshness"},
        "annotations": {"summary": f"the champion is older than {monitoring.max_model_age_h:g} h: retrain"},
    })
    return {"groups": [
        {"name": "freshrec-slo-recording", "rules": recording},
        {"name": "freshrec-slo-alerts", "rules": alerts},
    ]}


def build_event_rules() -> dict:
    events = f'freshrec_requests_total{{route="{EVENTS_ROUTE}"}}'
    requests = f"sum (rate({events}[5m]))"
    rejected, accepted = "freshrec_events_rejected_total", "freshrec_events_accepted_total"
    recording = [
        {"record": "freshrec:events_server_error_ratio:rate5m",
         "expr": f'sum (rate(freshrec_requests_total{{route="{EVENTS_ROUTE}",status=~"5..",status!="503"}}[5m])) / {requests}'},
        {"record": "freshrec:events_refused_ratio:rate5m",
         "expr": f'sum (rate(freshrec_requests_total{{route="{EVENTS_ROUTE}",status="503"}}[5m])) / {requests}'},
    ]
    for win in ("15m", "1d"):
        # `or vector(0)`: a deployment whose every event is rejected has no accepted series at all.
        recording.append({"record": f"freshrec:events_rejected_ratio:rate{win}",
                          "expr": f"sum (rate({rejected}[{win}])) / (sum (rate({rejected}[{win}])) + "
                                  f"(sum (rate({accepted}[{win}])) or vector(0)))"})
    # The latency histogram counts successful calls only: failed ones are added to the denominator.
    store_errors = "sum (rate(freshrec_online_store_errors_total[5m]))"
    recording.append({"record": "freshrec:online_store_error_ratio:rate5m",
                      "expr": f"{store_errors} / ({store_errors} + "
                              "(sum (rate(freshrec_online_store_seconds_count[5m])) or vector(0)))"})
    ingestion, store = {"component": "ingestion"}, {"component": "online-store"}
    alerts = [
        {"alert": "FreshRecEventsServerErrors",
         "expr": f"freshrec:events_server_error_ratio:rate5m > {EVENTS_SERVER_ERROR_RATIO}", "for": "5m",
         "labels": {"severity": "page", **ingestion},
         "annotations": {"summary": f"POST /v1/events fails (5xx other than 503) for more than "
                                    f"{EVENTS_SERVER_ERROR_RATIO:.0%} of requests: events are not being logged"}},
        {"alert": "FreshRecEventsRefused",
         "expr": f"freshrec:events_refused_ratio:rate5m > {EVENTS_REFUSED_RATIO}", "for": "5m",
         "labels": {"severity": "page", **ingestion},
         "annotations": {"summary": f"POST /v1/events answers 503 to more than {EVENTS_REFUSED_RATIO:.0%} of "
                                    "requests: ingestion has stalled (online store down or overload); producers retry"}},
        {"alert": "FreshRecEventLogErrors",
         "expr": "sum (increase(freshrec_event_log_errors_total[5m])) > 0",
         "labels": {"severity": "page", **ingestion},
         "annotations": {"summary": "the ingestion log failed a write or fsync (disk full or I/O errors on the "
                                    "landing volume): events cannot be made durable"}},
        {"alert": "FreshRecEventsRejectedSpike",
         "expr": (f"freshrec:events_rejected_ratio:rate15m > {REJECTED_RATIO}\nand\n"
                  f"freshrec:events_rejected_ratio:rate15m > ({REJECTED_SPIKE_FACTOR} * freshrec:events_rejected_ratio:rate1d)"),
         "for": "10m",
         "labels": {"severity": "ticket", **ingestion},
         "annotations": {"summary": f"more than {REJECTED_RATIO:.0%} of posted events are rejected, "
                                    f"{REJECTED_SPIKE_FACTOR}x the day's share: a producer sends bad events "
                                    "(freshrec_events_rejected_total by reason)"}},
        # up is 0 as well where live state is switched off (online.enabled=false); only a store that
        # fails (the breaker's probes count as errors while it is down) is down.
        {"alert": "FreshRecOnlineStoreDown",
         "expr": ("min by (job, instance) (freshrec_online_store_up) == 0\nand on (job, instance)\n"
                  "sum by (job, instance) (increase(freshrec_online_store_errors_total[5m])) > 0"), "for": "1m",
         "labels": {"severity": "page", **store},
         "annotations": {"summary": "{{ $labels.instance }} cannot reach the online store: recommendations "
                                    "fall back to the daily snapshot and events are refused (503) or only logged"}},
        {"alert": "FreshRecOnlineStoreErrors",
         "expr": f"freshrec:online_store_error_ratio:rate5m > {STORE_ERROR_RATIO}", "for": "10m",
         "labels": {"severity": "ticket", **store},
         "annotations": {"summary": f"more than {STORE_ERROR_RATIO:.0%} of online store calls fail or time out: "
                                    "live tails are missing from some recommendations"}},
    ]
    return {"groups": [
        {"name": "freshrec-events-recording", "rules": recording},
        {"name": "freshrec-events-alerts", "rules": alerts},
    ]}


def render_all() -> dict[str, str]:
    """File name under rules/ -> its text."""
    def dump(header: str, rules: dict) -> str:
        return f"# Generated by infra/prometheus/generate_rules.py {header}. Do not edit.\n" + yaml.safe_dump(
            rules, sort_keys=False, width=120)

    return {
        "freshrec_slo.rules.yml": dump("from the slo_monitor DAG's definitions",
                                       build_rules(MonitoringSettings(), ServingSettings())),
        "freshrec_events.rules.yml": dump("(real-time events: ingestion, online store)", build_event_rules()),
    }


if __name__ == "__main__":
    RULES_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (RULES_DIR / name).write_text(text)
        print(f"wrote {RULES_DIR / name}")
