"""sam3 itself, called the way its README does, as the reference the engine must match.

For the tiny architecture, sam3's `Sam3Image` needs a detector (transformer, text encoder,
...) we have no small builder for; the reference instead carries exactly the two parts
`Sam3Processor.set_image` and `Sam3Image.predict_inst` touch: `backbone` (sam3's dual neck,
detector convs included) and `inst_interactive_predictor`, and runs sam3's own methods.
"""

from __future__ import annotations

import types

import numpy as np
import torch

from sam3_core.architecture import Architecture, build_interactive_predictor, build_vision_neck
from sam3_core.concept_architecture import build_concept_detector
from sam3_core.sam3_compat import clip_vocabulary, quiet_sam3, without_pinned_memory
from sam3_core.weights import checkpoint_of_sam3_model

with quiet_sam3():
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.sam3_image_processor import Sam3Processor
    from sam3.model.vl_combiner import SAM3VLBackbone


class ReferenceSam3(torch.nn.Module):
    def __init__(self, arch: Architecture, seed: int = 0, max_hole_area: float = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.backbone = SAM3VLBackbone(
                visual=build_vision_neck(arch, with_detector_neck=True), text=None, scalp=1
            )
            self.inst_interactive_predictor = build_interactive_predictor(
                arch, max_hole_area=max_hole_area
            )
        self.predict_inst = types.MethodType(Sam3Image.predict_inst, self)
        self.processor = Sam3Processor(self, resolution=arch.image_size, device="cpu")
        self.eval()

    def checkpoint(self) -> dict[str, torch.Tensor]:
        """This model's weights under the key names of a released sam3 checkpoint."""
        return checkpoint_of_sam3_model(self.state_dict())

    def best(self, image: np.ndarray, **prompt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """set_image + predict_inst + best proposal per prompt, as Roboflow's server does.

        Returns masks (P, H, W) bool, scores (P,), low-res logits (P, L, L)."""
        state = self.processor.set_image(torch.from_numpy(image).permute(2, 0, 1))
        return best_proposals(
            *self.predict_inst(
                state, multimask_output=True, return_logits=True, normalize_coords=True, **prompt
            )
        )


def best_proposals(
    masks: np.ndarray, scores: np.ndarray, logits: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if masks.ndim == 3:  # sam3 squeezes the prompt axis when there is one prompt
        masks, scores, logits = masks[None], scores[None], logits[None]
    best = scores.argmax(axis=1)
    rows = np.arange(len(best))
    return masks[rows, best] > 0, scores[rows, best], logits[rows, best]


class ReferenceSam3Image(torch.nn.Module):
    """sam3's complete image model (`Sam3Image`: dual neck, text encoder, detector, and the
    interactive predictor) from the same builders as `build_sam3_image_model`, at any preset's
    sizes, driven through sam3's own `Sam3Processor` for concept segmentation."""

    def __init__(self, arch: Architecture, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_concept_detector(
                arch, clip_vocabulary(), vision=build_vision_neck(arch, with_detector_neck=True)
            )
            self.model.inst_interactive_predictor = build_interactive_predictor(
                arch, max_hole_area=0
            )
        self.model.eval()
        self.arch = arch

    def checkpoint(self) -> dict[str, torch.Tensor]:
        """This model's weights under the key names of a released sam3 checkpoint."""
        return checkpoint_of_sam3_model(self.model.state_dict())

    def processor(self, threshold: float = 0.5) -> Sam3Processor:
        return Sam3Processor(
            self.model,
            resolution=self.arch.image_size,
            device="cpu",
            confidence_threshold=threshold,
        )

    def concept(
        self,
        image: np.ndarray,
        text: str | None = None,
        boxes: list[tuple[list[float], bool]] = (),
        threshold: float = 0.5,
    ) -> dict[str, torch.Tensor]:
        """`set_image`, then `set_text_prompt` and/or `add_geometric_prompt` per box (XYXY
        pixels, converted to the normalised cx, cy, w, h sam3 takes), as its README does.

        Returns the state's `masks` (N, 1, H, W) bool, `boxes` (N, 4) XYXY pixels, `scores`.
        """
        with without_pinned_memory():
            return self._concept(image, text, boxes, threshold)

    def _concept(self, image, text, boxes, threshold) -> dict[str, torch.Tensor]:
        processor = self.processor(threshold)
        height, width = image.shape[:2]
        state = processor.set_image(torch.from_numpy(image).permute(2, 0, 1))
        if text is not None:
            state = processor.set_text_prompt(text, state)
        for (x0, y0, x1, y1), label in boxes:
            box = [
                (x0 + x1) / 2 / width,
                (y0 + y1) / 2 / height,
                (x1 - x0) / width,
                (y1 - y0) / height,
            ]
            state = processor.add_geometric_prompt(box, label, state)
        return {key: state[key] for key in ("masks", "boxes", "scores")}
