"""Held-out scores of a model on synthetic scenes, through `InteractiveSam3.encode`/`decode`
as the service calls them: one centre click, a box, and a refinement round (a corrective
click with the first click's low-res logits fed back); and concept queries (texts naming
shapes and colours, box exemplars) through `ConceptSam3.ground` as the engine calls it.

    python -m sam3_core.demo.evaluate sam3_core/demo/shapes.pt --scenes 40 --clips 32 \
        --record sam3_core/demo/shapes.json

scores a demo checkpoint as training's `--eval-scenes`/`--eval-clips` do (`held_out`), with
random weights beside it, into its record: for a checkpoint trained without them.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from sam3_core.concept_prompts import ConceptPrompt, ExemplarBox, exemplar_arrays
from sam3_core.demo.scenes import (
    COLOURS,
    KINDS,
    Scene,
    held_out_clips,
    held_out_scenes,
    interior_point,
)
from sam3_core.demo.weights import DEMO_ARCHITECTURE, build_untrained
from sam3_core.model import ImageEmbedding, InteractiveSam3
from sam3_core.settings import EngineSettings, RequestLimits, VideoSettings
from sam3_core.weights import load_model


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


CONCEPT_THRESHOLD = 0.5  # the service's default output_prob_thresh
MATCH_IOU = 0.5


def concept_queries(scene: Scene, index: int) -> list[tuple[str, ConceptPrompt, list[int]]]:
    """(kind of query, prompt, instances it names) for one held-out scene: every shape name,
    kind and colour present, one name absent, and a box exemplar of each name present."""
    from sam3_core.demo.concepts import matching, vocabulary

    names = list(dict.fromkeys(scene.names()))
    queries = [("name", ConceptPrompt(text=n), list(matching(scene, n))) for n in names]
    for kind in dict.fromkeys(scene.kinds):
        queries.append(("kind", ConceptPrompt(text=kind), list(matching(scene, kind))))
    for colour in dict.fromkeys(scene.colours):
        queries.append(("colour", ConceptPrompt(text=colour), list(matching(scene, colour))))
    absent = [t for t in vocabulary()[: -len(KINDS) - len(COLOURS)] if not matching(scene, t)]
    queries.append(("absent", ConceptPrompt(text=absent[index % len(absent)]), []))
    for name in names:
        first = scene.names().index(name)
        x0, y0, x1, y1 = scene.boxes[first].tolist()
        box = ExemplarBox(x0=x0, y0=y0, x1=x1, y1=y1)
        queries.append(("exemplar", ConceptPrompt(boxes=[box]), list(matching(scene, name))))
    return queries


def _matches(found: np.ndarray, scores: np.ndarray, truth: list[np.ndarray]) -> int:
    """True positives: found masks (highest score first) matched one-to-one to ground-truth
    masks at IoU >= 0.5."""
    free, hits = list(range(len(truth))), 0
    for i in np.argsort(-scores):
        best = max(free, key=lambda j: iou(found[i], truth[j]), default=None)
        if best is not None and iou(found[i], truth[best]) >= MATCH_IOU:
            free.remove(best)
            hits += 1
    return hits


def concept_scores(model: InteractiveSam3, count: int = 50) -> dict:
    """Concept F1 at mask IoU 0.5 over every query of `count` held-out scenes, through the
    engine's calls (`encode`, `ConceptSam3.ground`, `instances` at the service's default
    threshold), with each kind of query's precision and recall."""
    from sam3_core.concept_model import ConceptQueries, instances

    concepts = model.concepts
    assert concepts is not None, "concept scores need a model built with concepts"
    counts: dict[str, list[int]] = {}  # kind -> [true positives, found, expected]
    for index, scene in enumerate(held_out_scenes(count)):
        embedding = model.encode(torch.from_numpy(scene.image).permute(2, 0, 1))
        queries = concept_queries(scene, index)
        prompts = [prompt for _, prompt, _ in queries]
        grounding = concepts.ground(
            concepts.detector_features(embedding.trunk),
            ConceptQueries(
                texts=concepts.encode_texts([p.query_text for p in prompts]),
                exemplars=exemplar_arrays(prompts, embedding.orig_hw),
            ),
        )
        found = instances(
            grounding, embedding.orig_hw, [CONCEPT_THRESHOLD] * len(prompts), 100, 2**40
        )
        for (kind, _, targets), result in zip(queries, found, strict=True):
            truth = [scene.masks[i] for i in targets]
            tally = counts.setdefault(kind, [0, 0, 0])
            tally[0] += _matches(result.masks, result.scores, truth)
            tally[1] += len(result.masks)
            tally[2] += len(truth)

    def summary(hits: int, found: int, expected: int) -> dict[str, float]:
        precision = hits / found if found else 1.0
        recall = hits / expected if expected else 1.0
        f1 = 2 * hits / (found + expected) if found + expected else 1.0
        return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}

    total = [sum(t[i] for t in counts.values()) for i in range(3)]
    return {
        "scenes": count,
        "queries": {kind: summary(*tally) for kind, tally in counts.items()},
        "found": total[1],
        "expected": total[2],
        **summary(*total),
    }


