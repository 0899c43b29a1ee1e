"""The Grafana dashboard shows what operators need, reads only metrics that exist (this
project's and the installed Ray's), and its PromQL parses."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.k8s.dashboard import RAY_METRICS, dashboard, dashboard_targets, sam3_metric_names


def test_dashboard_shows_cache_throughput_latency_and_replicas():
    titles = {panel["title"] for panel in dashboard()["panels"]}
    assert {
        "Embedding cache hit rate",
        "Embeddings per second",
        "Click latency (end to end)",
        "Replicas",
    } <= titles
    by_title = {title: expr for title, expr in dashboard_targets()}
    assert "ray_sam3_embedding_cache_hits_total" in by_title["Embedding cache hit rate"]
    assert "ray_sam3_embed_latency_seconds_count" in by_title["Embeddings per second"]
    click = [expr for title, expr in dashboard_targets() if title == "Click latency (end to end)"]
    quantiles = [re.findall(r"histogram_quantile\((0\.\d+)", expr) for expr in click]
    assert quantiles == [["0.5"], ["0.95"], ["0.99"]]


def test_dashboard_reads_only_exported_metrics():
    ray_package = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    for name, (source, definition) in RAY_METRICS.items():
        assert definition in (ray_package / source).read_text(), f"{name}: Ray no longer defines it"
    known = sam3_metric_names() | set(RAY_METRICS)
    assert {
        "ray_sam3_embedding_cache_hits_total",
        "ray_sam3_decode_latency_seconds_bucket",
    } <= known
    for title, expr in dashboard_targets():
        # Metric names, not the label names of selectors and `by (...)` clauses.
        names = re.sub(r"\{[^}]*\}|\b(by|without) \([^)]*\)", "", expr)
        unknown = set(re.findall(r"\bray_[a-z0-9_]+", names)) - known
        assert not unknown, f"{title}: {unknown}"
        for quantile in re.findall(r"histogram_quantile\(([^;]*)", expr):
            assert "_bucket" in quantile and "by (le)" in quantile, title


def test_dashboard_datasource_is_a_variable():
    board = dashboard()
    assert any(v["type"] == "datasource" for v in board["templating"]["list"])
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_promql_parses():
    try:
        import promql_parser
    except ImportError:
        unavailable("promql-parser not installed: the PromQL syntax check needs it")
    for title, expr in dashboard_targets():
        concrete = (
            expr.replace("$__rate_interval", "1m")
            .replace("$namespace", "default")
            .replace("$application", "sam3")
        )
        try:
            promql_parser.parse(concrete)
        except ValueError as error:
            pytest.fail(f"{title}: {error}: {expr}")
