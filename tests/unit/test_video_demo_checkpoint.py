"""The demo model's checkpoint (SAM3_CHECKPOINT=demo:shapes, trained on synthetic shapes, not
SAM3) serves video sessions too: it names its architecture, and sam3's video model is built at
that size with the checkpoint's tensors in it. Its tracker's memory was never trained (the
demo model learned clicks on still scenes), so nothing here is about tracking quality."""

from __future__ import annotations

import pytest
import torch

from sam3_core.architecture import ARCHITECTURES, TINY
from sam3_core.errors import WeightsError
from sam3_core.settings import EngineSettings
from sam3_core.video_architecture import load_video_model
from sam3_core.weights import _checkpoint_path


def test_the_demo_checkpoint_loads_into_the_video_model_at_its_size() -> None:
    path = _checkpoint_path("demo:shapes")
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
    tensors = torch.load(_checkpoint_path("demo:shapes"), map_location="cpu", weights_only=True)
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
