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
from sam3_core.sam3_compat import quiet_sam3
from sam3_core.weights import checkpoint_of_sam3_model

with quiet_sam3():
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.sam3_image_processor import Sam3Processor
    from sam3.model.vl_combiner import SAM3VLBackbone


class ReferenceSam3(torch.nn.Module):
    def __init__(self, arch: Architecture, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.backbone = SAM3VLBackbone(
                visual=build_vision_neck(arch, with_detector_neck=True), text=None, scalp=1
            )
            self.inst_interactive_predictor = build_interactive_predictor(arch, max_hole_area=0)
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
