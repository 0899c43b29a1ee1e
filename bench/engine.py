"""Engine benchmark: cache bytes per image, embed and decode time, mask encoding time.

    python -m bench.engine            # tiny and full-size SAM3 (random weights), ~3 min on 2 cores
    python -m bench.engine --tiny     # tiny model only, seconds

Random weights throughout (no SAM3 weights can be downloaded here): timings are the
architecture's, masks are meaningless. The full-size part builds sam3's own
`build_sam3_image_model` for the `set_image` state it returns, next to our interactive-only
model, in the same process and on the same image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import torch

from bench.samples import random_pixels
from sam3_core.architecture import FULL, NARROW, TINY, Architecture, count_parameters
from sam3_core.model import InteractiveSam3
from sam3_core.protocol.masks import mask_to_polygons, masks_to_rle
from sam3_core.sam3_compat import building_on, leave_tracker_autocast
from sam3_core.weights import checkpoint_of_sam3_model, load_checkpoint

RESULTS = Path(__file__).parent / "results"
MiB = 2**20


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(seconds) * 1000,
        "min_ms": min(seconds) * 1000,
        "n": len(seconds),
    }


def tensor_bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def bench_model(model: InteractiveSam3, image: torch.Tensor, embeds: int, decodes: int) -> dict:
    embedding = model.encode(image)
    embed = timed(lambda: model.encode(image), embeds)
    # One click at sam3's reference point in bench_full: hole filling's cost depends on the mask.
    point = np.array([[[500.0, 400.0]]])

    def click() -> None:
        model.decode(embedding, point_coords=point, point_labels=np.ones((1, 1), np.int32))

    click()
    decode = timed(click, decodes)
    # sam3 fills holes of up to 256 px in each low-res mask with scikit-image on the CPU;
    # random weights give noise masks with thousands of components, so also time it off.
    transforms = model.predictor._transforms
    hole_area, transforms.max_hole_area = transforms.max_hole_area, 0
    decode_no_holes = timed(click, decodes)
    transforms.max_hole_area = hole_area
    return {
        "parameters_m": count_parameters(model) / 1e6,
        "embedding_bytes": embedding.nbytes,
        "embedding_bytes_bf16": embedding.to(torch.bfloat16).nbytes,
        "embed": summary(embed),
        "decode_one_click": summary(decode),
        "decode_one_click_no_hole_filling": summary(decode_no_holes),
    }


def random_model(arch: Architecture) -> InteractiveSam3:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return InteractiveSam3(arch).eval()


def bench_full(image: torch.Tensor) -> dict:
    """Our interactive-only model next to sam3's full build, same weights, same image."""
    import open_clip
    from sam3.model.sam3_image_processor import Sam3Processor
    from sam3.model_builder import build_sam3_image_model

    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), building_on(torch.device("cpu")):
        torch.manual_seed(0)
        full = build_sam3_image_model(
            bpe_path=os.path.join(
                os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz"
            ),
            device="cpu",
            load_from_HF=False,
            enable_inst_interactivity=True,
        )
    build_full = time.perf_counter() - started
    leave_tracker_autocast(full.inst_interactive_predictor.model)
    processor = Sam3Processor(full, device="cpu")
    state = processor.set_image(image)
    set_image = timed(partial(processor.set_image, image), 1)
    point = {"point_coords": np.array([[500.0, 400.0]]), "point_labels": np.array([1])}
    predict = timed(
        partial(full.predict_inst, state, multimask_output=True, return_logits=True, **point), 5
    )
    state_bytes = tensor_bytes(state)
    weights = full.state_dict()
    full_params = count_parameters(full)
    del state, processor

    started = time.perf_counter()
    ours = InteractiveSam3(FULL)
    build_ours = time.perf_counter() - started
    load_checkpoint(ours, checkpoint_of_sam3_model(weights))
    del full, weights
    ours.eval()
    result = bench_model(ours, image, embeds=2, decodes=10)
    result.update(
        {
            "sam3_full_parameters_m": full_params / 1e6,
            "sam3_set_image_state_bytes": state_bytes,
            "sam3_set_image": summary(set_image),
            "sam3_predict_inst_one_click": summary(predict),
            "build_seconds_sam3_full": build_full,
            "build_seconds_interactive_only": build_ours,
        }
    )
    return result


