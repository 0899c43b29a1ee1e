"""The demo model's checkpoint (SAM3_CHECKPOINT=demo:shapes, trained on synthetic shapes, not
SAM3) serves video sessions too: it names its architecture, sam3's video model is built at
that size with the checkpoint's tensors in it, and its tracker follows shapes clicked once on
the first frame of held-out clips (random weights lose them at once)."""

from __future__ import annotations

import pytest
import torch

from sam3_core.architecture import ARCHITECTURES, TINY
from sam3_core.demo.evaluate import tracking_scores
from sam3_core.errors import WeightsError
from sam3_core.settings import EngineSettings
from sam3_core.video_architecture import load_video_model
from sam3_core.weights import checkpoint_path


def test_the_demo_checkpoint_loads_into_the_video_model_at_its_size() -> None:
    path = checkpoint_path("demo:shapes")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = load_video_model(EngineSettings(checkpoint="demo:shapes", device="cpu"))
    assert model.image_size == ARCHITECTURES[checkpoint["architecture"]].image_size
    state = model.state_dict()
    for key in (
        "tracker.sam_mask_decoder.iou_prediction_head.layers.0.weight",
        "detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight",
    ):
        assert torch.equal(state[key], checkpoint["model"][key]), key


def test_a_checkpoint_that_does_not_fit_the_video_model_is_said_in_one_short_line(
    tmp_path,
) -> None:
    tensors = torch.load(checkpoint_path("demo:shapes"), map_location="cpu", weights_only=True)
    tensors = dict(tensors["model"])
    unnamed = tmp_path / "unnamed.pt"  # no architecture named: loaded strictly, as sam3's are
    torch.save({"model": {**tensors, "tracker.not_in_sam3.weight": torch.zeros(2)}}, unnamed)
    with pytest.raises(WeightsError, match="not a SAM3 video checkpoint") as refused:
        load_video_model(EngineSettings(checkpoint=str(unnamed), device="cpu"), TINY)
    assert len(str(refused.value)) < 600
    key = "tracker.sam_mask_decoder.iou_prediction_head.layers.0.weight"
    tensors[key] = torch.zeros(3, 3)
    misshapen = tmp_path / "misshapen.pt"
    torch.save({"architecture": "tiny", "model": tensors}, misshapen)
    with pytest.raises(WeightsError, match="not a SAM3 video checkpoint") as refused:
        load_video_model(EngineSettings(checkpoint=str(misshapen), device="cpu"), TINY)
    assert len(str(refused.value)) < 600


# The shipped checkpoint measures J = 0.734 on these 2 held-out clips of 16 frames (5 shapes;
# shapes.json: 0.862 on 32 clips of 30; the one shipped before, 0.852 here: 5 shapes rank
# checkpoints no better than chance); random weights 0.005.
MIN_TRACK_J = 0.6


def test_the_demo_model_tracks_held_out_shapes_and_random_weights_do_not() -> None:
    trained = tracking_scores(EngineSettings(checkpoint="demo:shapes", device="cpu"), 2, 16)
    random = tracking_scores(EngineSettings(random_weights="tiny", device="cpu"), 2, 16)
    assert trained["j"] > MIN_TRACK_J, trained["j_per_frame"]
    assert random["j"] < 0.1, random["j_per_frame"]
