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
from torch import nn

from sam3_core.architecture import (
    Architecture,
    build_concept_detector,
    build_detector_neck,
    neck_features,
)
from sam3_core.sam3_compat import quiet_sam3, without_pinned_memory

with quiet_sam3():
    from sam3.model import box_ops
    from sam3.model.data_misc import FindStage
    from sam3.model.geometry_encoders import Prompt as GeometricPrompt

# sam3's query text for a prompt made of box exemplars only (`Sam3Processor.add_geometric_prompt`).
VISUAL_QUERY_TEXT = "visual"


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
        boxes: (P, N, 4) float32 exemplar boxes, normalised cx, cy, w, h in [0, 1]; a
            query with fewer boxes than N is padded.
        box_labels: (P, N) bool, True for a positive exemplar.
        box_padding: (P, N) bool, True where a box is padding.
    """

    texts: list[TextEmbedding]
    boxes: np.ndarray
    box_labels: np.ndarray
    box_padding: np.ndarray


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
        geometric_prompt = GeometricPrompt(
            box_embeddings=torch.from_numpy(queries.boxes).to(device).transpose(0, 1),
            box_mask=torch.from_numpy(queries.box_padding).to(device),
            box_labels=torch.from_numpy(queries.box_labels).to(device).transpose(0, 1),
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