def tracking_scores(settings: EngineSettings, count: int = 8, frames: int = 30) -> dict:
    """J (the mean IoU of tracked masks with the truth) on `count` held-out clips of moving
    shapes, through the service's video sessions (`VideoSessions`, sam3's video model): each
    shape clicked once on frame 0 (`Clip.first_click`, all shapes in one session, one object
    each), then propagated forward, as the page does it. Frames where a shape is hidden and
    no mask is given count 1, as in DAVIS. Returns J over the tracked frames (1 on) and J
    per frame. `settings` name the weights (`checkpoint` or `random_weights`); they run on
    the CPU."""
    import io

    from PIL import Image

    from sam3_core.video_architecture import load_video_model
    from sam3_core.video_frames import VideoSource
    from sam3_core.video_sessions import VideoSessions

    sessions = VideoSessions(
        load_video_model(settings), VideoSettings(), RequestLimits(), torch.device("cpu")
    )
    per_frame: list[list[float]] = [[] for _ in range(frames)]
    for clip in held_out_clips(count, frames):
        pictures = []
        for frame in clip.frames:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG")
            pictures.append(buffer.getvalue())
        info = sessions.start_session(VideoSource(frames=tuple(pictures)))
        height, width = clip.frames.shape[1:3]
        # Points refine objects on frames with outputs (sam3): a first pass over every frame,
        # as the page's, before the clicks.
        for _ in sessions.propagate_in_video(info.key, "forward", 0):
            pass
        for index in range(len(clip.kinds)):
            x, y = clip.first_click(index)
            sessions.add_prompt(
                info.key, 0, points=[[x / width, y / height]], point_labels=[1], obj_id=index + 1
            )
        for out in sessions.propagate_in_video(info.key, "forward"):
            shown = dict(zip(out.obj_ids.tolist(), out.masks, strict=True))
            for index in range(len(clip.kinds)):
                truth = clip.masks[index, out.frame_index]
                found = shown.get(index + 1, np.zeros_like(truth))
                per_frame[out.frame_index].append(iou(found, truth))
        sessions.close_session(info.key)
    tracked = [j for row in per_frame[1:] for j in row]
    return {
        "clips": count,
        "frames": frames,
        "objects": len(per_frame[0]),
        "j": round(float(np.mean(tracked)), 4),
        "j_first_frame": round(float(np.mean(per_frame[0])), 4),
        "j_per_frame": [round(float(np.mean(row)), 4) for row in per_frame],
    }


