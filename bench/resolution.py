"""What a click costs as images grow, and what choosing the best proposal at low resolution
saves, side by side in one run.

    python -m bench.resolution           # ~3 min on 2 cores
    python -m bench.resolution --quick   # fewer repeats

Two parts, both on the tiny random-weights model (masks are noise; its decoder is cheap, so
what grows with the image, upsampling and encoding, shows plainly), one torch thread as in a
replica with one CPU, smooth JPEG pictures:

- **clicks by image size**: a one-point click by `image_id` on 0.3, 3 and 12 MP pictures, run
  as a replica runs it (`deployments.operations.run`: engine decode, then the reply's
  encoding), polygons and RLE; p50/p99 of the whole, of the decode and of the encoding, and
  the 12 MP / 0.3 MP ratio.
- **16 prompts on a 12 MP picture**: decode time and the process's peak memory during the
  decode (Linux's VmHWM, reset just before it), for the best proposal upsampled alone (the
  engine) and for all three proposals upsampled, then the best picked (what the engine did
  before, as sam3's `predict_inst` does), each in a process of its own.

Writes bench/results/resolution.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.child import run_child
from bench.samples import smooth_image

RESULTS = Path(__file__).parent / "results"
SIZES = {"0.3 MP": (480, 640), "3 MP": (1500, 2000), "12 MP": (3000, 4000)}
PROMPTS = 16
TINY = {"random_weights": "tiny", "max_hole_area": 0, "device": "cpu"}


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def clicks_by_size(repeat: int) -> dict:
    from deployments.operations import SEGMENT, run
    from sam3_core import EmbedRequest, EngineSettings, PromptSet, Segmenter, SegmentRequest

    engine = Segmenter.from_settings(EngineSettings(**TINY))
    out: dict[str, dict] = {}
    for label, (height, width) in SIZES.items():
        data = smooth_image(0, height, width)
        image_id = engine.embed(EmbedRequest(image=data)).image_id
        point = {"x": width / 3, "y": height / 2, "positive": True}
        for mask_format in ("polygon", "rle"):
            request = SegmentRequest(
                image_id=image_id,
                prompts=PromptSet.model_validate({"points": [point]}),
                mask_format=mask_format,
            )
            run(engine, SEGMENT, request, "bench")  # warm-up
            total, decode, encode = [], [], []
            for _ in range(repeat):
                started = time.perf_counter()
                reply = run(engine, SEGMENT, request, "bench")
                total.append(time.perf_counter() - started)
                decode.append(reply.timings["decode"])
                encode.append(reply.timings["encode"])
            out.setdefault(mask_format, {})[label] = {
                "click": percentiles(total),
                "decode": percentiles(decode),
                "encode": percentiles(encode),
                "response_bytes": len(reply.body),
            }
    for by_size in out.values():
        small, large = by_size["0.3 MP"]["click"]["p50_ms"], by_size["12 MP"]["click"]["p50_ms"]
        by_size["ratio_12_to_0.3_MP"] = large / small
    return out


def all_proposals_decode(model, embedding, coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The decode before this change (and sam3's `predict_inst`): every proposal of every
    prompt upsampled to full size, then each prompt's best one kept."""
    import copy

    predictor = copy.copy(model.predictor)
    predictor._features = {
        "image_embed": embedding.image_embed.float(),
        "high_res_feats": [feat.float() for feat in embedding.high_res_feats],
    }
    predictor._orig_hw = [embedding.orig_hw]
    predictor._is_image_set = True
    mask_input, point_coords, point_labels, box = predictor._prep_prompts(
        coords, labels, None, None, normalize_coords=True
    )
    masks, scores, _ = predictor._predict(
        point_coords, point_labels, box, mask_input, True, return_logits=True
    )
    best = scores.argmax(dim=1)
    rows = torch.arange(len(best))
    return (masks[rows, best] > predictor.mask_threshold).numpy()


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def sixteen_prompts(variant: str, repeat: int) -> dict:
    """One variant in this process: decode time and peak memory of a 16-prompt decode."""
    from sam3_core import EmbedRequest, EngineSettings, Segmenter
    from sam3_core.memory import release_freed_memory

    engine = Segmenter.from_settings(EngineSettings(**TINY))
    height, width = SIZES["12 MP"]
    image_id = engine.embed(EmbedRequest(image=smooth_image(1, height, width))).image_id
    embedding = engine.embeddings.get(("", image_id)).embedding
    rng = np.random.default_rng(0)
    coords = (rng.random((PROMPTS, 1, 2)) * [width, height]).astype(np.float32)
    labels = np.ones((PROMPTS, 1), dtype=np.int32)

    def decode() -> np.ndarray:
        if variant == "best proposal upsampled alone":
            return engine.model.decode(embedding, point_coords=coords, point_labels=labels).masks
        return all_proposals_decode(engine.model, embedding, coords, labels)

    expected = decode()  # warm-up, and the answer both variants must give
    del expected
    seconds, peaks = [], []
    for _ in range(repeat):
        release_freed_memory()
        before = _vm("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS
        started = time.perf_counter()
        masks = decode()
        seconds.append(time.perf_counter() - started)
        peaks.append(_vm("VmHWM") - before)
        del masks
    return {
        "decode": percentiles(seconds),
        "peak_memory_mib": statistics.median(peaks) / 2**20,
        "mask_bytes": PROMPTS * height * width,
    }


def in_child(variant: str, repeat: int) -> dict:
    args = ("--child", variant, "--repeat", str(repeat))
    return run_child("bench.resolution", *args, env={"OMP_NUM_THREADS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeat = args.repeat or (5 if args.quick else 30)
    if args.child:
        print(json.dumps(sixteen_prompts(args.child, repeat)))
        return
    variants = ("best proposal upsampled alone", "all three proposals upsampled (before)")
    heavy = max(2, repeat // 5)
    report = {
        "machine": {"cores": os.cpu_count(), "torch_threads": 1},
        "weights": "random (tiny)",
        "clicks_by_size": clicks_by_size(repeat),
        f"{PROMPTS}_prompts_on_12_MP": {variant: in_child(variant, heavy) for variant in variants},
    }
    sixteen = report[f"{PROMPTS}_prompts_on_12_MP"]
    ours, before = (sixteen[v] for v in variants)
    sixteen["decode_speedup"] = before["decode"]["p50_ms"] / ours["decode"]["p50_ms"]
    sixteen["peak_memory_ratio"] = before["peak_memory_mib"] / ours["peak_memory_mib"]
    RESULTS.mkdir(exist_ok=True)
    name = "resolution-quick.json" if args.quick else "resolution.json"
    (RESULTS / name).write_text(json.dumps(report, indent=1))
    print("RANDOM weights (tiny); one torch thread")
    for mask_format, by_size in report["clicks_by_size"].items():
        cells = ", ".join(
            f"{label} {by_size[label]['click']['p50_ms']:.1f} ms "
            f"(decode {by_size[label]['decode']['p50_ms']:.1f}, "
            f"encode {by_size[label]['encode']['p50_ms']:.1f})"
            for label in SIZES
        )
        print(
            f"click by id, {mask_format}: {cells}; 12/0.3 MP {by_size['ratio_12_to_0.3_MP']:.1f}x"
        )
    for variant in variants:
        r = sixteen[variant]
        print(
            f"{PROMPTS} prompts, 12 MP, {variant}: decode p50 {r['decode']['p50_ms']:.0f} ms, "
            f"peak {r['peak_memory_mib']:.0f} MiB"
        )
    print(
        f"speed-up {sixteen['decode_speedup']:.2f}x, "
        f"peak memory {sixteen['peak_memory_ratio']:.2f}x less"
    )


if __name__ == "__main__":
    main()
