"""The report's plots: embeddings per image by router, latency through the autoscaler's scale
events, and click latency on hot images with strict affinity and with the load bound."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from bench.interactive.scenario import ROUTERS

ROOT = Path(__file__).parents[2]


def plot(report: dict, results: Path, stem: str) -> list[str]:
    """Writes `<stem>-embeddings.png`, `<stem>-scale-latency.png` and `<stem>-hot.png` (for
    the parts the report has) into `results`; returns their paths, relative to the
    repository where `results` is in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: object, name: str) -> None:
        fig.tight_layout()
        path = results / f"{stem}-{name}.png"
        fig.savefig(path, dpi=120)
        paths.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
        plt.close(fig)

    paths: list[str] = []
    if "runs" in report:
        embeddings(plt, report["runs"], save)
    if "scale" in report:
        scale_latency(plt, report["scale"], save)
    if "hot" in report:
        hot(plt, report["hot"], save)
    return paths


def embeddings(plt: object, runs: list[dict], save: object) -> None:
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
    save(fig, "embeddings")


def scale_latency(plt: object, scale: dict, save: object) -> None:
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
        label = f" {event.get('from_replicas', '')}→{event['replicas']}"
        ax.text(event["t"], ax.get_ylim()[1] * 0.9, label, color="red")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Ours through the autoscaler's scale-out and scale-in (images handed off)")
    ax.legend(loc="upper left")
    steps = scale["replicas_timeline"]
    if steps:
        replicas = ax.twinx()
        end = max((e["t"] for e in timeline), default=steps[-1]["t"])
        replicas.step(
            [s["t"] for s in steps] + [end],
            [s["replicas"] for s in steps] + [steps[-1]["replicas"]],
            where="post",
            color="grey",
            alpha=0.6,
        )
        replicas.set_ylabel("segmenter replicas", color="grey")
        replicas.set_ylim(0, max(s["replicas"] for s in steps) + 1)
    save(fig, "scale-latency")


def hot(plt: object, hot_report: dict, save: object) -> None:
    runs = hot_report["runs"]
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [f"{run['images']} image(s)\n{run['variant'].removeprefix('hot-')}" for run in runs]
    x = np.arange(len(runs))
    for i, (key, label) in enumerate((("p50_ms", "click p50"), ("p99_ms", "click p99"))):
        ax.bar(x + (i - 0.5) * 0.35, [run["click"][key] for run in runs], 0.35, label=label)
    ax.set_xticks(x, names)
    ax.set_ylabel("ms")
    workload = hot_report["workload"]
    ax.set_title(
        f"{workload['annotators']} annotators on shared images, R = {workload['replicas']}: "
        f"strict affinity vs load bound {hot_report['load_factor']}"
    )
    ax.legend()
    save(fig, "hot")
