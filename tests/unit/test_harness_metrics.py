"""`bench.harness.Prometheus`: the scrape the benchmarks and Ray tests read the replicas'
metrics through keeps only the named metrics, whole (histograms with their buckets)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.harness import Prometheus

EXPOSITION = """\
# HELP ray_node_cpu_utilization Total CPU usage.
# TYPE ray_node_cpu_utilization gauge
ray_node_cpu_utilization{ip="10.0.0.1"} 12.5
# HELP ray_sam3_embedding_cache_bytes Bytes held by the embedding cache.
# TYPE ray_sam3_embedding_cache_bytes gauge
ray_sam3_embedding_cache_bytes{replica="sam3#Segmenter#abc"} 6635520.0
# HELP ray_sam3_embed_latency_seconds Embed time.
# TYPE ray_sam3_embed_latency_seconds histogram
ray_sam3_embed_latency_seconds_bucket{le="0.5",replica="abc"} 3.0
ray_sam3_embed_latency_seconds_bucket{le="+Inf",replica="abc"} 4.0
ray_sam3_embed_latency_seconds_count{replica="abc"} 4.0
ray_sam3_embed_latency_seconds_sum{replica="abc"} 1.75
# HELP ray_serve_num_http_requests_total Requests.
# TYPE ray_serve_num_http_requests_total counter
ray_serve_num_http_requests_total{route="/sam3"} 9.0
"""


@pytest.fixture
def endpoint():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_only_the_named_metrics_are_read_whole(endpoint):
    samples = Prometheus([endpoint]).samples()
    assert samples == [
        ("ray_sam3_embedding_cache_bytes", {"replica": "sam3#Segmenter#abc"}, 6635520.0),
        ("ray_sam3_embed_latency_seconds_bucket", {"le": "0.5", "replica": "abc"}, 3.0),
        ("ray_sam3_embed_latency_seconds_bucket", {"le": "+Inf", "replica": "abc"}, 4.0),
        ("ray_sam3_embed_latency_seconds_count", {"replica": "abc"}, 4.0),
        ("ray_sam3_embed_latency_seconds_sum", {"replica": "abc"}, 1.75),
    ]
    serve = Prometheus([endpoint]).samples(prefix="ray_serve_")
    assert serve == [("ray_serve_num_http_requests_total", {"route": "/sam3"}, 9.0)]
