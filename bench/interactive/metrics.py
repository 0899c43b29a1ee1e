"""The replicas' own view of a run, from Ray's Prometheus endpoint: embedding cache counters
and hand-off and embed times by application, and cache bytes per replica sampled every
second."""

from __future__ import annotations

import threading
from collections import defaultdict

from bench.harness import Prometheus

SERVER_COUNTERS = {
    "misses": "ray_sam3_embedding_cache_misses_total",
    "hits": "ray_sam3_embedding_cache_hits_total",
    "handoffs": "ray_sam3_embedding_cache_handoffs_total",
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

    def histogram_series(self, name: str, app: str, **labels: str) -> dict[str, list[float]]:
        """[sum, count] of histogram `name` per replica of `app` whose labels include
        `labels`."""
        series: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for sample, sample_labels, value in self.samples():
            suffix = sample[len(name) :]
            if (
                sample.startswith(name)
                and suffix in ("_sum", "_count")
                and sample_labels.get("application") == app
                and all(sample_labels.get(k) == v for k, v in labels.items())
            ):
                series[self._replica(sample_labels)][suffix == "_count"] += value
        return dict(series)

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


class HistogramWatch:
    """Histograms of an app's replicas, read every second while a run lasts, each replica's
    last reading kept: a replica that stops takes its series off Prometheus, not off here."""

    def __init__(self, metrics: Metrics, app: str, histograms: dict[str, tuple]) -> None:
        """`histograms`: a key -> (metric name, labels) to follow."""
        self.metrics = metrics
        self.app = app
        self.histograms = histograms
        self.last: dict[tuple[str, str], list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for key, (name, labels) in self.histograms.items():
            for replica, values in self.metrics.histogram_series(name, self.app, **labels).items():
                self.last[(key, replica)] = values

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._read()

    def stop(self) -> dict[str, dict[str, float | None]]:
        """Count and mean (ms) of each histogram over every replica seen."""
        self._stop.set()
        self._thread.join()
        self._read()
        out = {}
        for key in self.histograms:
            total, count = 0.0, 0.0
            for (k, _), (s, c) in self.last.items():
                if k == key:
                    total, count = total + s, count + c
            out[key] = {"count": count, "mean_ms": 1000 * total / count if count else None}
        return out
