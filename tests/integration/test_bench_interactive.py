"""bench/interactive --quick, as CI runs it: on any machine, consistent hashing computes
each image's embedding once; Serve's autoscaler takes the segmenter from 1 to 3 replicas and
back, and no image is embedded again nor answered 404 by id across those events (hand-off);
helpers of a hot image never embed it. The JSON report has every field. (Latencies depend on
the machine and are not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A Ray instance of its own, not the session's cluster (not `ray`): under xdist it runs
# beside the tests on that cluster.
pytestmark = pytest.mark.slow
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
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # Its own Ray instance, not the test session's cluster (which a bare ray.init would join);
    # its results beside the test, not over the committed ones BENCHMARKS.md renders.
    results = tmp_path_factory.mktemp("interactive")
    env = {**os.environ, "RAY_ADDRESS": "local"}
    subprocess.run(
        [sys.executable, "-m", "bench.interactive", "--quick", "--results", str(results)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    return json.loads((results / "interactive-quick.json").read_text())


def test_the_report_has_every_field(report):
    assert {"command", "machine", "model", "workload", "runs", "scale", "hot", "plots"} <= set(
        report
    )
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
        assert {
            "t",
            "replicas",
            "from_replicas",
            "live_images",
            "moved",
            "re_embedded",
            "expected_moved",
            "not_found_after",
        } <= set(event)
    for run in report["hot"]["runs"]:
        assert {"images", "variant", "click", "embeddings_computed", "clicks_on_helpers"} <= set(
            run
        )
    for plot in report["plots"]:
        assert (ROOT / plot).stat().st_size > 10_000


def test_ours_embeds_each_image_once(report):
    (ours,) = [r for r in report["runs"] if r["router"] == "consistent_hash"]
    assert ours["embeddings_computed"] == ours["unique_images"]
    assert ours["embeddings_computed_server"] == ours["embeddings_computed"]
    assert ours["embeddings_per_unique_image"] == 1.0
    assert ours["errors_by_status"] == {}


def test_the_autoscaler_scales_out_and_in_and_images_are_handed_off(report):
    scale = report["scale"]
    replicas = [step["replicas"] for step in scale["replicas_timeline"]]
    assert replicas[0] == 1 and max(replicas) == 3 and replicas[-1] == 1, replicas
    outs = [e for e in scale["scale_events"] if e["replicas"] > e["from_replicas"]]
    ins = [e for e in scale["scale_events"] if e["replicas"] < e["from_replicas"]]
    assert outs and ins
    assert sum(e["moved"] for e in outs) > 0 and sum(e["moved"] for e in ins) > 0
    # Every image embedded once, whatever the events: none lost, none re-embedded.
    assert scale["re_embedded"] == 0, scale["re_embedded"]
    # An image no answer showed embedded must be one whose embed the load generator sent
    # again after a failed attempt (status 0, a lost answer, or 503), then answered from the
    # picture that attempt stored.
    unseen = scale["images_not_seen_embedded"]
    for image, requests in unseen.items():
        statuses = [status for _, status, _ in requests]
        assert {0, 503} & set(statuses), (image, requests)
        first = min(statuses.index(s) for s in (0, 503) if s in statuses)
        assert any(
            status == 200 and cache in ("hit", "handoff") for _, status, cache in requests[first:]
        ), (image, requests)
    assert scale["embeddings_computed"] + len(unseen) == scale["unique_images"], unseen
    # ... and no click by id had to re-send its image.
    assert scale["not_found_after_scale_events"] == 0
    assert scale["handoff_ms_per_image"]["count"] > 0
    assert scale["handoff_outcomes"] > 0


def test_helpers_of_a_hot_image_never_embed_it(report):
    runs = {(r["images"], r["variant"]): r for r in report["hot"]["runs"]}
    for (images, _), run in runs.items():
        assert run["embeddings_computed"] == images, run
        assert run["embeddings_computed_server"] == images, run
        assert run["errors_by_status"] == {}
    for images in {images for images, _ in runs}:
        assert runs[(images, "hot-strict")]["clicks_on_helpers"] == 0
        assert runs[(images, "hot-bounded")]["clicks_on_helpers"] > 0
