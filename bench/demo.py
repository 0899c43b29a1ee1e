"""The demo model (`SAM3_CHECKPOINT=demo:shapes`, trained on synthetic shapes, not SAM3)
against random weights of the same architecture, on held-out scenes.

    python -m bench.demo            # 40 held-out scenes and 32 clips, ~8 min on one core
    python -m bench.demo --scenes 10
    python -m bench.demo --checkpoint /tmp/run.pt --no-random \
        --out bench/results/demo-run-name.json     # a run not shipped, ~4 min

Both models are loaded through `sam3_core.weights.load_model` (the demo model through the
same checkpoint path as sam3.pt) and called as the service calls them (`encode`, `decode`):
one click at each shape's centre (the point farthest from its edge), its box, and a
corrective click seeded with the first click's low-res logits (mean IoU with the
ground-truth masks over every instance); and concept queries (each shape name, kind and
colour present, one name absent, a box exemplar of each name) scored by F1 at mask IoU 0.5
at the service's default threshold, with each kind of query's precision and recall; shapes
moving through held-out clips, each clicked once on frame 0 and tracked through the
service's video sessions (J, `evaluate.tracking_scores`); and where the demo model's IoU is
lost (`evaluate.diagnosis`).
Writes bench/results/demo.json, with the training record's facts (steps, wall and CPU
time, checkpoint size) from `sam3_core/demo/shapes.json`; `--checkpoint` scores another
run's checkpoint the same way, its record read from beside it (`run.json`), so that the
runs not shipped are compared from results too, not from figures copied by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sam3_core.demo import evaluate
from sam3_core.settings import EngineSettings
from sam3_core.weights import checkpoint_path, load_model

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--clips", type=int, default=32, help="held-out clips tracked")
    parser.add_argument(
        "--checkpoint", default="demo:shapes", help="demo:shapes or a run's .pt (record beside)"
    )
    parser.add_argument(
        "--random",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score random weights of the same architecture too",
    )
    parser.add_argument("--out", default=str(RESULTS / "demo.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = checkpoint_path(args.checkpoint)
    record = json.loads(checkpoint.with_suffix(".json").read_text())
    models = {"demo": EngineSettings(checkpoint=args.checkpoint, device="cpu")}
    if args.random:
        models["random"] = EngineSettings(
            random_weights=record["architecture"], random_seed=0, device="cpu"
        )
    scores = {}
    for name, settings in models.items():
        started = time.perf_counter()
        model = load_model(settings)
        scores[name] = evaluate.scores(model, args.scenes)
        scores[name]["concepts"] = evaluate.concept_scores(model, args.scenes)
        scores[name]["tracking"] = evaluate.tracking_scores(settings, args.clips)
        scores[name]["seconds"] = round(time.perf_counter() - started, 1)
    result = {
        "model": record["model"],
        "architecture": record["architecture"],
        "checkpoint": args.checkpoint,
        "checkpoint_bytes": checkpoint.stat().st_size,
        "training": {
            key: record.get(key)
            for key in (
                "seed",
                "init",
                "steps",
                "batch",
                "objects_per_scene",
                "hint_fade",
                "threads",
                "workers",
                "stage1_workers",
                "concept_steps",
                "concept_batch",
                "concept_queries_per_scene",
                "track_steps",
                "track_batch",
                "track_phases",
                "stage1_wall_seconds",
                "stage3_wall_seconds",
                "wall_seconds",
                "process_cpu_seconds",
                "trained",
            )
        },
        "scores": scores,
        "diagnosis": evaluate.diagnosis(load_model(models["demo"]), args.scenes),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(scores, indent=1))
    return result


if __name__ == "__main__":
    main()
