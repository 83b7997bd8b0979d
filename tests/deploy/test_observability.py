"""deploy/grafana and deploy/prometheus use only the metric names the services expose.

The list below is the contract between the code and the dashboards/alerts: a metric that
is renamed in the worker or the receiver must be renamed here, in the dashboard, in the
alerts and in docs/operations.md, or these tests fail. promtool is not available: every
expression is parsed with ``promql-parser`` (Python binding of a Rust PromQL parser) and
its syntax tree walked for metric and label names.
"""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy.manifests import DEPLOY, REPO

# name -> (kind, labels); kind is counter, gauge or histogram
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    # worker
    "ics_sms_worker_messages_consumed_total": ("counter", frozenset({"lane"})),
    "ics_sms_worker_outcomes_total": ("counter", frozenset({"sender", "outcome"})),
    "ics_sms_ics_requests_total": ("counter", frozenset({"sender", "code"})),
    "ics_sms_ics_request_duration_seconds": ("histogram", frozenset({"sender"})),
    "ics_sms_ics_batch_size": ("histogram", frozenset()),
    "ics_sms_worker_batches_in_flight": ("gauge", frozenset({"lane"})),
    # receiver
    "ics_sms_receipts_total": ("counter", frozenset({"sender", "status"})),
    "ics_sms_receipts_refused_total": ("counter", frozenset({"reason"})),
    "ics_sms_receiver_requests_total": ("counter", frozenset({"route", "code"})),
    "ics_sms_receiver_publish_duration_seconds": ("histogram", frozenset()),
    "ics_sms_clicks_total": ("counter", frozenset({"sender"})),
    # message store (workers, receiver, sweeper)
    "ics_sms_message_finals_total": ("counter", frozenset({"state", "code"})),
    # RabbitMQ's prometheus plugin (prometheus.return_per_object_metrics = true)
    "rabbitmq_queue_messages_ready": ("gauge", frozenset({"queue", "vhost"})),
    "rabbitmq_queue_messages_unacked": ("gauge", frozenset({"queue", "vhost"})),
    "rabbitmq_alarms_memory_used_watermark": ("gauge", frozenset()),
    "rabbitmq_alarms_free_disk_space_watermark": ("gauge", frozenset()),
}
OUTCOMES = {"submitted", "rejected", "retried", "dead_lettered", "expired", "failed", "parked",
            "requeued"}

_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def parse(expr: str) -> Any:
    """The PromQL syntax tree of ``expr`` (Grafana's interval variables replaced)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def _walk(node: Any, names: set[str], labels: set[str]) -> None:
    kind = type(node).__name__
    if kind == "VectorSelector":
        names.add(node.name)
        labels.update(m.name for m in node.matchers.matchers)
    elif kind == "MatrixSelector":
        _walk(node.vector_selector, names, labels)
    elif kind == "Call":
        for arg in node.args:
            _walk(arg, names, labels)
    elif kind == "AggregateExpr":
        if node.modifier is not None:
            labels.update(node.modifier.labels)
        _walk(node.expr, names, labels)
    elif kind == "BinaryExpr":
        if node.modifier is not None:
            if node.modifier.matching is not None:
                labels.update(node.modifier.matching.labels)
            labels.update(node.modifier.group_labels or ())
        _walk(node.lhs, names, labels)
        _walk(node.rhs, names, labels)
    elif kind in {"ParenExpr", "UnaryExpr", "SubqueryExpr"}:
        _walk(node.expr, names, labels)
    elif kind not in {"NumberLiteral", "StringLiteral"}:
        raise TypeError(f"unexpected PromQL node {kind}")


def selected(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression selects and the label names it matches or groups by."""
    names: set[str] = set()
    labels: set[str] = set()
    _walk(parse(expr), names, labels)
    return names, labels - {"le"}


def series_names(expr: str) -> set[str]:
    return selected(expr)[0]


def known(series: str) -> bool:
    if series in METRICS:
        return METRICS[series][0] != "histogram"
    for suffix in _HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if series.endswith(suffix) and METRICS.get(base, ("", ""))[0] == "histogram":
            return True
    return False


