"""The report's two plots: embeddings per image by router, and latency through the scale
events."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from bench.interactive.scenario import ROUTERS


def plot(report: dict, results: Path, stem: str) -> list[str]:
    """Writes `<stem>-embeddings.png` and `<stem>-scale-latency.png` into `results`; returns
    their paths relative to the repository (the parent of `results`' parent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    runs = report["runs"]
    counts = sorted({r["replicas"] for r in runs})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(ROUTERS)
    for i, router in enumerate(ROUTERS):
        values = [
            next(
                (
                    r["embeddings_per_unique_image"]
                    for r in runs
                    if r["router"] == router and r["replicas"] == n
                ),
                0,
            )
            for n in counts
        ]
        ax.bar(np.arange(len(counts)) + i * width, values, width, label=router)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(np.arange(len(counts)) + width, [f"R = {n}" for n in counts])
    ax.set_ylabel("embeddings computed per unique image")
    ax.set_title("Embeddings per image by router (1.00 is ideal)")
    ax.legend()
    fig.tight_layout()
    path = results / f"{stem}-embeddings.png"
    fig.savefig(path, dpi=120)
    paths.append(str(path.relative_to(results.parent.parent)))
    plt.close(fig)

    scale = report["scale"]
    timeline = scale["timeline"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for kind, colour in (("click", "tab:blue"), ("embed", "tab:orange")):
        points = [(e["t"], e["latency_ms"]) for e in timeline if e["kind"] == kind]
        if points:
            ax.scatter(*zip(*points, strict=True), s=6, alpha=0.5, color=colour, label=kind)
    clicks = sorted((e["t"], e["latency_ms"]) for e in timeline if e["kind"] == "click")
    if clicks:
        edges = np.arange(0, clicks[-1][0] + 2, 2.0)
        centres, medians = [], []
        for lo, hi in itertools.pairwise(edges):
            window = [ms for t, ms in clicks if lo <= t < hi]
            if window:
                centres.append((lo + hi) / 2)
                medians.append(np.median(window))
        ax.plot(centres, medians, color="black", label="click p50 (2 s windows)")
    for event in scale["scale_events"]:
        ax.axvline(event["t"], color="red", linestyle="--")
        ax.text(
            event["t"], ax.get_ylim()[1] * 0.9, f" -> {event['replicas']} replicas", color="red"
        )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Ours (consistent hashing) through a scale-out and a scale-in")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = results / f"{stem}-scale-latency.png"
    fig.savefig(path, dpi=120)
    paths.append(str(path.relative_to(results.parent.parent)))
    plt.close(fig)
    return paths
