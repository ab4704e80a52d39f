"""The dashboards, alert rules and the compose `observability` profile, checked statically.

Every metric a dashboard or an alert names must be one the services export: the names come
from the Prometheus registry after importing every service's entry points (where all their
metrics are defined). promtool is not installed: the rules' YAML structure and each PromQL
expression's functions, metric names and labels are checked here.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from ikd_shared import telemetry
from tests.support.deploy import REPO, environment, interpolate, load_compose, parse_port

OBSERVABILITY = REPO / "deploy" / "observability"
ALERTS = OBSERVABILITY / "prometheus" / "alerts.yml"
PROMETHEUS = OBSERVABILITY / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"
DOC = REPO / "docs" / "observability.md"
COMPOSE = load_compose()
PROFILE = {
    name: service
    for name, service in COMPOSE["services"].items()
    if "observability" in service.get("profiles", [])
}
STACK = {name: s for name, s in COMPOSE["services"].items() if not s.get("profiles")}

# Every module that defines the services' metrics (importing the entry points pulls in the rest).
SERVICE_MODULES = [
    "ikd_identity.entrypoints.api",
    "ikd_gateway.entrypoints.api",
    "ikd_gateway.entrypoints.worker",
    "ikd_audit.entrypoints.app",
    "ikd_audit.entrypoints.signer",
    "ikd_audit.witness.app",
]
# Series Prometheus itself makes for each target and alert.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
TARGET_LABELS = {"job", "instance", "agency"}  # prometheus.yml's

FUNCTIONS = {
    # aggregations
    *[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ],
    # functions used or plausible here
    *[
        "abs",
        "absent",
        "absent_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "day_of_month",
        "day_of_week",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_quantile",
        "holt_winters",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "ln",
        "log2",
        "log10",
        "predict_linear",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sqrt",
        "time",
        "timestamp",
        "vector",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "stddev_over_time",
        "last_over_time",
        "present_over_time",
    ],
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATORS = {"and", "or", "unless", "bool", "offset"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\")")
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*")


def exported() -> dict[str, set[str]]:
    """Each sample name the services export, with the label names it may carry."""
    for module in SERVICE_MODULES:
        importlib.import_module(module)
    # The registry's index: every sample name (`_total`, `_bucket`, ...) to its collector.
    names = dict(REGISTRY._names_to_collectors)
    return {
        name: set(getattr(collector, "_labelnames", ()))
        | ({"le"} if name.endswith("_bucket") else set())
        for name, collector in names.items()
    }


EXPORTED = exported()


def parse_promql(expr: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(metric names, label names matched per metric, grouping labels) of an expression.

    Raises ValueError for what no PromQL parser would take: unbalanced brackets, an unknown
    function, an unquoted matcher value.
    """
    depth = 0
    for char in _STRING.sub('""', expr):
        depth += {"(": 1, ")": -1, "[": 1, "]": -1, "{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"unbalanced brackets: {expr}")
    if depth:
        raise ValueError(f"unbalanced brackets: {expr}")
    matched: dict[str, set[str]] = {}
    for selector in _SELECTOR.finditer(expr):
        body = selector[2].strip()
        pairs = _MATCHER.findall(body)
        rebuilt = ",".join(f"{n}{op}{v}" for n, op, v in pairs)
        if rebuilt != re.sub(r"\s*,\s*", ",", re.sub(r"\s*(=~|!~|!=|=)\s*", r"\1", body)):
            raise ValueError(f'a label matcher is not `name op "value"`: {selector[0]}')
        if selector[1]:
            matched.setdefault(selector[1], set()).update(n for n, _, _ in pairs)
    bare = _STRING.sub('""', expr)
    grouping = {
        label.strip()
        for _, labels in _GROUPING.findall(bare)
        for label in labels.split(",")
        if label.strip()
    }
    bare = _GROUPING.sub(" ", bare)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges and subqueries
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        word = match[0]
        if word in KEYWORDS or word in OPERATORS:
            continue
        if bare[match.end() :].lstrip().startswith("("):
            if word not in FUNCTIONS:
                raise ValueError(f"unknown function {word}: {expr}")
            continue
        names.add(word)
    return names, matched, grouping


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                yield f"{path.stem}: {panel['title']}", target["expr"]


EXPRESSIONS = [(rule["alert"], rule["expr"]) for rule in _rules()] + list(_dashboard_exprs())


# ------------------------------------------------------------------- the metric names --


def test_the_registry_holds_the_metrics_the_alerts_are_about() -> None:
    for name in (
        "ikd_kafka_consumer_lag",
        "ikd_identity_outbox_backlog",
        "ikd_gateway_access_outbox_backlog",
        "ikd_dead_letters_total",
        "ikd_gateway_webhook_retries_total",
        "ikd_audit_tree_head_age_seconds",
        "ikd_witness_alarms_total",
    ):
        assert name in EXPORTED, name
    assert EXPORTED["ikd_kafka_consumer_lag"] == {"group", "topic", "partition"}


def test_the_parser_finds_names_labels_and_refuses_nonsense() -> None:
    names, matched, grouping = parse_promql(
        'sum by (job, le) (rate(ikd_x_bucket{route=~"/v1/.*", status!="200"}[5m])) '
        "/ on (job) group_left max(ikd_y) > 0.5 and ikd_z offset 5m"
    )
    assert names == {"ikd_x_bucket", "ikd_y", "ikd_z"}
    assert matched == {"ikd_x_bucket": {"route", "status"}}
    assert grouping == {"job", "le"}
    for broken in ("rate(ikd_x[5m]", "sum(ikd_x))", "nosuchfunction(ikd_x)", "ikd_x{job=audit}"):
        with pytest.raises(ValueError):  # noqa: PT011 - any refusal
            parse_promql(broken)
    # a name the services do not export is caught by the test below
    assert "ikd_no_such_metric" not in EXPORTED


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_every_metric_a_dashboard_or_rule_names_is_exported(where: str, expr: str) -> None:
    names, matched, grouping = parse_promql(expr)
    assert names, f"{where}: no metric in {expr}"
    unknown = names - set(EXPORTED) - PROMETHEUS_SERIES
    assert not unknown, f"{where}: no service exports {sorted(unknown)}"
    for name, labels in matched.items():
        known = EXPORTED.get(name, set()) | TARGET_LABELS
        assert labels <= known, f"{where}: {name} has no label {sorted(labels - known)}"
    carried = set().union(*(EXPORTED.get(n, set()) for n in names)) | TARGET_LABELS
    assert grouping <= carried, f"{where}: no metric carries {sorted(grouping - carried)}"


# ------------------------------------------------------------------------- the rules --


def test_the_rules_file_has_the_shape_prometheus_loads() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    groups = [group["name"] for group in document["groups"]]
    assert len(groups) == len(set(groups))
    alerts = [rule["alert"] for rule in _rules()]
    assert len(alerts) == len(set(alerts)), "alert names are unique"
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert re.fullmatch(r"Ikd[A-Z]\w+", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "for" in rule:
                assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_the_alerts_cover_what_operators_watch() -> None:
    watched = " ".join(rule["expr"] for rule in _rules())
    for metric in (
        "ikd_kafka_consumer_lag",  # consumer lag
        "ikd_identity_outbox_backlog",  # outbox backlog
        "ikd_gateway_access_outbox_backlog",
        "ikd_dead_letters_total",  # dead letters
        "ikd_gateway_webhook_retries_total",  # webhook failures
        "ikd_gateway_webhook_dead_letters_total",
        "ikd_audit_tree_head_age_seconds",  # tree-head age
        "ikd_witness_alarms_total",  # witness alarms
    ):
        assert metric in watched, metric


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+\s+(.+)$", markdown, flags=re.MULTILINE)
    }


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _anchors(DOC.read_text())
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert REPO / path == DOC, url
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"docs/observability.md has no section {rule['alert']}"


# -------------------------------------------------------------------- the dashboards --


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboards_use_the_provisioned_datasource(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uids = {ds["uid"] for ds in datasources["datasources"] if ds["type"] == "prometheus"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids


def test_two_dashboards_cover_the_pipeline_and_the_audit_log() -> None:
    assert [p.stem for p in DASHBOARDS] == ["ikd-audit-log", "ikd-pipeline"]


# --------------------------------------------------------- the compose profile --


def test_the_profile_runs_prometheus_grafana_and_jaeger_only_when_asked() -> None:
    assert set(PROFILE) == {"prometheus", "grafana", "jaeger"}
    for name, service in PROFILE.items():
        assert service["profiles"] == ["observability"], name
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), "a pinned image"
        assert str(service["restart"]) == "unless-stopped"
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        for spec in service.get("ports", []):
            assert parse_port(spec)[0] == "127.0.0.1", f"{name} publishes beyond loopback"
    for name, service in STACK.items():
        for target in service.get("depends_on") or {}:
            assert target not in PROFILE, f"{name} must start without the profile"


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        found[target] = source
    return found


def test_prometheus_loads_the_rules_and_grafana_the_dashboards() -> None:
    prometheus = _mounts(PROFILE["prometheus"])
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert REPO / prometheus["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    for rule_file in config["rule_files"]:
        assert REPO / prometheus[rule_file] == ALERTS
    grafana = _mounts(PROFILE["grafana"])
    assert REPO / grafana["/etc/grafana/provisioning"] == PROVISIONING
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "ikd.yml").read_text())
    (path,) = [p["options"]["path"] for p in provider["providers"]]
    assert REPO / grafana[path] == OBSERVABILITY / "grafana" / "dashboards"
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    urls = {ds["type"]: ds["url"] for ds in datasources["datasources"]}
    assert urls["prometheus"] == "http://prometheus:9090"
    assert urls["jaeger"] == "http://jaeger:16686"
    env = environment(PROFILE["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer", "anonymous users only look"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path)
    assert (OBSERVABILITY / "grafana" / "dashboards" / Path(home).name).is_file()


def _metrics_port(service: dict[str, Any], job: str) -> int:
    env = environment(service)
    if job == "gateway-worker":
        return int(env["IKD_GATEWAY_WORKER_METRICS_PORT"])
    (port,) = [int(v) for k, v in env.items() if re.fullmatch(r"IKD_[A-Z]+_PORT", k)]
    return port


def test_prometheus_scrapes_every_service_at_its_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    scraped: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in STACK, f"{job['job_name']}: no service {host}"
                assert int(port) == _metrics_port(STACK[host], job["job_name"]), target
                if "agency" in static.get("labels", {}):
                    agency = environment(STACK[host])["IKD_GATEWAY_AGENCY"]
                    assert static["labels"]["agency"] == agency
                scraped.setdefault(job["job_name"], set()).add(host)
    gateways = {name for name in STACK if name.startswith("gateway-")}
    assert scraped == {
        "identity": {"identity"},
        "audit": {"audit"},
        "signer": {"signer"},
        "witness": {"witness"},
        "gateway": gateways,
        "gateway-worker": gateways,
    }


def test_services_export_spans_to_jaeger_only_when_told() -> None:
    exporters = [n for n, s in STACK.items() if "OTEL_EXPORTER_OTLP_ENDPOINT" in environment(s)]
    assert set(exporters) >= {"identity", "audit", "signer", "witness"} | {
        name for name in STACK if name.startswith("gateway-")
    }
    for name in exporters:
        value = environment(STACK[name])["OTEL_EXPORTER_OTLP_ENDPOINT"]
        off = {"OTEL_EXPORTER_OTLP_ENDPOINT": interpolate(value, {})}
        assert not telemetry.configured(off), f"{name} exports spans without the profile"
        endpoint = "http://jaeger:4318"
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": interpolate(value, {"IKD_OTLP_ENDPOINT": endpoint})}
        assert telemetry.configured(on)
        assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    jaeger = PROFILE["jaeger"]
    assert ("127.0.0.1", 4318, 4318) in [parse_port(spec) for spec in jaeger["ports"]]
    assert environment(jaeger)["JAEGER_LISTEN_HOST"] == "0.0.0.0"  # noqa: S104 - in its container
