"""The full-size SAM3 architecture, random weights, on this CPU (about two minutes), with hole
filling off and in its default setting.

sam3's own `build_sam3_image_model` (text encoder and detector included) is the reference:
our build loads its weights strictly; its interactive part is much smaller and gives the same
masks, scores and logits through the same `Sam3Processor.set_image` + `predict_inst` path,
and its concept part the same instances as `Sam3Processor.set_text_prompt`, from one embed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sam3_core.architecture import FULL, count_parameters
from sam3_core.concept_architecture import initialise_text_encoder
from sam3_core.concept_model import ConceptQueries, instances
from sam3_core.concept_prompts import ConceptPrompt, exemplar_arrays
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import (
    building_on,
    clip_vocabulary,
    leave_tracker_autocast,
    without_pinned_memory,
)
from sam3_core.settings import EngineSettings
from sam3_core.weights import checkpoint_of_sam3_model, load_checkpoint
from tests.conftest import random_pixels
from tests.sam3_reference import best_proposals

pytestmark = pytest.mark.slow


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
        # sam3 leaves these to the checkpoint (uninitialised memory otherwise).
        initialise_text_encoder(full.backbone.language_backbone)
    predictor = full.inst_interactive_predictor
    leave_tracker_autocast(predictor.model)
    predictor._transforms.max_hole_area = 0  # random weights: see tests/conftest.py
    ours = InteractiveSam3(FULL, max_hole_area=0, concepts_bpe_path=clip_vocabulary())
    load_checkpoint(ours, checkpoint_of_sam3_model(full.state_dict()))
    ours.eval()

    full_params, our_params = count_parameters(full), count_parameters(ours)
    # The interactive-only build (SAM3_CONCEPTS=false) is these modules without `concepts`.
    interactive_params = our_params - count_parameters(ours.concepts)
    print(
        f"parameters: sam3 full {full_params / 1e6:.0f} M, ours with concepts "
        f"{our_params / 1e6:.0f} M, interactive-only {interactive_params / 1e6:.0f} M"
    )
    assert interactive_params < 0.6 * full_params
    assert our_params <= full_params  # no second trunk, no fourth neck level

    image = random_pixels(0, 300, 400)
    pixels = torch.from_numpy(image).permute(2, 0, 1)
    processor = Sam3Processor(full, device="cpu", confidence_threshold=0.0)
    state = processor.set_image(pixels)
    prompt = {"point_coords": np.array([[120.0, 90.0]]), "point_labels": np.array([1])}
    theirs = best_proposals(
        *full.predict_inst(
            state, multimask_output=True, return_logits=True, normalize_coords=True, **prompt
        )
    )

    embedding = ours.encode(pixels)
    assert embedding.trunk is not None and embedding.trunk.shape == (1, 1024, 72, 72)
    assert dataclasses.replace(embedding, trunk=None).nbytes == int(20.25 * 2**20)
    assert embedding.nbytes == int(40.5 * 2**20)  # + the trunk output concepts read
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

    # In the service's default setting (hole filling at SAM3_MAX_HOLE_AREA=256 on both
    # sides): several clicks, then a refinement seeded with the first answer's logits.
    holes = EngineSettings.model_fields["max_hole_area"].default
    predictor._transforms.max_hole_area = holes
    ours.predictor._transforms.max_hole_area = holes
    clicks = {
        "point_coords": np.array([[120.0, 90.0], [300.0, 200.0], [60.0, 250.0]]),
        "point_labels": np.array([1, 0, 1]),
    }
    first = _both(full, state, ours, embedding, **clicks)
    refined = _both(full, state, ours, embedding, **clicks, mask_input=first[2][:, None])
    assert not np.array_equal(refined[0], first[0])  # the logits changed the answer
    unfilled = decoded.masks  # the one-click mask above, hole filling off
    filled = _both(full, state, ours, embedding, **prompt)
    assert not np.array_equal(filled[0], unfilled)  # holes were filled

    # Concepts, from the same embedding: sam3's set_image (above) + set_text_prompt is the
    # reference, at a threshold that keeps about half of its queries.
    with without_pinned_memory():
        state = processor.set_text_prompt("a person", state)
        threshold = float(np.median(state["scores"].numpy()))  # between two scores
        state = processor.set_confidence_threshold(threshold, state)
    concepts = ours.concepts
    prompts = [ConceptPrompt(text="a person")]
    queries = ConceptQueries(
        texts=concepts.encode_texts(["a person"]), exemplars=exemplar_arrays(prompts, (300, 400))
    )
    grounding = concepts.ground(concepts.detector_features(embedding.trunk), queries)
    (found,) = instances(
        grounding, (300, 400), [threshold], max_instances=200, max_mask_pixels=2**31
    )
    assert len(found) == len(state["scores"]) > 0
    assert np.array_equal(found.scores, state["scores"].numpy())
    assert np.array_equal(found.boxes, state["boxes"].float().numpy())
    assert np.array_equal(found.masks, state["masks"][:, 0].numpy())


def _both(full, state, ours, embedding, *, point_coords, point_labels, mask_input=None):
    """sam3's `predict_inst` (best proposal) and our decode of one prompt: asserted equal, bit
    for bit; returns sam3's masks (1, H, W), scores (1,), low-res logits (1, 288, 288)."""
    theirs = best_proposals(
        *full.predict_inst(
            state,
            point_coords=point_coords,
            point_labels=point_labels,
            mask_input=mask_input,
            multimask_output=True,
            return_logits=True,
            normalize_coords=True,
        )
    )
    decoded = ours.decode(
        embedding,
        point_coords=point_coords[None],
        point_labels=point_labels[None],
        mask_input=mask_input,
    )
    assert np.array_equal(decoded.masks, theirs[0])
    assert np.array_equal(decoded.scores, theirs[1])
    assert np.array_equal(decoded.low_res_logits, theirs[2])
    return theirs
