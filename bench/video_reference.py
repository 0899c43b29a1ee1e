"""sam3's own `Sam3VideoPredictor`, the reference video sessions must match, and the random
weights the video tests and `bench.video` share.

The predictor's constructor builds the full-size model with `.cuda()`; the reference is the
same class around a model of ours (`build_video_model`: sam3's classes at a chosen size),
run through sam3's `handle_request` / `handle_stream_request` on a folder of frame files,
as a sam3 user would.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sam3_core.architecture import Architecture
from sam3_core.sam3_compat import clip_vocabulary, quiet_sam3, running_on
from sam3_core.video_architecture import Sam3VideoModel, build_video_model

with quiet_sam3():
    from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor


def random_video_model(arch: Architecture, seed: int = 0) -> Sam3VideoModel:
    """sam3's video model with random weights that detect something.

    Drawn at random, the detector's scores sit near 0.5 and its presence score damps them
    below sam3's thresholds: no object would ever be found. A larger prompt projection and
    a presence bias make some queries score high, so that tests compare real detections,
    masks and tracks (still random: meaningless, deterministic).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_video_model(arch, clip_vocabulary())
    return detecting(model)


def detecting(model: Sam3VideoInferenceWithInstanceInteractivity) -> Any:
    """`model` (random weights) changed to detect a few objects (see `random_video_model`)."""
    with torch.no_grad():
        detector = model.detector
        detector.dot_prod_scoring.prompt_proj.weight.mul_(3.0)
        detector.transformer.decoder.presence_token_head.layers[-1].bias.add_(8.0)
    # Most queries then score 0.5-0.8: keep the top few (sam3's mask NMS compares every pair
    # above this threshold, which dominates a tiny model's time).
    model.score_threshold_detection = 0.77
    return model


class ReferencePredictor(Sam3VideoPredictor):
    """`Sam3VideoPredictor` on a given model (its constructor would build one on CUDA)."""

    def __init__(self, model: Sam3VideoModel) -> None:
        self.model = model
        self.async_loading_frames = False
        self.video_loader_type = "cv2"

    def _get_session_stats(self) -> str:  # sam3 formats CUDA memory into every debug line
        return ""

    def _get_torch_and_gpu_properties(self) -> str:
        return ""

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """As its predictor runs on a GPU: bf16 autocast for the whole run, here on the CPU."""
        with running_on(torch.device("cpu")), torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    def request(self, **request: Any) -> Any:
        with self.running():
            return self.handle_request(request)

    def stream(self, **request: Any) -> list[dict[str, Any]]:
        with self.running():
            return list(self.handle_stream_request(request))


@contextlib.contextmanager
def frame_folder(frames: list[bytes], suffix: str) -> Iterator[str]:
    """The frames as files `0.<suffix>`, `1.<suffix>`, ... (sam3's image-folder layout)."""
    with tempfile.TemporaryDirectory() as folder:
        for index, frame in enumerate(frames):
            Path(folder, f"{index}.{suffix}").write_bytes(frame)
        yield folder