def blob_mask(side: int, rng: np.random.Generator, blobs: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    mask = np.zeros((side, side), bool)
    for _ in range(blobs):
        cx, cy = rng.uniform(0.1, 0.9, 2) * side
        rx, ry = rng.uniform(0.03, 0.25, 2) * side
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return mask


def bench_encoding(side: int = 1008) -> dict:
    rng = np.random.default_rng(0)
    cases = {
        "one object": blob_mask(side, rng, 1),
        "five objects": blob_mask(side, rng, 5),
        "noise (random weights)": rng.random((side, side)) > 0.5,
    }
    out = {}
    for name, mask in cases.items():
        out[name] = {
            "polygon": summary(timed(lambda m=mask: mask_to_polygons(m), 20)),
            "rle": summary(timed(lambda m=mask: masks_to_rle(m[None]), 20)),
            "polygon_json_bytes": len(json.dumps(mask_to_polygons(mask))),
            "rle_json_bytes": len(json.dumps(masks_to_rle(mask[None]))),
        }
    return out


def bench_precision(images: int = 24) -> dict:
    """Masks and scores from bfloat16 / float16 cached embeddings against float32 ones, on
    the narrow model (SAM3's 1008 px feature maps), two prompts per image."""
    model = random_model(NARROW)
    rng = np.random.default_rng(1)
    out: dict[str, dict[str, float]] = {}
    for dtype in (torch.bfloat16, torch.float16):
        worst_iou, worst_score, mean_iou = 1.0, 0.0, []
        for i in range(images):
            pixels = torch.from_numpy(random_pixels(100 + i, 300, 400)).permute(2, 0, 1)
            embedding = model.encode(pixels)
            coords = rng.uniform((0, 0), (400, 300), size=(2, 2, 2))
            labels = np.array([[1, 1], [1, 0]])
            full = model.decode(embedding, point_coords=coords, point_labels=labels)
            half = model.decode(embedding.to(dtype), point_coords=coords, point_labels=labels)
            for a, b in zip(full.masks, half.masks, strict=True):
                union = (a | b).sum()
                iou = (a & b).sum() / union if union else 1.0
                worst_iou = min(worst_iou, float(iou))
                mean_iou.append(float(iou))
            worst_score = max(worst_score, float(np.abs(full.scores - half.scores).max()))
        out[str(dtype).removeprefix("torch.")] = {
            "worst_mask_iou": worst_iou,
            "mean_mask_iou": float(np.mean(mean_iou)),
            "worst_score_difference": worst_score,
            "prompts": 2 * images,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="skip the full-size model")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    image = torch.from_numpy(random_pixels(0, 768, 1024)).permute(2, 0, 1)
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "image": list(image.shape),
        "weights": "random",
        "tiny": bench_model(random_model(TINY), image, embeds=20, decodes=50),
        "mask_encoding_1008": bench_encoding(),
        "reduced_precision": bench_precision(),
    }
    if not args.tiny:
        report["full"] = bench_full(image)
    report["peak_rss_bytes"] = psutil.Process().memory_info().rss
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(report, indent=2))
    print_report(report)


def print_report(report: dict) -> None:
    print(f"machine: {report['machine']}, image {report['image']}, RANDOM weights")
    for name in ("tiny", "full"):
        if name not in report:
            continue
        r = report[name]
        print(
            f"{name:>5}: {r['parameters_m']:.1f} M params | embed {r['embed']['median_ms']:.1f} ms"
            f" | decode one click {r['decode_one_click']['median_ms']:.2f} ms"
            f" ({r['decode_one_click_no_hole_filling']['median_ms']:.2f} ms without hole filling)"
            f" | cached bytes/image {r['embedding_bytes'] / MiB:.2f} MiB"
            f" (bf16 {r['embedding_bytes_bf16'] / MiB:.2f} MiB)"
        )
    if "full" in report:
        r = report["full"]
        ratio = r["sam3_set_image_state_bytes"] / r["embedding_bytes"]
        print(
            f" full: sam3 set_image state {r['sam3_set_image_state_bytes'] / MiB:.1f} MiB vs ours "
            f"{r['embedding_bytes'] / MiB:.2f} MiB ({ratio:.1f}x less); sam3 full build "
            f"{r['sam3_full_parameters_m']:.0f} M params vs {r['parameters_m']:.0f} M; "
            f"set_image {r['sam3_set_image']['median_ms'] / 1000:.1f} s vs our embed "
            f"{r['embed']['median_ms'] / 1000:.1f} s; predict_inst "
            f"{r['sam3_predict_inst_one_click']['median_ms']:.1f} ms vs our decode "
            f"{r['decode_one_click']['median_ms']:.1f} ms"
        )
    for name, r in report["mask_encoding_1008"].items():
        print(
            f"1008x1008 mask, {name:>22}: polygon {r['polygon']['median_ms']:.2f} ms "
            f"({r['polygon_json_bytes']} B JSON), rle {r['rle']['median_ms']:.2f} ms "
            f"({r['rle_json_bytes']} B JSON)"
        )
    for dtype, r in report["reduced_precision"].items():
        print(
            f"{dtype} embeddings vs float32 ({r['prompts']} prompts): mask IoU worst "
            f"{r['worst_mask_iou']:.4f}, mean {r['mean_mask_iou']:.4f}; worst score difference "
            f"{r['worst_score_difference']:.1e}"
        )
    print(f"peak RSS {report['peak_rss_bytes'] / 2**30:.1f} GiB; see bench/results/engine.json")


if __name__ == "__main__":
    main()