def diagnosis(model: InteractiveSam3, count: int = 40) -> dict:
    """Where the interactive IoU is lost, on `count` held-out scenes: the ceiling of the
    ground truth pushed through the low-res mask size and back (area average, then bilinear
    as served), the best of the three proposals against the one the IoU head picks, the
    raw logits upsampled without sam3's hole filling, centre clicks by shape size, and how
    far the clicks' masks sit from their shapes' centres (the median: a shift all masks share)."""
    import torch.nn.functional as F

    side = model.arch.low_res_size
    rows: list[dict] = []
    for scene in held_out_scenes(count):
        height, width = scene.image.shape[:2]
        embedding = model.encode(torch.from_numpy(scene.image).permute(2, 0, 1))
        n = len(scene.kinds)
        clicks = np.array([[scene.centre_click(i)] for i in range(n)], np.float32)
        prompts = {
            "click": {"point_coords": clicks, "point_labels": np.ones((n, 1), np.int32)},
            "box": {"boxes": scene.boxes.astype(np.float32)},
        }
        proposals = {k: _all_proposals(model, embedding, **v) for k, v in prompts.items()}
        for i, truth in enumerate(scene.masks):
            small = cv2.resize(truth.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
            ceiling = F.interpolate(
                torch.from_numpy(small - 0.5)[None, None], (height, width), mode="bilinear"
            )[0, 0].numpy()
            row = {"area": int(truth.sum()), "ceiling": iou(ceiling > 0, truth)}
            for kind, (logits, scores) in proposals.items():
                ious = [iou(mask > 0, truth) for mask in logits[i]]
                row[f"{kind}_picked"] = ious[int(scores[i].argmax())]
                row[f"{kind}_best_of_3"] = max(ious)
            picked = proposals["click"][0][i][int(proposals["click"][1][i].argmax())] > 0
            row["click_offset"] = centre_offset(picked, truth)
            rows.append(row)
    areas = np.array([r["area"] for r in rows])
    edges = np.quantile(areas, [0.25, 0.5, 0.75])
    quartile = np.searchsorted(edges, areas, side="right")

    def mean(key: str, keep: list[bool] | None = None) -> float:
        chosen = [r[key] for r, k in zip(rows, keep or [True] * len(rows), strict=True) if k]
        return round(float(np.mean(chosen)), 4)

    return {
        "low_res_side": side,
        "low_res_ceiling_miou": mean("ceiling"),
        "click_picked_no_hole_filling_miou": mean("click_picked"),
        "click_best_of_3_miou": mean("click_best_of_3"),
        "box_picked_no_hole_filling_miou": mean("box_picked"),
        "box_best_of_3_miou": mean("box_best_of_3"),
        "click_miou_by_area_quartile": [
            mean("click_picked", list(quartile == q)) for q in range(4)
        ],
        "area_quartile_edges_px": [int(e) for e in edges],
        "click_median_offset_px": [
            round(float(v), 2) for v in np.nanmedian([r["click_offset"] for r in rows], axis=0)
        ],
    }


def centre_offset(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(dx, dy) in pixels from the centre of `truth` to the centre of `predicted` (NaN for
    an empty mask): masks drawn off their shapes in one direction show as a median away from 0."""
    if not predicted.any():
        return float("nan"), float("nan")
    (py, px), (ty, tx) = (np.argwhere(m).mean(axis=0) for m in (predicted, truth))
    return float(px - tx), float(py - ty)


def _all_proposals(
    model: InteractiveSam3, embedding: ImageEmbedding, **prompt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The three proposals' logits at the image's size (upsampled, no hole filling) and their
    predicted IoUs, through the same decoder call as `decode`."""
    import torch.nn.functional as F

    from sam3_core.model import _UpsampleLater

    predictor = model.predictor
    with torch.inference_mode():
        call = copy.copy(predictor)
        object.__setattr__(
            call,
            "_modules",
            {**predictor._modules, "_transforms": _UpsampleLater(predictor._transforms)},
        )
        call._features = {
            "image_embed": embedding.image_embed.float(),
            "high_res_feats": [f.float() for f in embedding.high_res_feats],
        }
        call._orig_hw = [embedding.orig_hw]
        call._is_image_set = True
        inputs = call._prep_prompts(
            prompt.get("point_coords"),
            prompt.get("point_labels"),
            prompt.get("boxes"),
            None,
            normalize_coords=True,
        )
        _, scores, low_res = call._predict(*inputs[1:], inputs[0], True, return_logits=True)
        full = F.interpolate(low_res.float(), embedding.orig_hw, mode="bilinear")
    return full.numpy(), scores.numpy()


def held_out(
    model: InteractiveSam3,
    tracked: EngineSettings | None,
    scenes: int,
    clips: int,
    *,
    seed: int = 0,
) -> dict[str, dict]:
    """A training record's `held_out` and `held_out_random_weights`: `model`'s clicks, boxes
    and concepts on `scenes` held-out scenes and the tracking of `clips` held-out clips by
    the checkpoint `tracked` names (the service's video sessions load it), against random
    weights seeded as training starts from."""
    record: dict[str, dict] = {"held_out": {}, "held_out_random_weights": {}}
    if scenes:
        random_model = build_untrained(seed=seed).eval()
        for key, scored in (("held_out", model), ("held_out_random_weights", random_model)):
            record[key] = scores(scored, scenes)
            record[key]["concepts"] = concept_scores(scored, scenes)
    if clips and tracked is not None:
        random = EngineSettings(random_weights=DEMO_ARCHITECTURE.name, device="cpu")
        record["held_out"]["tracking"] = tracking_scores(tracked, clips)
        record["held_out_random_weights"]["tracking"] = tracking_scores(random, clips)
    return {key: value for key, value in record.items() if value}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Score a demo checkpoint into its record.")
    parser.add_argument("checkpoint", help="a demo checkpoint (.pt)")
    parser.add_argument("--scenes", type=int, default=40, help="held-out scenes")
    parser.add_argument("--clips", type=int, default=32, help="held-out clips tracked")
    parser.add_argument("--record", required=True, help="the record (.json) to add them to")
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed")
    args = parser.parse_args(argv)
    settings = EngineSettings(checkpoint=args.checkpoint, device="cpu")
    scored = held_out(load_model(settings), settings, args.scenes, args.clips, seed=args.seed)
    path = Path(args.record)
    record = json.loads(path.read_text())
    for key, fresh in scored.items():  # what was not scored again (--clips 0) is kept
        record[key] = {**record.get(key, {}), **fresh}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    torch.set_num_threads(1)  # as bench.demo scores
    main()