def labels_of(series: str) -> frozenset[str]:
    for suffix in ("", *_HISTOGRAM_SERIES):
        base = series.removesuffix(suffix) if suffix else series
        if base in METRICS and series.endswith(suffix):
            return METRICS[base][1]
    return frozenset()


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "ics-sms.json").read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


# -- the tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names", "labels"),
    [
        ('sum by (lane) (rate(a_total{x="y"}[5m]))', {"a_total"}, {"lane", "x"}),
        ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[$__rate_interval])))",
         {"h_bucket"}, set()),
        ("sum(rate(a[5m])) / on (j) sum(rate(b[5m])) > 0.05 or c offset 1h", {"a", "b", "c"},
         {"j"}),
        ('max(g{queue=~"sms\\\\.send.*"}) > 1e3', {"g"}, {"queue"}),
    ],
)
def test_selected(expr: str, names: set[str], labels: set[str]) -> None:
    assert selected(expr) == (names, labels)


def test_a_syntax_error_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse("sum(rate(x[5m])")


def test_known_accepts_histogram_series_only_with_their_suffixes() -> None:
    assert known("ics_sms_ics_batch_size_bucket")
    assert not known("ics_sms_ics_batch_size")
    assert not known("ics_sms_worker_outcomes_total_bucket")
    assert known("rabbitmq_queue_messages_ready")


# -- dashboard -------------------------------------------------------------------------------


def test_the_dashboard_is_grafana_json_with_panels() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ics-sms.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert len(dashboard_exprs()) >= 10


def test_the_dashboard_uses_only_known_metrics() -> None:
    for expr in dashboard_exprs():
        assert series_names(expr), expr
        unknown = {s for s in series_names(expr) if not known(s)}
        assert unknown == set(), expr


def test_the_dashboard_uses_only_labels_the_metrics_have() -> None:
    for expr in dashboard_exprs():
        names, labels = selected(expr)
        assert labels <= set().union(*(labels_of(n) for n in names)), expr


def test_the_dashboard_shows_every_metric() -> None:
    used = {s for e in dashboard_exprs() for s in series_names(e)}
    bases = {s.removesuffix(x) for s in used for x in _HISTOGRAM_SERIES if s.endswith(x)}
    assert set(METRICS) - used - bases == set()


# -- alerts ----------------------------------------------------------------------------------


def test_every_alert_rule_is_complete() -> None:
    rules = alert_rules()
    assert len(rules) >= 4
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]


def test_the_alerts_use_only_known_metrics_and_labels() -> None:
    for rule in alert_rules():
        names, labels = selected(rule["expr"])
        assert names and all(known(n) for n in names), rule["alert"]
        assert labels <= set().union(*(labels_of(n) for n in names)), rule["alert"]


def test_the_required_alerts_exist() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert any('outcome="dead_lettered"' in e for e in exprs.values())
    assert any('queue="sms.dead"' in e for e in exprs.values())
    assert any("ics_sms_ics_requests_total" in e and "0.05" in e for e in exprs.values())
    assert any("rabbitmq_queue_messages_ready" in e and "sms.send" in e for e in exprs.values())
    assert any("ics_sms_receiver_requests_total" in e and '"5.."' in e for e in exprs.values())
    assert any("rabbitmq_alarms_memory_used_watermark" in e for e in exprs.values())
    assert any("rabbitmq_alarms_free_disk_space_watermark" in e for e in exprs.values())
    # the service lane's lag counts the messages workers hold (unacked) too
    service_lag = [e for e in exprs.values() if 'queue="sms.send.service"' in e]
    assert service_lag and all("rabbitmq_queue_messages_unacked" in e for e in service_lag)


def test_outcome_values_in_queries_are_known() -> None:
    texts = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    for text in texts:
        for value in re.findall(r'outcome="(\w+)"', text):
            assert value in OUTCOMES, text


# -- the runbook -----------------------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings."""
    result = set()
    for heading in re.findall(r"^#+\s+(.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        result.add(slug)
    return result


def test_every_alert_links_to_a_runbook_section() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    for rule in alert_rules():
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md", rule["alert"]
        assert anchor in anchors(operations), rule["alert"]
        assert rule["alert"] in operations, rule["alert"]


def test_the_operations_guide_explains_every_metric() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    for metric in METRICS:
        assert f"`{metric}" in operations, metric
