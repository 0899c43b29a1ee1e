"""SAM3's video model (detector + tracker, `Sam3VideoInferenceWithInstanceInteractivity`),
built from the `sam3` package's own classes as `sam3.model_builder.build_sam3_video_model`
(0.1.4) builds it, at any `Architecture` size (`FULL` repeats its hyper-parameters, so its
checkpoints load here unchanged).

The video model has its own ViT trunk, text encoder and detector: a replica that serves
videos holds them beside the image model's (built on its first video session).
"""

from __future__ import annotations

import logging
import time

import torch

from sam3_core.architecture import (
    ARCHITECTURES,
    FULL,
    Architecture,
    build_tracker,
    build_vision_neck,
)
from sam3_core.concept_architecture import (
    _detector_transformer,
    _dot_product_scoring,
    _geometry_encoder,
    _segmentation_head,
    build_text_encoder,
)
from sam3_core.errors import WeightsError
from sam3_core.sam3_compat import (
    allow_empty_connected_components,
    building_on,
    clip_vocabulary,
    quiet_sam3,
)
from sam3_core.settings import EngineSettings
from sam3_core.weights import (
    HOW_TO_GET_WEIGHTS,
    _architecture_of,
    checkpoint_path,
    resolve_device,
)

with quiet_sam3():
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
    from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity
    from sam3.model.vl_combiner import SAM3VLBackbone

logger = logging.getLogger(__name__)
allow_empty_connected_components()

# `build_sam3_video_model(apply_temporal_disambiguation=True)`'s heuristics, its default.
VIDEO_HEURISTICS = {
    "score_threshold_detection": 0.5,
    "assoc_iou_thresh": 0.1,
    "det_nms_thresh": 0.1,
    "new_det_thresh": 0.7,
    "hotstart_delay": 15,
    "hotstart_unmatch_thresh": 8,
    "hotstart_dup_thresh": 8,
    "suppress_unmatched_only_within_hotstart": True,
    "min_trk_keep_alive": -1,
    "max_trk_keep_alive": 30,
    "init_trk_keep_alive": 30,
    "suppress_overlapping_based_on_recent_occlusion_threshold": 0.7,
    "suppress_det_close_to_boundary": False,
    "fill_hole_area": 16,
    "recondition_every_nth_frame": 16,
    "masklet_confirmation_enable": False,
    "decrease_trk_keep_alive_for_empty_masklets": False,
}


class Sam3VideoModel(Sam3VideoInferenceWithInstanceInteractivity):
    """sam3's video model, its tracker state kept in host memory when `offload_state` is
    set: sam3's own `offload_state_to_cpu` option of the tracker, which its video model does
    not pass on (its tracker moves memories back to the GPU as it reads them)."""

    offload_state = False

    def _init_new_tracker_state(self, inference_state: dict) -> dict:
        return self.tracker.init_state(
            cached_features=inference_state["feature_cache"],
            video_height=inference_state["orig_height"],
            video_width=inference_state["orig_width"],
            num_frames=inference_state["num_frames"],
            offload_state_to_cpu=self.offload_state,
        )


def build_video_model(arch: Architecture, bpe_path: str) -> Sam3VideoModel:
    """sam3's video model with `arch`'s sizes, random weights (load a checkpoint after).

    The detector's vision backbone is sam3's dual neck (detector and SAM2-style levels) on the
    ViT trunk; the tracker reads the SAM2-style levels, the detector the others.
    """
    vision = build_vision_neck(arch, with_detector_neck=True)
    tracker = build_tracker(arch, use_memory_selection=True)
    with building_on(torch.device("cpu")):
        detector = Sam3ImageOnVideoMultiGPU(
            num_feature_levels=1,
            backbone=SAM3VLBackbone(
                scalp=1, visual=vision, text=build_text_encoder(arch, bpe_path)
            ),
            transformer=_detector_transformer(arch),
            segmentation_head=_segmentation_head(arch),
            semantic_segmentation_head=None,
            input_geometry_encoder=_geometry_encoder(arch),
            use_early_fusion=True,
            use_dot_prod_scoring=True,
            dot_prod_scoring=_dot_product_scoring(arch),
            supervise_joint_box_scores=True,
        )
        model = Sam3VideoModel(
            detector=detector,
            tracker=tracker,
            image_size=arch.image_size,
            image_mean=(0.5, 0.5, 0.5),
            image_std=(0.5, 0.5, 0.5),
            compile_model=False,
            **VIDEO_HEURISTICS,
        )
    return model.eval()


def load_video_model(
    settings: EngineSettings, checkpoint_arch: Architecture = FULL
) -> Sam3VideoModel:
    """The video model the settings ask for (a released SAM3 checkpoint, loaded strictly as
    `build_sam3_video_model` loads it, or random weights), on their device, in eval mode."""
    device = resolve_device(settings.device)
    started = time.perf_counter()
    if settings.checkpoint:
        path = checkpoint_path(settings.checkpoint)
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise WeightsError(f"cannot read checkpoint {path}: {exc}") from exc
        # A checkpoint made here names its architecture (the demo model's is `tiny`).
        ours = "architecture" in checkpoint
        model = build_video_model(_architecture_of(checkpoint, checkpoint_arch), clip_vocabulary())
        if "model" in checkpoint and isinstance(checkpoint["model"], dict):
            checkpoint = checkpoint["model"]
        _load_video_state(model, checkpoint, path, strict=not ours)
        source = str(path)
    elif settings.random_weights:
        arch = ARCHITECTURES[settings.random_weights]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.random_seed)
            model = build_video_model(arch, clip_vocabulary())
        source = f"RANDOM weights ({arch.name}, seed {settings.random_seed})"
    else:
        raise WeightsError(HOW_TO_GET_WEIGHTS)
    model = model.to(device).eval()
    logger.info(
        "SAM3 video model from %s on %s, built in %.1f s",
        source,
        device,
        time.perf_counter() - started,
    )
    return model


# The neck's fourth level, which sam3's backbone drops (`scalp=1`): a checkpoint made from the
# image model here (the demo model's) has no tensors for it, and none are read.
_DROPPED_LEVEL = (".convs.3.", ".sam2_convs.3.")


def _load_video_state(model: Sam3VideoModel, state: dict, path: object, strict: bool) -> None:
    """A released checkpoint loads strictly; one made here (the demo model's, from the image
    model) may lack the dropped neck level and hold tensors the video model has no use for."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape: torch names every one
        first = str(exc).splitlines()[:4]
        raise WeightsError(f"{path} is not a SAM3 video checkpoint: {' '.join(first)}") from exc
    missing = [key for key in missing if not any(level in key for level in _DROPPED_LEVEL)]
    if missing:
        raise WeightsError(
            f"{path} lacks {len(missing)} tensors of the video model (first: {missing[:3]})"
        )
    if unexpected and strict:
        raise WeightsError(
            f"{path} is not a SAM3 video checkpoint: {len(unexpected)} tensors the video model "
            f"does not have (first: {unexpected[:3]})"
        )
    if unexpected:
        logger.info("%s: %d tensors the video model does not use", path, len(unexpected))
