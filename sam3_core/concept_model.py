"""`ConceptSam3`: SAM3's promptable concept segmentation (text and box exemplars) on the
trunk output an image's embedding keeps, through sam3's own `Sam3Image.forward_grounding`.

The ViT trunk is not part of it: `InteractiveSam3.encode` runs the trunk once per image and
keeps its output; clicks read the SAM2-style neck computed from it at embed time, concept
queries recompute the detector neck from it (bench/concept.py measured the options).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as coco_mask
from torch import nn

from sam3_core.architecture import Architecture, neck_features
from sam3_core.calls import ConceptInstances
from sam3_core.concept_architecture import build_concept_detector, build_detector_neck
from sam3_core.concept_prompts import ExemplarArrays
from sam3_core.errors import MaskBudgetError
from sam3_core.sam3_compat import quiet_sam3, without_pinned_memory

with quiet_sam3():
    from sam3.model import box_ops
    from sam3.model.data_misc import FindStage
    from sam3.model.geometry_encoders import Prompt as GeometricPrompt
    from sam3.perflib.nms import generic_nms_cpu


@dataclass(frozen=True)
class TextEmbedding:
    """sam3's text encoder output for one text (its 32-token context).

    Attributes:
        features: (T, C) float32, T = 32 tokens, C = feature width (256 at full size).
        padding: (T,) bool, True where the token is padding.
    """

    features: torch.Tensor
    padding: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size() + self.padding.numel()


@dataclass(frozen=True)
class DetectorFeatures:
    """The detector neck's output for one image (what `forward_grounding` reads of it).

    Attributes:
        backbone_fpn: (1, C, 4g, 4g), (1, C, 2g, 2g), (1, C, g, g), g = S/14.
        vision_pos_enc: the sine position encodings of the same three shapes.
    """

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.backbone_fpn)


@dataclass(frozen=True)
class ConceptQueries:
    """P concept queries on one image, run together (sam3's batched find-queries).

    Attributes:
        texts: P embeddings, one per query (the prompt's text, or "visual").
        exemplars: the queries' box exemplars, (P, N, ...) arrays.
    """

    texts: list[TextEmbedding]
    exemplars: ExemplarArrays


@dataclass(frozen=True)
class Grounding:
    """The detector's raw output for P queries, before thresholds.

    Attributes:
        scores: (P, Q) float32, sigmoid(logit) x sigmoid(presence), as `Sam3Processor`.
        boxes: (P, Q, 4) float32 normalised cx, cy, w, h.
        mask_logits: (P, Q, L, L) float32, L = 4·S/14 (288 at 1008 px).
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor


class ConceptSam3(nn.Module):
    """The detector neck, sam3's text encoder and its detector (`Sam3Image`) without a vision
    backbone. Stateless between calls; safe to call from many threads."""

    def __init__(self, arch: Architecture, bpe_path: str) -> None:
        super().__init__()
        self.arch = arch
        self.neck = build_detector_neck(arch)
        self.detector = build_concept_detector(arch, bpe_path)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> list[TextEmbedding]:
        """sam3's text encoder on each text (one batch), as `SAM3VLBackbone.forward_text`."""
        out = self.detector.backbone.forward_text(texts, device=self.device)
        features, padding = out["language_features"], out["language_mask"]  # (T, B, C), (B, T)
        return [
            TextEmbedding(features=features[:, i].float(), padding=padding[i])
            for i in range(len(texts))
        ]

    @torch.inference_mode()
    def detector_features(self, trunk: torch.Tensor) -> DetectorFeatures:
        """The detector neck on an image's trunk output (1, D, g, g), any dtype."""
        fpn, pos = neck_features(self.neck, trunk.float())
        return DetectorFeatures(backbone_fpn=fpn, vision_pos_enc=pos)

    @torch.inference_mode()
    def ground(self, features: DetectorFeatures, queries: ConceptQueries) -> Grounding:
        """Run P queries on one image in one pass of sam3's `forward_grounding`."""
        device = self.device
        count = len(queries.texts)
        find_input = FindStage(
            img_ids=torch.zeros(count, device=device, dtype=torch.long),
            text_ids=torch.arange(count, device=device, dtype=torch.long),
            input_boxes=None,
            input_boxes_mask=None,
            input_boxes_label=None,
            input_points=None,
            input_points_mask=None,
        )
        backbone_out = {
            "backbone_fpn": list(features.backbone_fpn),
            "vision_pos_enc": list(features.vision_pos_enc),
            "language_features": torch.stack([t.features for t in queries.texts], dim=1),
            "language_mask": torch.stack([t.padding for t in queries.texts]),
        }
        exemplars = queries.exemplars
        geometric_prompt = GeometricPrompt(
            box_embeddings=torch.from_numpy(exemplars.boxes).to(device).transpose(0, 1),
            box_mask=torch.from_numpy(exemplars.padding).to(device),
            box_labels=torch.from_numpy(exemplars.labels).to(device).transpose(0, 1),
        )
        with without_pinned_memory():
            out = self.detector.forward_grounding(
                backbone_out=backbone_out,
                find_input=find_input,
                geometric_prompt=geometric_prompt,
                find_target=None,
            )
        # `Sam3Processor._forward_grounding`'s scores: class probability x presence.
        presence = out["presence_logit_dec"].sigmoid().unsqueeze(1)
        scores = (out["pred_logits"].sigmoid() * presence).squeeze(-1)
        return Grounding(scores=scores, boxes=out["pred_boxes"], mask_logits=out["pred_masks"])


def boxes_to_pixels(boxes: torch.Tensor, orig_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) normalised cx, cy, w, h → (N, 4) float32 XYXY in original-image pixels."""
    height, width = orig_hw
    scale = torch.tensor([width, height, width, height], device=boxes.device)
    return (box_ops.box_cxcywh_to_xyxy(boxes) * scale[None, :]).float().cpu().numpy()


@torch.inference_mode()
def masks_to_pixels(
    mask_logits: torch.Tensor, orig_hw: tuple[int, int], chunk: int = 8
) -> np.ndarray:
    """(N, L, L) mask logits → (N, H, W) bool at the original size, as `Sam3Processor`
    (bilinear, sigmoid, > 0.5), a few masks at a time so that no float (N, H, W) exists."""
    height, width = orig_hw
    out = np.zeros((len(mask_logits), height, width), dtype=bool)
    for start in range(0, len(mask_logits), chunk):
        part = torch.nn.functional.interpolate(
            mask_logits[start : start + chunk].unsqueeze(1).float(),
            (height, width),
            mode="bilinear",
            align_corners=False,
        ).sigmoid()
        out[start : start + chunk] = (part[:, 0] > 0.5).cpu().numpy()
    return out


def instances(
    grounding: Grounding,
    orig_hw: tuple[int, int],
    thresholds: list[float],
    max_instances: int,
    max_mask_pixels: int,
) -> list[ConceptInstances]:
    """Each prompt's instances scoring at least its threshold, as `Sam3Processor` keeps them
    (boxes scaled to the original size, masks interpolated to it and thresholded at 0.5);
    at most `max_instances` per prompt, the highest-scoring ones, still in query order, and
    at most `max_mask_pixels` mask pixels in all (else `MaskBudgetError`)."""
    keeps = []
    for row, threshold in enumerate(thresholds):
        scores = grounding.scores[row]
        keep = torch.nonzero(scores >= threshold).squeeze(1)
        if len(keep) > max_instances:
            keep = keep[scores[keep].topk(max_instances).indices.sort().values]
        keeps.append(keep)
    pixels = sum(len(keep) for keep in keeps) * orig_hw[0] * orig_hw[1]
    if pixels > max_mask_pixels:  # before any mask is brought to full size
        raise MaskBudgetError(
            f"{sum(len(keep) for keep in keeps)} instance mask(s) of {orig_hw[1]}x{orig_hw[0]} "
            f"pixels are {pixels} mask pixels, the limit is {max_mask_pixels} "
            "(SAM3_MAX_MASK_PIXELS): raise output_prob_thresh or send fewer prompts"
        )
    return [
        ConceptInstances(
            masks=masks_to_pixels(grounding.mask_logits[row, keep], orig_hw),
            scores=grounding.scores[row, keep].float().cpu().numpy(),
            boxes=boxes_to_pixels(grounding.boxes[row, keep], orig_hw),
        )
        for row, keep in enumerate(keeps)
    ]


def cross_prompt_nms(found: list[ConceptInstances], iou_threshold: float) -> list[ConceptInstances]:
    """Mask NMS across every prompt's instances: of two masks overlapping by more than
    `iou_threshold` (IoU), the lower-scoring one goes. Masks are compared as COCO RLE
    (pycocotools), never as a dense (N, N, H, W) product."""
    counts = [len(group) for group in found]
    total = sum(counts)
    if total < 2:
        return found
    masks = np.concatenate([group.masks for group in found])
    rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    ious = coco_mask.iou(rles, rles, [0] * total)
    scores = np.concatenate([group.scores for group in found])
    kept = generic_nms_cpu(torch.from_numpy(ious), torch.from_numpy(scores), iou_threshold)
    keep = np.zeros(total, dtype=bool)
    keep[kept.numpy()] = True
    starts = np.cumsum([0, *counts])
    return [
        _select(group, keep[start:end])
        for group, start, end in zip(found, starts[:-1], starts[1:], strict=True)
    ]


def _select(group: ConceptInstances, keep: np.ndarray) -> ConceptInstances:
    return ConceptInstances(
        masks=group.masks[keep], scores=group.scores[keep], boxes=group.boxes[keep]
    )
