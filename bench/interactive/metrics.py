"""The replicas' own view of a run, from Ray's Prometheus endpoint: embedding cache counters
by application, and cache bytes per replica sampled every second."""

from __future__ import annotations

import threading
from collections import defaultdict

from bench.harness import Prometheus

SERVER_COUNTERS = {
    "misses": "ray_sam3_embedding_cache_misses_total",
    "hits": "ray_sam3_embedding_cache_hits_total",
}


class Metrics:
    """Scrapes Ray's Prometheus endpoint; samples cache bytes per replica every second."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.samples = prometheus.samples
        self.peak_bytes: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def totals(self) -> dict[str, dict[str, float]]:
        """Server counters by application."""
        totals: dict[str, dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(SERVER_COUNTERS, 0.0)
        )
        names = {name: key for key, name in SERVER_COUNTERS.items()}
        for name, labels, value in self.samples():
            if name in names:
                totals[labels.get("application", "?")][names[name]] += value
        return dict(totals)

    def settled_totals(self) -> dict[str, dict[str, float]]:
        return Prometheus.settled(self.totals)

    def start(self, app: str) -> None:
        """Sample `app`'s cache bytes per replica, above each replica's level at the start."""
        self.app = app
        self.baseline = {
            self._replica(labels): value
            for name, labels, value in self.samples()
            if name == "ray_sam3_embedding_cache_bytes" and labels.get("application") == app
        }
        self.peak_bytes = defaultdict(float)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return dict(self.peak_bytes)

    @staticmethod
    def _replica(labels: dict[str, str]) -> str:
        return labels.get("replica", "?").split("#")[-1]

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            for name, labels, value in self.samples():
                if (
                    name == "ray_sam3_embedding_cache_bytes"
                    and labels.get("application") == self.app
                ):
                    replica = self._replica(labels)
                    added = value - self.baseline.get(replica, 0.0)
                    self.peak_bytes[replica] = max(self.peak_bytes[replica], added)
