"""Concept segmentation: what to cache per image, and a query on a kept embedding against
Roboflow's way (the whole model on every request). Random weights.

    python -m bench.concept           # narrow preset (1008 px, narrow widths): ~3 minutes
    python -m bench.concept --full    # and the full-size architecture: ~10 more minutes

Writes bench/results/concept.json. Each architecture is measured in its own process (one
torch thread, as a replica with `segmenter_cpus: 1`), so that its resident memory is its own:

1. Cache options, side by side on one image: (a) the ViT trunk's output only, both necks
   recomputed per request; (b) both necks' outputs (the SAM2-style neck's, as clicks read
   it, and the detector neck's three levels); (c) the SAM2-style neck's output and the trunk's,
   the detector neck recomputed per concept query. Bytes per image, and the time of a click
   and of a one-text concept query under each.
2. Through the engine: a concept query on an embedded image (text cache warm: a project
   reuses its class names) against the whole forward per request (image decoded and embedded,
   texts encoded, detector), for 1 and 5 texts.
3. Interactive-only against interactive + concepts: parameters, resident memory after the
   build and after embedding one image, bytes per cached image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench import child as child_process

RESULTS = Path(__file__).parent / "results" / "concept.json"
MiB = 2**20
TEXTS = ["car", "person", "bicycle", "traffic light", "dog"]
HEIGHT, WIDTH = 768, 1024


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm-up
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(seconds) * 1000, "min_ms": min(seconds) * 1000}


def rss() -> int:
    import psutil

    memory = psutil.Process().memory_info()
    return memory.rss - getattr(memory, "shared", 0)


def child(preset: str, concepts: bool, repeat: int) -> dict:
    """One architecture, one build, in this process."""
    import numpy as np
    import torch

    from bench.samples import random_image
    from sam3_core import EmbedRequest, EngineSettings, Segmenter
    from sam3_core.architecture import count_parameters
    from sam3_core.caches import TextEmbeddingCache
    from sam3_core.calls import ConceptRequest
    from sam3_core.concept_model import ConceptQueries, instances
    from sam3_core.concept_prompts import ConceptPrompt, exemplar_arrays

    torch.set_num_threads(1)
    before = rss()
    settings = EngineSettings(
        random_weights=preset,
        concepts=concepts,
        device="cpu",
        max_hole_area=0,
        embedding_cache_bytes=2**30,
        release_freed_memory=True,
    )
    engine = Segmenter.from_settings(settings)
    model = engine.model
    built = rss()
    data = random_image(0, HEIGHT, WIDTH)
    started = time.perf_counter()
    image_id = engine.embed(EmbedRequest(image=data, image_id="bench")).image_id
    embed_s = time.perf_counter() - started
    embedding = engine.embeddings.get(image_id).embedding  # type: ignore[union-attr]
    report = {
        "preset": preset,
        "concepts": concepts,
        "parameters_m": count_parameters(model) / 1e6,
        "private_memory_built_mib": (built - before) / MiB,
        "private_memory_one_image_mib": (rss() - before) / MiB,
        "cached_bytes_per_image": embedding.nbytes,
        "embed_ms": embed_s * 1000,
    }
    if not concepts:
        return report

    concepts_model = model.concepts
    assert concepts_model is not None and embedding.trunk is not None
    trunk = embedding.trunk
    interactive = model.embedding_from_trunk(trunk, embedding.orig_hw)
    detector = concepts_model.detector_features(trunk)
    point = np.array([[[500.0, 400.0]]])
    labels = np.ones((1, 1), np.int32)
    (text,) = concepts_model.encode_texts(["car"])
    prompts = [ConceptPrompt(text="car")]
    queries = ConceptQueries(texts=[text], exemplars=exemplar_arrays(prompts, embedding.orig_hw))

    def click(source: Callable[[], object]) -> Callable[[], object]:
        return lambda: model.decode(source(), point_coords=point, point_labels=labels)

    def query(features: Callable[[], object]) -> Callable[[], object]:
        return lambda: instances(
            concepts_model.ground(features(), queries), embedding.orig_hw, [0.5], 100, 2**31
        )

    def nbytes(tensor: torch.Tensor) -> int:
        return tensor.numel() * tensor.element_size()

    options = {
        "a_trunk_only": {
            "bytes_per_image": nbytes(trunk),
            "click": timed(
                click(lambda: model.embedding_from_trunk(trunk, embedding.orig_hw)), repeat
            ),
            "concept_query": timed(query(lambda: concepts_model.detector_features(trunk)), repeat),
        },
        "b_both_necks": {
            "bytes_per_image": interactive.nbytes + detector.nbytes,
            "click": timed(click(lambda: interactive), repeat),
            "concept_query": timed(query(lambda: detector), repeat),
        },
        "c_sam2_neck_and_trunk": {
            "bytes_per_image": interactive.nbytes + nbytes(trunk),
            "click": timed(click(lambda: interactive), repeat),
            "concept_query": timed(query(lambda: concepts_model.detector_features(trunk)), repeat),
        },
    }
    stages = {
        "sam2_neck": timed(lambda: model.embedding_from_trunk(trunk, embedding.orig_hw), repeat),
        "detector_neck": timed(lambda: concepts_model.detector_features(trunk), repeat),
        "text_encoder_one_text": timed(lambda: concepts_model.encode_texts(["car"]), repeat),
    }

    def ours(texts: list[str]) -> Callable[[], object]:
        request = ConceptRequest(
            image_id=image_id, prompts=tuple(ConceptPrompt(text=t) for t in texts)
        )
        return lambda: engine.concept_segment(request)

    def roboflows(texts: list[str]) -> Callable[[], object]:
        """The whole model per request: the image decoded and embedded, every text encoded."""
        request = ConceptRequest(
            image=data, image_id="whole", prompts=tuple(ConceptPrompt(text=t) for t in texts)
        )

        def call() -> object:
            engine.embeddings.discard("whole")
            engine.texts = TextEmbeddingCache(settings.text_cache_bytes)
            result = engine.concept_segment(request)
            assert result.embedding_cache == "miss" and result.text_cache == "miss"
            return result

        return call

    per_request = {}
    for count in (1, 5):
        texts = TEXTS[:count]
        per_request[f"{count}_texts"] = {
            "on_embedded_image": timed(ours(texts), repeat),
            "whole_model_per_request": timed(roboflows(texts), max(2, repeat // 4)),
        }
    report.update(
        {
            "detector_neck_bytes_per_image": detector.nbytes,
            "interactive_embedding_bytes": interactive.nbytes,
            "trunk_bytes": nbytes(trunk),
            "cache_options": options,
            "stages": stages,
            "concept_query": per_request,
        }
    )
    return report


def run_child(preset: str, concepts: bool, repeat: int) -> dict:
    args = ("--child", preset, str(int(concepts)), str(repeat))
    return child_process.run_child("bench.concept", *args, env={"MALLOC_ARENA_MAX": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the full-size architecture")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, concepts, repeat = args.child
        print(json.dumps(child(preset, bool(int(concepts)), int(repeat))))
        return
    runs = [("narrow", 20)] + ([("full", 3)] if args.full else [])
    report = {"image": [HEIGHT, WIDTH], "threads": 1, "architectures": {}}
    for preset, repeat in runs:
        report["architectures"][preset] = {
            "interactive_only": run_child(preset, False, repeat),
            "interactive_and_concepts": run_child(preset, True, repeat),
        }
        print_report(preset, report["architectures"][preset])
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def print_report(preset: str, runs: dict) -> None:
    off, on = runs["interactive_only"], runs["interactive_and_concepts"]
    print(f"\n== {preset}")
    for name, r in (("interactive-only", off), ("interactive + concepts", on)):
        print(
            f"{name:24s} {r['parameters_m']:7.1f} M params, "
            f"{r['private_memory_built_mib']:7.0f} MiB built, "
            f"{r['private_memory_one_image_mib']:7.0f} MiB with one image, "
            f"{r['cached_bytes_per_image'] / MiB:7.2f} MiB cached per image"
        )
    for option, figures in on["cache_options"].items():
        print(
            f"  {option:24s} {figures['bytes_per_image'] / MiB:8.2f} MiB/image  "
            f"click {figures['click']['median_ms']:8.1f} ms  "
            f"concept {figures['concept_query']['median_ms']:8.1f} ms"
        )
    for stage, figures in on["stages"].items():
        print(f"  {stage:24s} {figures['median_ms']:8.1f} ms")
    for count, figures in on["concept_query"].items():
        print(
            f"  {count}: on embedded image {figures['on_embedded_image']['median_ms']:8.1f} ms, "
            f"whole model per request {figures['whole_model_per_request']['median_ms']:8.1f} ms"
        )


if __name__ == "__main__":
    main()
