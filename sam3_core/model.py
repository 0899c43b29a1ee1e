"""`InteractiveSam3`: embed an image once, then decode prompts against its embedding."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sam3_core.architecture import (
    Architecture,
    build_interactive_predictor,
    build_vision_neck,
    neck_features,
)
from sam3_core.calls import Decoded
from sam3_core.concept_model import ConceptSam3
from sam3_core.errors import InvalidPromptError
from sam3_core.sam3_compat import quiet_sam3

with quiet_sam3():
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image_processor import Sam3Processor
    from torchvision.transforms import v2


@dataclass(frozen=True)
class ImageEmbedding:
    """What the interactive decoder reads of one image, and nothing more.

    Attributes:
        image_embed: (1, C, S/14, S/14): the coarsest neck level plus sam3's `no_mem_embed`.
        high_res_feats: (1, C/8, 4·S/14, 4·S/14) and (1, C/4, 2·S/14, 2·S/14), after the
            mask decoder's `conv_s0` / `conv_s1`. At 1008 px, C=256: 20.25 MiB in float32,
            against ~340 MiB for the state `Sam3Processor.set_image` returns.
        orig_hw: (H, W) of the original image.
        trunk: (1, D, S/14, S/14), the ViT trunk's output, kept only where the model serves
            concepts (their detector neck is recomputed from it): 20.25 MiB more in float32
            at full size (D=1024). None for an interactive-only model.
    """

    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, torch.Tensor]
    orig_hw: tuple[int, int]
    trunk: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        tensors = (self.image_embed, *self.high_res_feats)
        if self.trunk is not None:
            tensors = (*tensors, self.trunk)
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, dtype: torch.dtype) -> ImageEmbedding:
        return ImageEmbedding(
            image_embed=self.image_embed.to(dtype),
            high_res_feats=(self.high_res_feats[0].to(dtype), self.high_res_feats[1].to(dtype)),
            orig_hw=self.orig_hw,
            trunk=None if self.trunk is None else self.trunk.to(dtype),
        )


class InteractiveSam3(nn.Module):
    """The parts of SAM3 interactive segmentation runs: ViT trunk, SAM2-style neck, and the
    tracker's prompt encoder and mask decoder (through sam3's `SAM3InteractiveImagePredictor`);
    with `concepts_bpe_path`, also concept segmentation (`concepts`, a `ConceptSam3`), whose
    queries read the trunk output `encode` then keeps.

    `encode` and `decode` hold no state between calls and are safe to call from many threads.
    """

    # What the checkpoint says its weights are, where it says (the demo model's does).
    description: str | None = None

    def __init__(
        self,
        arch: Architecture,
        *,
        max_hole_area: float = 256.0,
        concepts_bpe_path: str | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.image_encoder = build_vision_neck(arch, with_detector_neck=False)
        self.predictor = build_interactive_predictor(arch, max_hole_area=max_hole_area)
        self.concepts = None if concepts_bpe_path is None else ConceptSam3(arch, concepts_bpe_path)
        # The same preprocessing as `Sam3Processor.set_image`: stretch to S x S, scale to [-1, 1].
        self._transform = Sam3Processor(
            model=None, resolution=arch.image_size, device="cpu"
        ).transform

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        # sam3's sine position encodings keep precomputed tensors in a plain dict, which
        # `.to()` does not move; move them with the parameters.
        super()._apply(fn, recurse)
        for module in self.modules():
            if isinstance(module, PositionEmbeddingSine):
                module.cache = {size: fn(pos) for size, pos in module.cache.items()}
            if "_device" in vars(module):  # sam3's detector parts cache their device
                module._device = None
        return self

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> ImageEmbedding:
        """Embed one image.

        Args:
            image: (3, H, W) uint8 RGB, on any device.
        """
        height, width = image.shape[-2:]
        pixels = self._transform(v2.functional.to_image(image).to(self.device)).unsqueeze(0)
        trunk = self.image_encoder.trunk(pixels)[-1]
        embedding = self.embedding_from_trunk(trunk, (int(height), int(width)))
        if self.concepts is None:
            return embedding
        return dataclasses.replace(embedding, trunk=trunk)

    @torch.inference_mode()
    def embedding_from_trunk(self, trunk: torch.Tensor, orig_hw: tuple[int, int]) -> ImageEmbedding:
        """The interactive decoder's inputs from the trunk output (1, D, S/14, S/14): the
        SAM2-style neck, `conv_s0`/`conv_s1` and `no_mem_embed`."""
        tracker = self.predictor.model
        backbone_fpn, vision_pos_enc = neck_features(self.image_encoder, trunk)
        # From here on this repeats `Sam3Processor.set_image` and `Sam3Image.predict_inst`
        # step for step, so that the cached tensors are exactly what sam3 would decode from.
        backbone_fpn[0] = tracker.sam_mask_decoder.conv_s0(backbone_fpn[0])
        backbone_fpn[1] = tracker.sam_mask_decoder.conv_s1(backbone_fpn[1])
        _, vision_feats, _, _ = tracker._prepare_backbone_features(
            {"backbone_fpn": backbone_fpn, "vision_pos_enc": vision_pos_enc}
        )
        vision_feats[-1] = vision_feats[-1] + tracker.no_mem_embed
        sizes = self.arch.feature_sizes
        feats = [
            feat.permute(1, 2, 0).view(1, -1, *size)
            for feat, size in zip(vision_feats[::-1], sizes[::-1], strict=True)
        ][::-1]
        return ImageEmbedding(
            image_embed=feats[2], high_res_feats=(feats[0], feats[1]), orig_hw=orig_hw
        )

    @torch.inference_mode()
    def decode(
        self,
        embedding: ImageEmbedding,
        *,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> Decoded:
        """Decode B prompts of one image in one call and keep each prompt's best proposal
        (`Decoded` with B entries).

        Args:
            embedding: from `encode`, in any dtype.
            point_coords: (B, N, 2) float, x/y in original-image pixels; pad with label -1.
            point_labels: (B, N) int: 1 positive, 0 negative, -1 not a point.
            boxes: (B, 4) float XYXY in original-image pixels.
            mask_input: (B, 1, L, L) float32 low-res logits of an earlier call.
            multimask_output: let the decoder propose three masks per prompt.
        """
        batch = _check_decoder_inputs(point_coords, point_labels, boxes, mask_input, self.arch)
        # sam3's predictor keeps the image it decodes on the object; a shallow copy per call
        # gives each call its own (shared weights, no lock, no cross-talk between threads),
        # with transforms that leave upsampling to below (a module dict of its own, so that
        # the stand-in never reaches the shared predictor).
        predictor = copy.copy(self.predictor)
        transforms = self.predictor._transforms
        object.__setattr__(
            predictor,
            "_modules",
            {**self.predictor._modules, "_transforms": _UpsampleLater(transforms)},
        )
        # Under an autocast (the GPU's bf16, as sam3 runs there) the features go in as they
        # were stored; without one, in float32 as sam3's own float32 path has them.
        as_stored = torch.is_autocast_enabled(self.device.type)
        predictor._features = {
            "image_embed": embedding.image_embed if as_stored else embedding.image_embed.float(),
            "high_res_feats": [
                feat if as_stored else feat.float() for feat in embedding.high_res_feats
            ],
        }
        predictor._orig_hw = [embedding.orig_hw]
        predictor._is_image_set = True
        mask_input_t, coords, labels, box = predictor._prep_prompts(
            point_coords, point_labels, boxes, mask_input, normalize_coords=True
        )
        proposals, scores, low_res = predictor._predict(
            coords, labels, box, mask_input_t, multimask_output, return_logits=True
        )
        best = scores.argmax(dim=1)
        rows = torch.arange(batch, device=best.device)
        # Only each prompt's best proposal is brought to full size: sam3's hole filling and
        # upsampling act on each mask alone, so this is what sam3 returns, for a third of it.
        masks = transforms.postprocess_masks(proposals[rows, best][:, None], embedding.orig_hw)
        # Thresholded where they were computed, then to the host in one go.
        masks, scores, low_res = _to_host(
            masks[:, 0] > predictor.mask_threshold,
            scores[rows, best].float(),
            low_res[rows, best].float(),
        )
        return Decoded(masks=masks, scores=scores, low_res_logits=low_res)


def _to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """The tensors as NumPy arrays. From a GPU: copied into pinned host memory without
    blocking, then one synchronisation for all of them."""
    if tensors[0].device.type != "cuda":
        return [t.numpy() for t in tensors]
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, source in zip(host, tensors, strict=True):
        target.copy_(source, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [t.numpy() for t in host]


class _UpsampleLater:
    """sam3's `SAM2Transforms` for one decode, but `postprocess_masks` (hole filling and
    upsampling to the original size) hands the low-res logits back untouched."""

    def __init__(self, transforms: nn.Module) -> None:
        self._transforms = transforms

    def __getattr__(self, name: str) -> object:
        return getattr(self._transforms, name)

    @staticmethod
    def postprocess_masks(masks: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        return masks


def _check_decoder_inputs(
    point_coords: np.ndarray | None,
    point_labels: np.ndarray | None,
    boxes: np.ndarray | None,
    mask_input: np.ndarray | None,
    arch: Architecture,
) -> int:
    """Shapes the decoder accepts; returns the batch size B."""
    if point_coords is None and point_labels is not None:
        raise InvalidPromptError("point_labels given without point_coords")
    if point_coords is not None and point_labels is None:
        raise InvalidPromptError("point_coords given without point_labels")
    if point_coords is None and boxes is None:
        raise InvalidPromptError("a decoder call needs points or boxes")
    sizes = set()
    if point_coords is not None and point_labels is not None:
        if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
            raise InvalidPromptError(f"point_coords must be (B, N, 2), got {point_coords.shape}")
        if point_labels.shape != point_coords.shape[:2]:
            raise InvalidPromptError(
                f"point_labels {point_labels.shape} do not match point_coords "
                f"{point_coords.shape[:2]}"
            )
        sizes.add(point_coords.shape[0])
    if boxes is not None:
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InvalidPromptError(f"boxes must be (B, 4), got {boxes.shape}")
        sizes.add(boxes.shape[0])
    if mask_input is not None:
        side = arch.low_res_size
        if mask_input.ndim != 4 or mask_input.shape[1:] != (1, side, side):
            raise InvalidPromptError(f"mask_input must be (B, 1, {side}, {side})")
        sizes.add(mask_input.shape[0])
    if len(sizes) != 1:
        raise InvalidPromptError(f"prompt arrays disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()
