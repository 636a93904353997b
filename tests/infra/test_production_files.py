"""Parser and consistency checks over every production file: compose, nginx, Kubernetes manifests,
Helm values, Prometheus configs (promtool) and the Grafana dashboard (its PromQL parsed by promtool and
checked against the metrics the serving tier really exports)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.stack import REPO

PRODUCTION = REPO / "infra" / "production"
COMPOSE_DIR = PRODUCTION / "compose"
K8S = PRODUCTION / "k8s"
GRAFANA = REPO / "infra" / "grafana"
PROMETHEUS_RULES = REPO / "infra" / "prometheus"
DASHBOARD = GRAFANA / "dashboards" / "freshrec-serving.json"
PROMTOOL = shutil.which("promtool")


def yaml_files() -> list[Path]:
    roots = [PRODUCTION, GRAFANA, PROMETHEUS_RULES]
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*") if p.suffix in {".yml", ".yaml"})


def load_all(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert load_all(path), f"{path} is empty"


def test_every_json_file_parses() -> None:
    files = [p for root in (PRODUCTION, GRAFANA) for p in root.rglob("*.json")]
    assert DASHBOARD in files
    for path in files:
        json.loads(path.read_text())


def test_compose_has_the_production_shape(compose: dict) -> None:
    services = compose["services"]
    for name in ["postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker", "spark-master", "spark-worker", "serving-lb", "prometheus", "grafana"]:
        assert name in services, f"compose lacks {name}"
    airflow = [s for n, s in services.items() if n.startswith("airflow-")]
    for service in airflow:
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg://"), "no asyncpg in the image"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        assert env["FRESHREC_REGISTRY_URL"].startswith("postgresql+psycopg://")
        spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
        assert spark["conn_type"] == "spark" and spark["host"].startswith("spark://spark-master")
    replicas = sorted(n for n in services if n.startswith("serving-") and n != "serving-lb")
    assert len(replicas) >= 2
    for name in replicas:
        env = services[name]["environment"]
        assert env["FRESHREC_REGISTRY_URL"].startswith("postgresql+psycopg://"), "replicas must share the Postgres registry"
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert json.loads(services["airflow-scheduler"]["environment"]["FRESHREC_SERVING_REPLICAS"]) == [
        f"http://{n}:8000" for n in replicas
    ]
    upstream = re.findall(r"server\s+([\w-]+):8000", (COMPOSE_DIR / "nginx.conf").read_text())
    assert sorted(upstream) == replicas, "the load balancer must front exactly the serving replicas"


def test_compose_mounts_and_variables_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts missing {source}"
    for secret in compose.get("secrets", {}).values():
        example = COMPOSE_DIR / secret["file"].replace(".json", ".example.json")
        assert example.is_file(), f"no example for secret file {secret['file']}"
    text = (COMPOSE_DIR / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    lines = (COMPOSE_DIR / "example.env").read_text().splitlines()
    documented = {line.split("=")[0] for line in lines if "=" in line and not line.startswith("#")}
    assert required <= documented, f"undocumented variables: {required - documented}"
    dockerfile = (PRODUCTION / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for item in source.split():
            assert (REPO / item).exists(), f"Dockerfile copies missing {item}"


def test_serving_replicas_share_one_online_store_and_can_log(compose: dict) -> None:
    # POST /v1/events must reach the next /v1/recommend on any replica (one store), and every serving
    # process appends its ingestion log under FRESHREC_HOME (a writable data volume).
    replicas = [s for n, s in compose["services"].items() if n.startswith("serving-") and n != "serving-lb"]
    urls = {s["environment"]["FRESHREC_ONLINE__STORE_URL"] for s in replicas}
    assert len(urls) == 1 and urls.pop().startswith("redis://redis:")
    assert "--appendfsync" in compose["services"]["redis"]["command"]
    for service in replicas:
        assert "redis" in service["depends_on"]
        data = next(v for v in service["volumes"] if v.startswith("freshrec-data:"))
        assert not data.endswith(":ro"), "serving writes the ingestion log: the data volume must be writable"
    serving = next(d for d in load_all(K8S / "serving.yaml") if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert not any(m.get("readOnly") for m in serving["containers"][0]["volumeMounts"] if m["name"] == "data")
    assert not any(v.get("persistentVolumeClaim", {}).get("readOnly") for v in serving["volumes"])
    secret = load_all(K8S / "secret.example.yaml")[0]["stringData"]
    assert secret["FRESHREC_ONLINE__STORE_URL"].startswith("redis://")


def test_kubernetes_manifests_are_consistent() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"
        docs += load_all(K8S / resource)
    for doc in docs + load_all(K8S / "secret.example.yaml"):
        assert {"apiVersion", "kind", "metadata"} <= doc.keys() and doc["metadata"].get("name"), doc
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    serving = by_kind["Deployment"]["freshrec-serving"]
    pod = serving["spec"]["template"]
    assert serving["spec"]["replicas"] >= 2
    labels = pod["metadata"]["labels"]
    service = by_kind["Service"]["freshrec-serving"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"].items() <= labels.items(), "the Service must select the serving pods"
    assert by_kind["PodDisruptionBudget"]["freshrec-serving"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["ports"][0]["containerPort"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    config_maps = by_kind["ConfigMap"]
    for source in container["envFrom"]:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
    claims = by_kind["PersistentVolumeClaim"]
    for volume in pod["spec"]["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
    assert config_maps["freshrec-config"]["data"]["FRESHREC_SPARK_MASTER"].startswith("sc://spark-connect")
    assert "spark-connect" in by_kind["Service"]


def test_helm_values_use_postgres_and_celery() -> None:
    values = yaml.safe_load((PRODUCTION / "helm" / "airflow-values.yaml").read_text())
    assert "CeleryExecutor" in values["executor"] and "KubernetesExecutor" in values["executor"]
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    env = yaml.safe_load(values["extraEnv"])
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" in {e["name"] for e in env}, "no asyncpg in the image"
    spark = json.loads(next(e["value"] for e in env if e["name"] == "AIRFLOW_CONN_SPARK_DEFAULT"))
    assert spark["conn_type"] == "spark"


def exported_metric_names() -> set[str]:
    """Every series name the serving tier can export (counters with _total, histograms with _bucket...)."""
    from freshrec.serving.metrics import ServingMetrics

    names = set()
    for family in ServingMetrics(10.0).registry.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum", f"{base}_created"}
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_covers_the_release_signals() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ["latency", "error rate", "canary split", "model age", "burn rate"]:
        assert topic in titles, f"dashboard has no {topic} panel"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = exported_metric_names()
    for title, expr in dashboard_queries():
        used = set(re.findall(r"\b(freshrec_[a-z_]+)\b", expr))
        assert used and used <= exported, f"panel {title!r} queries unknown metrics {used - exported}"
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "freshrec.yml").read_text())
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_has_the_real_time_events_row() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    rows = [p for p in panels if p["type"] == "row"]
    start = next(p["gridPos"]["y"] for p in rows if p["title"].startswith("Real-time events"))
    below = [p for p in panels if p["type"] != "row" and p["gridPos"]["y"] > start]
    queried = " ".join(t["expr"] for p in below for t in p.get("targets", []))
    for metric in ["freshrec_events_accepted_total", "freshrec_events_rejected_total", "freshrec_event_log_fsync_seconds_bucket",
                   "freshrec_event_log_errors_total", "freshrec_online_store_seconds_bucket", "freshrec_online_store_errors_total",
                   "freshrec_online_store_up", "freshrec_event_visible_seconds_bucket", "freshrec_live_tail_events_bucket",
                   "freshrec_unknown_item_events_total"]:
        assert metric in queried, f"the real-time events row does not show {metric}"
    assert 'sum by (reason) (rate(freshrec_events_rejected_total' in queried, "rejections must be broken down by reason"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    assert PROMTOOL, "promtool missing: `make test` installs Debian's prometheus package (infra/local/sysdeps.sh)"
    # promtool parses PromQL when checking rules: every panel query becomes a recording rule.
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr.replace("$job", ".*")} for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus-compose.yml", "prometheus-k8s.yml"])
def test_prometheus_configs_with_the_shared_rules(config: str, tmp_path: Path) -> None:
    assert PROMTOOL, "promtool missing: `make test` installs Debian's prometheus package (infra/local/sysdeps.sh)"
    rules = sorted((PROMETHEUS_RULES / "rules").glob("*.yml"))
    assert rules, f"no rule files in {PROMETHEUS_RULES / 'rules'}"
    mounted = tmp_path / "freshrec"
    mounted.mkdir()
    for rule in rules:
        shutil.copy(rule, mounted / rule.name)
    text = (PRODUCTION / "prometheus" / config).read_text().replace("/etc/prometheus/freshrec", str(mounted))
    (tmp_path / config).write_text(text)
    result = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / config)], capture_output=True, text=True)
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds promtool without the Kubernetes service discovery: check the SD block's shape
        # here and let promtool check everything else (relabelling, rules) with a static target.
        parsed = yaml.safe_load(text)
        for job in parsed["scrape_configs"]:
            for sd in job.pop("kubernetes_sd_configs", []):
                assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["freshrec"]
                job["static_configs"] = [{"targets": ["pod.freshrec.svc:8000"]}]
        (tmp_path / config).write_text(yaml.safe_dump(parsed))
        result = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr and "rule" in (result.stdout + result.stderr).lower()
