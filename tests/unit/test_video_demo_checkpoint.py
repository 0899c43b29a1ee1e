"""The demo model's checkpoint (SAM3_CHECKPOINT=demo:shapes, trained on synthetic shapes, not
SAM3) serves video sessions too: it names its architecture, and sam3's video model is built at
that size with the checkpoint's tensors in it. Its tracker's memory was never trained (the
demo model learned clicks on still scenes), so nothing here is about tracking quality."""

from __future__ import annotations

import torch

from sam3_core.architecture import ARCHITECTURES
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
