"""The Grafana dashboard (k8s/monitoring/grafana-dashboard.json), its PromQL targets, and the
metric names they may read: this project's (deployments/metrics.py) and Ray's own."""

from __future__ import annotations

import ast
import json
from typing import Any

from tests.k8s.project import K8S, ROOT


def sam3_metric_names() -> set[str]:
    """The Prometheus names of deployments/metrics.py's metrics, as Ray exports them."""
    suffixes = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for node in ast.walk(ast.parse((ROOT / "deployments" / "metrics.py").read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in suffixes
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names |= {f"ray_{node.args[0].value}{s}" for s in suffixes[node.func.attr]}
    return names


# Ray's own metrics the dashboard reads: exported name -> (file in the ray package, the text
# that defines it), checked against the installed Ray so a Ray upgrade that renames one fails.
RAY_METRICS = {
    "ray_serve_num_http_requests_total": (
        "serve/_private/request_ingress_metrics.py",
        'f"serve_num_{protocol_name}_requests"',
    ),
    "ray_serve_http_request_latency_ms_bucket": (
        "serve/_private/request_ingress_metrics.py",
        'f"serve_{protocol_name}_request_latency_ms"',
    ),
    "ray_serve_deployment_replica_healthy": (
        "serve/_private/deployment_state.py",
        '"serve_deployment_replica_healthy"',
    ),
    "ray_serve_autoscaling_target_replicas": (
        "serve/_private/deployment_state.py",
        '"serve_autoscaling_target_replicas"',
    ),
    "ray_node_gpus_utilization": (
        "dashboard/modules/reporter/reporter_agent.py",
        '"node_gpus_utilization"',
    ),
}


def dashboard() -> dict[str, Any]:
    return json.loads((K8S / "monitoring" / "grafana-dashboard.json").read_text())


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every target of the dashboard."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]
