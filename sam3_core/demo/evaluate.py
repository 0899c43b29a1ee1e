"""Held-out scores of a model on synthetic scenes, through `InteractiveSam3.encode`/`decode`
as the service calls them: one centre click, a box, and a refinement round (a corrective
click with the first click's low-res logits fed back)."""

from __future__ import annotations

import numpy as np
import torch

from sam3_core.demo.scenes import Scene, held_out_scenes, interior_point
from sam3_core.model import InteractiveSam3


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def corrective_click(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    """(x, y, label): the middle of the larger error region, positive where the mask missed
    the shape, negative where it spilled over."""
    missed, extra = truth & ~predicted, predicted & ~truth
    region, label = (missed, 1) if missed.sum() >= extra.sum() else (extra, 0)
    if not region.any():
        region, label = truth, 1
    x, y = interior_point(region)
    return x, y, label


def scene_scores(model: InteractiveSam3, scene: Scene) -> dict[str, list[float]]:
    """Per-instance IoUs of one scene for each protocol."""
    embedding = model.encode(torch.from_numpy(scene.image).permute(2, 0, 1))
    count = len(scene.kinds)
    clicks = np.array([[scene.centre_click(i)] for i in range(count)], np.float32)
    ones = np.ones((count, 1), np.int32)
    first = model.decode(embedding, point_coords=clicks, point_labels=ones)
    boxed = model.decode(embedding, boxes=scene.boxes.astype(np.float32))
    out: dict[str, list[float]] = {"click": [], "box": [], "refined": []}
    for i in range(count):
        truth = scene.masks[i]
        out["click"].append(iou(first.masks[i], truth))
        out["box"].append(iou(boxed.masks[i], truth))
        x, y, label = corrective_click(first.masks[i], truth)
        refined = model.decode(
            embedding,
            point_coords=np.array([[clicks[i, 0], (x, y)]], np.float32),
            point_labels=np.array([[1, label]], np.int32),
            mask_input=first.low_res_logits[i][None, None],
        )
        out["refined"].append(iou(refined.masks[0], truth))
    return out


def scores(model: InteractiveSam3, count: int = 50) -> dict[str, float]:
    """Mean IoU over every instance of `count` held-out scenes (320 x 240)."""
    totals: dict[str, list[float]] = {"click": [], "box": [], "refined": []}
    for scene in held_out_scenes(count):
        for key, values in scene_scores(model, scene).items():
            totals[key].extend(values)
    return {
        "scenes": count,
        "instances": len(totals["click"]),
        "centre_click_miou": round(float(np.mean(totals["click"])), 4),
        "box_miou": round(float(np.mean(totals["box"])), 4),
        "click_then_corrective_click_miou": round(float(np.mean(totals["refined"])), 4),
    }
