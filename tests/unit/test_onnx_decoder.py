"""The decoder's ONNX face against its torch face (`InteractiveSam3.decode`), in
onnxruntime, on random weights: the same masks and scores for points, boxes and refinement,
with sam3's hole filling on; the smaller wire forms of the embedding keep the masks. Two
models: the tiny one, and the tiny trunk under a full-size decoder (256 wide), whose graph
reassociates the cross-attentions as the full-size one does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sam3_core import onnx_decoder
from sam3_core.architecture import FULL, TINY
from sam3_core.model import InteractiveSam3
from sam3_core.protocol.embedding import read_embedding, write_embedding
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model
from tests.conftest import random_pixels

# (point_coords (N, 2), point_labels (N,), box XYXY or None, multimask_output)
PROMPTS = [
    ([[120.0, 80.0]], [1], None, True),
    ([[120.0, 80.0], [300.0, 200.0]], [1, 0], None, False),
    ([[150.0, 100.0]], [1], [40.0, 30.0, 260.0, 210.0], False),
    (np.zeros((0, 2)), [], [10.0, 20.0, 390.0, 290.0], True),
]


# The tiny trunk under the full-size decoder's widths: its graph is the full-size one's at a
# 224 px input (bench/browser_decode.py runs the full size and the narrow model).
WIDE_DECODER = replace(TINY, name="wide-decoder", feature_width=FULL.feature_width)


@pytest.fixture(scope="module", params=["tiny", "wide-decoder"])
def model(request) -> InteractiveSam3:
    # Hole filling on, as served: the ONNX path must fill the same holes.
    if request.param == "tiny":
        settings = EngineSettings(random_weights="tiny", max_hole_area=256, concepts=False)
        return load_model(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return InteractiveSam3(WIDE_DECODER, max_hole_area=256).eval()


def test_the_wide_decoder_reassociates_and_the_tiny_one_does_not(model):
    transformer = onnx_decoder.Sam3OnnxDecoder(model).mask_decoder.transformer
    reassociated = isinstance(transformer.final_attn_token_to_image, onnx_decoder._TokensToImage)
    assert reassociated == (model.arch.name == "wide-decoder")
    layer = transformer.layers[0]
    assert isinstance(layer.cross_attn_image_to_token, onnx_decoder._ImageToTokens) == (
        reassociated
    )


@pytest.fixture(scope="module")
def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(
        onnx_decoder.export_decoder(model), providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def embedding(model):
    pixels = random_pixels(7, 300, 400)
    return model.encode(torch.from_numpy(pixels).permute(2, 0, 1))


def onnx_prompt(coords, labels, box) -> tuple[np.ndarray, np.ndarray]:
    """Points as the graph takes them: a box is two corner points first, labelled 2 and 3."""
    coords = np.asarray(coords, np.float32).reshape(-1, 2)
    labels = np.asarray(labels, np.float32)
    if box is not None:
        coords = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), coords])
        labels = np.concatenate([[2.0, 3.0], labels])
    return coords, labels


def decode_both(model, session, embedding, prompt, mask_input=None, arrays=None):
    coords, labels, box, multimask = prompt
    torch_kwargs = {"multimask_output": multimask}
    if len(labels):
        torch_kwargs |= {
            "point_coords": np.asarray(coords, np.float32)[None],
            "point_labels": np.asarray(labels, np.int32)[None],
        }
    if box is not None:
        torch_kwargs["boxes"] = np.asarray(box, np.float32)[None]
    if mask_input is not None:
        torch_kwargs["mask_input"] = mask_input[None, None]
    expected = model.decode(embedding, **torch_kwargs)
    feed = onnx_decoder.decoder_inputs(
        embedding if arrays is None else arrays,
        *onnx_prompt(coords, labels, box),
        mask_input,
        orig_hw=embedding.orig_hw,
    )
    low_res, scores = session.run(None, feed)
    settings = onnx_decoder.decoder_settings(model)
    chosen, score = onnx_decoder.select_proposal(low_res, scores, multimask, settings)
    mask = onnx_decoder.postprocess(model, chosen, embedding.orig_hw)
    return expected, mask, score, chosen


# A pixel whose logit lies within float error of 0 may land on either side in the two
# runtimes (the wide decoder's graph reassociates its sums), and hole filling may then fill
# or keep a hole of up to `max_hole_area` (256 px) around it: once, in a clean-clone CI run,
# a refined mask differed so. The logits themselves must agree to 1e-4.
MAX_FLIPPED_PIXELS = 256


def assert_same_mask(mask: np.ndarray, expected: np.ndarray) -> None:
    assert mask.shape == expected.shape
    assert np.count_nonzero(mask != expected) <= MAX_FLIPPED_PIXELS


@pytest.mark.parametrize("prompt", PROMPTS)
def test_onnx_equals_torch_on_float32_inputs(model, session, embedding, prompt):
    expected, mask, score, chosen = decode_both(model, session, embedding, prompt)
    assert_same_mask(mask, expected.masks[0])
    assert abs(score - expected.scores[0]) < 1e-4
    clamped = np.clip(chosen, -onnx_decoder.LOGITS_CLAMP, onnx_decoder.LOGITS_CLAMP)
    np.testing.assert_allclose(clamped, expected.low_res_logits[0], atol=1e-4)
    # Refinement: the previous decode's logits as the mask input.
    refined, mask, score, chosen = decode_both(
        model, session, embedding, prompt, mask_input=expected.low_res_logits[0]
    )
    assert_same_mask(mask, refined.masks[0])
    assert abs(score - refined.scores[0]) < 1e-4
    clamped = np.clip(chosen, -onnx_decoder.LOGITS_CLAMP, onnx_decoder.LOGITS_CLAMP)
    np.testing.assert_allclose(clamped, refined.low_res_logits[0], atol=1e-4)


def test_the_mask_input_is_used(model, session, embedding):
    """The has_mask_input flag gates the mask input: with it, another answer; without it,
    the same answer whatever the mask input's side."""
    coords, labels = onnx_prompt(*PROMPTS[0][:3])
    side = model.arch.low_res_size
    prior = np.random.default_rng(0).normal(0, 8, (side, side)).astype(np.float32)
    without = session.run(None, onnx_decoder.decoder_inputs(embedding, coords, labels))[0]
    with_prior = session.run(None, onnx_decoder.decoder_inputs(embedding, coords, labels, prior))[0]
    assert not np.allclose(without, with_prior)
    # Gated off, the mask input's size does not matter: the smallest answers as a full one.
    full = onnx_decoder.decoder_inputs(embedding, coords, labels)
    full["mask_input"] = np.zeros((1, 1, side, side), np.float32)
    assert side > onnx_decoder.NO_MASK_SIDE
    np.testing.assert_array_equal(session.run(None, full)[0], without)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_smaller_wire_forms_keep_the_masks(model, session, embedding, encoding):
    arrays = {
        "image_embed": embedding.image_embed.float().numpy(),
        "high_res_feats_0": embedding.high_res_feats[0].float().numpy(),
        "high_res_feats_1": embedding.high_res_feats[1].float().numpy(),
    }
    _, received = read_embedding(write_embedding(arrays, embedding.orig_hw, encoding))
    for prompt in PROMPTS:
        exact, mask, _, _ = decode_both(model, session, embedding, prompt, arrays=received)
        assert iou(mask, exact.masks[0]) >= 0.98, (encoding, prompt)


