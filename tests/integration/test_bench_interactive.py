"""bench/interactive --quick, as CI runs it: on any machine, consistent hashing computes
each image's embedding once, and again only when a scale event moves the image; the JSON
report has every field. (Latencies depend on the machine and are not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).parents[2]

RUN_FIELDS = {
    "router",
    "replicas",
    "unique_images",
    "embeddings_computed",
    "embeddings_computed_server",
    "embeddings_per_unique_image",
    "embedding_cache_hit_rate",
    "logits_cache_hit_rate",
    "latency",
    "throughput_rps",
    "errors_by_status",
    "peak_cache_bytes_per_replica",
}


@pytest.fixture(scope="module")
def report() -> dict:
    # Its own Ray instance, not the test session's cluster (which a bare ray.init would join).
    env = {**os.environ, "RAY_ADDRESS": "local"}
    subprocess.run(
        [sys.executable, "-m", "bench.interactive", "--quick"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    return json.loads((ROOT / "bench/results/interactive-quick.json").read_text())


def test_the_report_has_every_field(report):
    assert {"command", "machine", "model", "workload", "runs", "scale", "plots"} <= set(report)
    assert report["model"]["weights"] == "random" and report["model"]["ratio"] > 1
    assert {r["router"] for r in report["runs"]} == {
        "consistent_hash",
        "power_of_two",
        "round_robin",
    }
    for run in report["runs"] + [report["scale"]]:
        assert set(run) >= RUN_FIELDS, RUN_FIELDS - set(run)
        assert {"p50_ms", "p95_ms", "p99_ms"} <= set(run["latency"]["click"])
        assert {"p50_ms", "p95_ms", "p99_ms"} <= set(run["latency"]["embed"])
    for event in report["scale"]["scale_events"]:
        assert {"t", "replicas", "live_images", "moved", "re_embedded", "expected_moved"} <= set(
            event
        )
    for plot in report["plots"]:
        assert (ROOT / plot).stat().st_size > 10_000


def test_ours_embeds_each_image_once(report):
    (ours,) = [r for r in report["runs"] if r["router"] == "consistent_hash"]
    assert ours["embeddings_computed"] == ours["unique_images"]
    assert ours["embeddings_computed_server"] == ours["embeddings_computed"]
    assert ours["embeddings_per_unique_image"] == 1.0
    assert ours["errors_by_status"] == {}


def test_ours_embeds_again_only_after_scale_events(report):
    scale = report["scale"]
    assert [e["replicas"] for e in scale["scale_events"]] == [3, 2]
    # Every embedding beyond an image's first coincides with the image changing replica ...
    assert scale["images_embedded_beyond_owner_changes"] == 0
    # ... and images change replica only once the ring has changed.
    assert scale["owner_changes_before_first_scale_event"] == 0
    assert scale["embeddings_computed"] >= scale["unique_images"]
