"""The full-size SAM3 architecture, random weights, on this CPU (about a minute and a half).

sam3's own `build_sam3_image_model` (text encoder and detector included) is the reference:
the interactive-only build loads its weights strictly, is much smaller, and gives the same
masks, scores and logits through the same `Sam3Processor.set_image` + `predict_inst` path.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sam3_core.architecture import FULL, count_parameters
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import building_on, leave_tracker_autocast
from sam3_core.weights import checkpoint_of_sam3_model, load_checkpoint
from tests.conftest import random_pixels
from tests.sam3_reference import best_proposals

pytestmark = pytest.mark.slow


def clip_vocabulary() -> str:
    """sam3 0.1.4's wheel lacks the CLIP BPE file its text encoder opens; open_clip ships it."""
    import open_clip

    return os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")


def test_full_size_interactive_build_equals_sam3s_full_model():
    from sam3.model.sam3_image_processor import Sam3Processor
    from sam3.model_builder import build_sam3_image_model

    with torch.random.fork_rng(devices=[]), building_on(torch.device("cpu")):
        torch.manual_seed(0)
        full = build_sam3_image_model(
            bpe_path=clip_vocabulary(),
            device="cpu",
            load_from_HF=False,
            enable_inst_interactivity=True,
            compile=False,
        )
    predictor = full.inst_interactive_predictor
    leave_tracker_autocast(predictor.model)
    predictor._transforms.max_hole_area = 0  # random weights: see tests/conftest.py
    ours = InteractiveSam3(FULL, max_hole_area=0)
    load_checkpoint(ours, checkpoint_of_sam3_model(full.state_dict()))
    ours.eval()

    full_params, our_params = count_parameters(full), count_parameters(ours)
    print(
        f"parameters: sam3 full {full_params / 1e6:.0f} M, "
        f"interactive-only {our_params / 1e6:.0f} M"
    )
    assert our_params < 0.6 * full_params

    image = random_pixels(0, 300, 400)
    pixels = torch.from_numpy(image).permute(2, 0, 1)
    state = Sam3Processor(full, device="cpu").set_image(pixels)
    prompt = {"point_coords": np.array([[120.0, 90.0]]), "point_labels": np.array([1])}
    theirs = best_proposals(
        *full.predict_inst(
            state, multimask_output=True, return_logits=True, normalize_coords=True, **prompt
        )
    )
    del state

    embedding = ours.encode(pixels)
    assert embedding.nbytes == int(20.25 * 2**20)
    decoded = ours.decode(
        embedding,
        point_coords=prompt["point_coords"][None],
        point_labels=prompt["point_labels"][None],
    )
    assert decoded.low_res_logits.shape == (1, 288, 288)
    assert decoded.masks.shape == (1, 300, 400)
    assert np.array_equal(decoded.masks, theirs[0])
    assert np.array_equal(decoded.scores, theirs[1])
    assert np.array_equal(decoded.low_res_logits, theirs[2])