def test_decoder_digest_follows_the_weights(model):
    before = onnx_decoder.decoder_digest(model)
    assert before == onnx_decoder.decoder_digest(model)
    weight = model.predictor.model.sam_mask_decoder.iou_token.weight
    with torch.no_grad():
        weight.add_(1.0)
        try:
            assert onnx_decoder.decoder_digest(model) != before
        finally:
            weight.sub_(1.0)


def test_the_file_carries_the_decoding_settings(model):
    import onnx

    graph = onnx.load_from_string(onnx_decoder.export_decoder(model))
    props = {p.key: p.value for p in graph.metadata_props}
    assert float(props["max_hole_area"]) == 256.0
    assert int(props["low_res_size"]) == model.arch.low_res_size
    assert [i.name for i in graph.graph.input] == list(onnx_decoder.INPUT_NAMES)


@pytest.mark.parametrize("tokens", [3, 30])
def test_the_reassociated_attentions_are_sams(tokens):
    """At the full size's widths, with fewer and with more tokens than pay off."""
    from sam3.sam.transformer import Attention

    torch.manual_seed(0)
    attention = Attention(FULL.feature_width, num_heads=8, downsample_rate=2).eval()
    few, image = torch.randn(1, tokens, 256), torch.randn(1, 500, 256)
    with torch.no_grad():
        to_image = onnx_decoder._TokensToImage(attention)(q=few, k=image + 1, v=image)
        from_image = onnx_decoder._ImageToTokens(attention)(q=image, k=few + 1, v=few)
        torch.testing.assert_close(to_image, attention(q=few, k=image + 1, v=image))
        torch.testing.assert_close(from_image, attention(q=image, k=few + 1, v=few))
