"""deploy/: Kubernetes manifests valid against the offline schemas of kubernetes-validate, alert
rules that fire under promtool on series shaped like a real scrape, a dashboard that queries only
exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.db.health.wsgi import health_app
from examples.app_migrations import MIGRATIONS

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S_VERSION = "1.37.0"
JOB, INSTANCE = "app", "10.0.0.7:8080"


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def test_kubernetes_manifests_are_valid_offline() -> None:
    import kubernetes_validate

    docs = manifests()
    assert {doc["kind"] for doc in docs} >= {"Job", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError with the path


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def test_probes_and_resource_limits_are_wired() -> None:
    workloads = [doc for doc in manifests() if doc["kind"] in ("Job", "Deployment")]
    for doc in workloads:
        for container in _containers(doc):
            assert container["resources"]["limits"]["memory"], container["name"]
    deployment = next(doc for doc in workloads if doc["kind"] == "Deployment")
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    assert app["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert app["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert "migrate" in deployment["spec"]["template"]["spec"]["initContainers"][0]["command"]
    job = next(doc for doc in workloads if doc["kind"] == "Job")
    assert "migrate" in job["spec"]["template"]["spec"]["containers"][0]["command"]


def scrape(db: Any) -> dict[str, dict[str, str]]:
    """sample name -> labels of its first sample, from a real /metrics of ``db``."""
    app = health_app(db, MIGRATIONS, cache_ttl=0.0)
    try:
        status, _headers, body = app.respond("GET", "/metrics", {})
    finally:
        app.close()
    assert status == 200
    found: dict[str, dict[str, str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, dict(sample.labels))
    return found


def _series(name: str, labels: dict[str, str]) -> str:
    every = {**labels, "job": JOB, "instance": INSTANCE}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(every.items())) + "}"


# metric -> values over 20 one-minute steps (promtool's expanding notation)
SCENARIO = {
    "api_db_pool_utilization_ratio": "0.97x20",
    "api_db_pool_acquisition_timeouts_total": "0 0 0 0 0 0 0 0 0 0 0 0 0 1+1x8",
    "api_db_migrations_failed": "1x20",
    "api_db_migrations_pending": "2x20",
    "api_db_slow_queries_total": "0+60x20",
    "api_db_ready": "0x20",
    "api_db_up": "0x20",
}
# alert -> the labels its "by" clause keeps
EXPECTED = {
    "ApiDbPoolUtilizationHigh": ("job", "instance", "database"),
    "ApiDbPoolUtilizationCritical": ("job", "instance", "database"),
    "ApiDbPoolAcquisitionTimeouts": ("job", "instance", "database"),
    "ApiDbMigrationFailed": ("job", "database"),
    "ApiDbMigrationsPending": ("job", "database"),
    "ApiDbSlowQueries": ("job", "database"),
    "ApiDbNotReady": ("job", "instance", "database"),
    "ApiDbDown": ("job", "instance", "database"),
}


# alert -> how promtool prints its {{ $value }} (with the rule's humanize function) in this scenario
VALUES = {"ApiDbPoolUtilizationHigh": "97%", "ApiDbMigrationsPending": "2", "ApiDbSlowQueries": "1"}
TEMPLATE = re.compile(r"{{\s*\$(labels\.(\w+)|value)[^}]*}}")


def _render(text: str, alert: str, labels: dict[str, str]) -> str:
    """The annotation as Prometheus renders it: ``$labels.x`` from ``labels``, ``$value`` from ``VALUES``."""
    return TEMPLATE.sub(lambda m: labels[m.group(2)] if m.group(2) else VALUES[alert], text)


def _rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


@pytest.mark.engines("postgres")
def test_alert_rules_fire_on_series_from_a_real_scrape(db: Any, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (the Debian package ships it)")
    scraped = scrape(db)
    database = scraped["api_db_up"]["database"]
    rules = _rules()
    assert set(rules) == set(EXPECTED)
    alerts = []
    for name, keep in EXPECTED.items():
        labels = {"alertname": name, "severity": rules[name]["labels"]["severity"]}
        labels.update({"job": JOB, "instance": INSTANCE, "database": database})
        kept = {k: v for k, v in labels.items() if k in keep or k in ("alertname", "severity")}
        annotations = {k: _render(v, name, kept) for k, v in rules[name]["annotations"].items()}
        alerts.append({"eval_time": "19m", "alertname": name,
                       "exp_alerts": [{"exp_labels": kept, "exp_annotations": annotations}]})  # fmt: skip
    series = [
        {"series": _series(metric, scraped[metric]), "values": values} for metric, values in SCENARIO.items()
    ]
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": alerts},
                  _between_thresholds(scraped, database)],
    }))  # fmt: skip
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _between_thresholds(scraped: dict[str, dict[str, str]], database: str) -> dict[str, Any]:
    """85 % busy: the warning fires, the critical alert does not; a healthy database raises nothing else."""
    metric = "api_db_pool_utilization_ratio"
    healthy = {"api_db_up": "1x20", "api_db_ready": "1x20", "api_db_migrations_failed": "0x20"}
    series = [{"series": _series(metric, scraped[metric]), "values": "0.85x20"}]
    series += [{"series": _series(name, scraped[name]), "values": values} for name, values in healthy.items()]
    labels = {"alertname": "ApiDbPoolUtilizationHigh", "severity": "warning", "job": JOB,
              "instance": INSTANCE,
              "database": database}  # fmt: skip
    VALUES["ApiDbPoolUtilizationHigh:85"] = "85%"
    rule = _rules()["ApiDbPoolUtilizationHigh"]
    annotations = {
        k: _render(v, "ApiDbPoolUtilizationHigh:85", labels) for k, v in rule["annotations"].items()
    }
    checks: list[dict[str, Any]] = [{"eval_time": "19m", "alertname": "ApiDbPoolUtilizationHigh",
                                     "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}]
    checks += [{"eval_time": "19m", "alertname": name, "exp_alerts": []}
               for name in ("ApiDbPoolUtilizationCritical", "ApiDbDown", "ApiDbNotReady",
                            "ApiDbMigrationFailed")]
    return {"interval": "1m", "input_series": series, "alert_rule_test": checks}


METRIC_NAME = re.compile(r"\bapi_db_\w+")


def test_dashboard_and_alerts_query_only_exported_metrics(tmp_path: Path) -> None:
    from api.db import connect

    db = connect(f"sqlite:///{tmp_path}/dash.db")
    try:
        exported = set(scrape(db))
    finally:
        db.close()
    dashboard = json.loads((DEPLOY / "grafana" / "api-db-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [var.get("query", "") for var in dashboard["templating"]["list"]]
    exprs += [rule["expr"] for rule in _rules().values()]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used, "no api_db_ metric found in the dashboard"
    unknown = sorted(used - exported)
    assert not unknown, f"queried but not exported: {unknown}"
