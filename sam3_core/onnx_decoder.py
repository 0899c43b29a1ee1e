"""The interactive decoder's ONNX face: sam3's prompt encoder and mask decoder exported for
onnxruntime (the page's Web Worker runs it with onnxruntime-web), beside `InteractiveSam3`
as segment-anything keeps `SamOnnxModel` beside `SamPredictor`.

The graph takes one prompt of one image and answers all four proposals of the mask decoder
and their scores; `select_proposal` picks one as `InteractiveSam3.decode` does (and the page
mirrors it), and `postprocess` brings it to full size with sam3's own hole filling and
upsampling.

    onnx_bytes = export_decoder(model)
    inputs = decoder_inputs(embedding, point_coords, point_labels)
    low_res, scores = onnxruntime.InferenceSession(onnx_bytes).run(None, inputs)
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import threading
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam3_core.model import ImageEmbedding, InteractiveSam3

OPSET = 17
# Bumped when the graph changes: part of the ETag.
GRAPH_VERSION = "3"
INPUT_NAMES = (
    "image_embed",
    "high_res_feats_0",
    "high_res_feats_1",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("low_res_masks", "iou_predictions")
# The mask input's side when there is no previous decode: the smallest sam3's mask
# downscaling (two stride-2 convolutions) takes. Its embedding is gated off then, and the
# graph skips downscaling an L x L plane of zeros (a tenth of a click's time in WebAssembly).
NO_MASK_SIDE = 4
# sam3's logits clamp for the low-res masks it hands back (`_predict`).
LOGITS_CLAMP = 32.0


class _Reassociated(nn.Module):
    """sam3's `Attention` between a few tokens (T: 8 or 9 for a click) and the image (N =
    5184 pixels at full size), reassociated so that its projections act on the tokens' side
    and the image is never split into heads: the same function up to float rounding, in
    2·N·C·H·T multiplications instead of 2·N·C·C/2 (H heads; `_TokensToImage`,
    `_ImageToTokens`)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention
        self.heads = attention.num_heads
        self.head_dim = attention.internal_dim // attention.num_heads

    def _split(self, tokens: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        """The few tokens projected, B x H x T x d."""
        batch, count, _ = tokens.shape
        return projection(tokens).reshape(batch, count, self.heads, self.head_dim).transpose(1, 2)

    def _per_head(self, weight: torch.Tensor) -> torch.Tensor:
        """A projection's (H·d) x C weight as H x d x C."""
        return weight.reshape(self.heads, self.head_dim, -1)


class _TokensToImage(_Reassociated):
    """From the tokens (q: B x T x C) to the image (k, v: B x N x C). The keys' bias adds a
    constant to each query's logits, which the softmax cancels; the attention's rows sum to
    1, so the values' bias passes through."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self.attention
        batch, tokens, _ = q.shape
        query_k = torch.matmul(self._split(q, a.q_proj), self._per_head(a.k_proj.weight))
        logits = torch.matmul(query_k.reshape(batch, self.heads * tokens, -1), k.transpose(1, 2))
        attention = torch.softmax(logits / math.sqrt(self.head_dim), dim=-1)
        attended = torch.matmul(attention, v).reshape(batch, self.heads, tokens, -1)
        out = torch.matmul(attended, self._per_head(a.v_proj.weight).transpose(1, 2))
        out = out.transpose(1, 2).reshape(batch, tokens, -1) + a.v_proj.bias
        return a.out_proj(out)


class _ImageToTokens(_Reassociated):
    """From the image (q: B x N x C) to the tokens (k, v: B x T x C): the queries'
    projection folded into the keys, the output projection into the values."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self.attention
        batch, tokens, _ = k.shape
        pixels, width = q.shape[1], self.heads * tokens
        key = self._split(k, a.k_proj)
        key_q = torch.matmul(key, self._per_head(a.q_proj.weight)).reshape(batch, width, -1)
        key_bias = (key * a.q_proj.bias.reshape(1, self.heads, 1, self.head_dim)).sum(-1)
        logits = torch.matmul(q, key_q.transpose(1, 2)) + key_bias.reshape(batch, 1, width)
        attention = torch.softmax(
            (logits / math.sqrt(self.head_dim)).reshape(batch, pixels, self.heads, tokens), dim=-1
        )
        weight_o = self._per_head(a.out_proj.weight.T)
        value_o = torch.matmul(self._split(v, a.v_proj), weight_o).reshape(batch, width, -1)
        return torch.matmul(attention.reshape(batch, pixels, width), value_o) + a.out_proj.bias


def _transposed_conv_channels_last(
    x: torch.Tensor, conv: nn.ConvTranspose2d, height: int, width: int
) -> torch.Tensor:
    """A 2x2, stride-2 `ConvTranspose2d` on B x (H·W) x C_in channels-last pixels as one
    matrix product and a block reorder: B x (2H·2W) x C_out, channels last."""
    c_in, c_out = conv.weight.shape[:2]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    y = torch.matmul(x, weight).reshape(-1, height, width, 2, 2, c_out)
    return y.permute(0, 1, 3, 2, 4, 5).reshape(-1, 4 * height * width, c_out) + conv.bias


def rearranging_pays(model: InteractiveSam3) -> bool:
    """Whether `Sam3OnnxDecoder` rearranges this model's graph: where a click's tokens (the
    decoder's IoU, mask and object-score tokens, the point and its padding point) times the
    heads are fewer than the cross-attentions' width (full size: 8 x 8 < 128); not at the
    narrow and tiny models' widths (8 x 8 against 32), whose graph stays sam3's modules as
    they are. Every click added to a prompt adds a token."""
    decoder = model.predictor.model.sam_mask_decoder
    attention = decoder.transformer.final_attn_token_to_image
    click_tokens = 1 + decoder.num_mask_tokens + 1 + 2
    return attention.num_heads * click_tokens < attention.internal_dim


class Sam3OnnxDecoder(nn.Module):
    """sam3's prompt encoder + mask decoder for one prompt, in export-friendly form.

    The graph computes what `MaskDecoder.predict_masks` computes (same weights, same
    function up to float rounding: `tests/unit/test_onnx_decoder.py`), rearranged for a CPU
    in a browser, where a click is the graph's time: the cross-attentions reassociated
    (`_TokensToImage`, `_ImageToTokens`) and the upscaling kept channels-last, its
    transposed convolutions as matrix products and its `LayerNorm2d` as one layer norm, the
    masks one product with the hypernetworks' outputs: at full size, 0.67x the
    multiplications, and onnxruntime-web's run in Chromium takes ~0.7-0.8x the time of the
    graph sam3's modules export as they are (`bench/browser_decode.py` times both). At the
    narrow and tiny models' widths rearranging does not pay, and their graph is sam3's.

    Inputs (all float32):
        image_embed: (1, C, g, g); high_res_feats_0: (1, C/8, 4g, 4g);
        high_res_feats_1: (1, C/4, 2g, 2g): the cached embedding (`ImageEmbedding`).
        point_coords: (1, N, 2) x/y in original-image pixels; a box is two points first,
            labelled 2 and 3 (top-left, bottom-right).
        point_labels: (1, N): 1 positive, 0 negative, 2/3 box corners, -1 padding.
        mask_input: (1, 1, L, L) low-res logits of the previous decode; with none, zeros
            of any side from 4 (`NO_MASK_SIDE`): it is not used then.
        has_mask_input: (1,) 1 where mask_input is used, else 0.
        orig_im_size: (2,) the original image's (H, W).

    Outputs:
        low_res_masks: (1, 4, L, L) float32 logits of the four mask tokens (0 is the
            single-mask token, 1-3 the multimask proposals), unclamped.
        iou_predictions: (1, 4) float32 predicted IoU of each.
    """

    def __init__(self, model: InteractiveSam3, rearrange: bool = True) -> None:
        super().__init__()
        tracker = model.predictor.model
        # Copies on the CPU in float32: exporting never touches the served model.
        self.prompt_encoder = copy.deepcopy(tracker.sam_prompt_encoder).float().cpu().eval()
        self.mask_decoder = copy.deepcopy(tracker.sam_mask_decoder).float().cpu().eval()
        assert self.mask_decoder.use_high_res_features, "sam3's tracker decodes with them"
        transformer = self.mask_decoder.transformer
        self.rearranged = rearrange and rearranging_pays(model)
        if self.rearranged:
            for layer in transformer.layers:
                layer.cross_attn_token_to_image = _TokensToImage(layer.cross_attn_token_to_image)
                layer.cross_attn_image_to_token = _ImageToTokens(layer.cross_attn_image_to_token)
            transformer.final_attn_token_to_image = _TokensToImage(
                transformer.final_attn_token_to_image
            )
        self.image_size = model.arch.image_size
        self._upscaled_width = (self.mask_decoder.output_upscaling[1].weight.numel(),)
        self.register_buffer("dense_pe", self.prompt_encoder.get_dense_pe().detach().clone())

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # sam3's `transform_coords`: pixels -> [0, 1] -> model input pixels.
        scale = self.image_size / orig_im_size.flip(0)
        coords = point_coords * scale
        # `_predict` always embeds points with one padding point (its boxes come as points).
        sparse = self.prompt_encoder._embed_points(coords, point_labels, pad=True)
        masked = self.prompt_encoder._embed_masks(mask_input)
        unmasked = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask_input * masked + (1 - has_mask_input) * unmasked
        if self.rearranged:
            return self._predict_masks(
                image_embed + dense, sparse, high_res_feats_0, high_res_feats_1
            )
        masks, scores, _, _ = self.mask_decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        return masks, scores

    def _predict_masks(
        self,
        src: torch.Tensor,
        sparse: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`MaskDecoder.predict_masks` for one prompt of one image (`repeat_image=False`),
        rearranged (the class's docstring)."""
        decoder = self.mask_decoder
        output_tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        first = 1 if decoder.pred_obj_scores else 0
        if first:
            output_tokens.insert(0, decoder.obj_score_token.weight)
        tokens = torch.cat([torch.cat(output_tokens)[None], sparse], dim=1)
        _, _, height, width = src.shape
        hs, pixels = decoder.transformer(src, self.dense_pe, tokens)
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        up = _transposed_conv_channels_last(pixels, dc1, height, width)
        up = up + feat_s1.flatten(2).transpose(1, 2)
        up = act1(F.layer_norm(up, self._upscaled_width, ln1.weight, ln1.bias, ln1.eps))
        up = _transposed_conv_channels_last(up, dc2, 2 * height, 2 * width)
        up = act2(up + feat_s0.flatten(2).transpose(1, 2))
        count = decoder.num_mask_tokens
        hyper = torch.stack(
            [mlp(hs[:, first + 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
            dim=1,
        )
        masks = torch.matmul(up, hyper.transpose(1, 2)).transpose(1, 2)
        masks = masks.reshape(1, count, 4 * height, 4 * width)
        return masks, decoder.iou_prediction_head(hs[:, first])


def decoder_digest(model: InteractiveSam3) -> str:
    """SHA-256 over the decoder's weights and settings: the ONNX file's ETag."""
    tracker = model.predictor.model
    digest = hashlib.sha256(f"{GRAPH_VERSION}:{OPSET}:{model.arch}".encode())
    digest.update(repr(decoder_settings(model)).encode())
    for module in (tracker.sam_prompt_encoder, tracker.sam_mask_decoder):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def decoder_settings(model: InteractiveSam3) -> dict[str, float | int]:
    """What the page needs beside the graph to decode as the server does."""
    predictor = model.predictor
    mask_decoder = predictor.model.sam_mask_decoder
    return {
        "image_size": model.arch.image_size,
        "low_res_size": model.arch.low_res_size,
        "no_mask_side": NO_MASK_SIDE,
        "mask_threshold": float(predictor.mask_threshold),
        "max_hole_area": float(predictor._transforms.max_hole_area),
        "stability_delta": float(mask_decoder.dynamic_multimask_stability_delta),
        "stability_thresh": float(mask_decoder.dynamic_multimask_stability_thresh),
        "logits_clamp": LOGITS_CLAMP,
    }


def export_decoder(model: InteractiveSam3, rearrange: bool = True) -> bytes:
    """The ONNX file (opset 17, TorchScript exporter) of `Sam3OnnxDecoder(model, rearrange)`,
    with the number of points and the mask input's side dynamic."""
    module = Sam3OnnxDecoder(model, rearrange)
    arch = model.arch
    width = arch.feature_width
    (s0, _), (s1, _), (s2, _) = arch.feature_sizes
    example = (
        torch.zeros(1, width, s2, s2),
        torch.zeros(1, width // 8, s0, s0),
        torch.zeros(1, width // 4, s1, s1),
        torch.full((1, 2, 2), 10.0),
        torch.tensor([[1.0, 0.0]]),
        torch.zeros(1, 1, arch.low_res_size, arch.low_res_size),
        torch.zeros(1),
        torch.tensor([float(arch.image_size), float(arch.image_size)]),
    )
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on sam3's shape asserts, which hold for one prompt of one image.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            example,
            buffer,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                "point_coords": {1: "num_points"},
                "point_labels": {1: "num_points"},
                "mask_input": {2: "mask_side", 3: "mask_side"},
            },
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    import onnx  # here, not at the top: 0.6 s of every replica's start for a rare export

    graph = onnx.load_from_string(buffer.getvalue())
    # Other clients read the decoding settings from the file itself.
    for key, value in decoder_settings(model).items():
        graph.metadata_props.add(key=key, value=str(value))
    return graph.SerializeToString()


class DecoderExport:
    """The model's decoder exported once, on first use (thread-safe), with its digest."""

    def __init__(self, model: InteractiveSam3) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._onnx: bytes | None = None
        self.etag = decoder_digest(model)
        self.settings = {**decoder_settings(model), "etag": self.etag}

    def onnx(self) -> bytes:
        with self._lock:
            if self._onnx is None:
                self._onnx = export_decoder(self._model)
            return self._onnx


def decoder_inputs(
    embedding: ImageEmbedding | dict[str, np.ndarray],
    point_coords: np.ndarray,
    point_labels: np.ndarray,
    mask_input: np.ndarray | None = None,
    orig_hw: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The graph's feed for one prompt.

    Args:
        embedding: an `ImageEmbedding`, or the arrays `protocol.embedding.read_embedding`
            parsed (then `orig_hw` is needed).
        point_coords: (N, 2) x/y in original pixels, box corners first.
        point_labels: (N,) 1, 0, 2/3 (box corners).
        mask_input: (L, L) low-res logits of the previous decode, or None (then a
            `NO_MASK_SIDE` square of zeros, as the page sends).
    """
    if isinstance(embedding, ImageEmbedding):
        arrays = {
            "image_embed": embedding.image_embed,
            "high_res_feats_0": embedding.high_res_feats[0],
            "high_res_feats_1": embedding.high_res_feats[1],
        }
        arrays = {name: t.float().cpu().numpy() for name, t in arrays.items()}
        orig_hw = embedding.orig_hw
    else:
        arrays = {name: embedding[name].astype(np.float32) for name in INPUT_NAMES[:3]}
    assert orig_hw is not None, "orig_hw comes with the embedding"
    side = arrays["high_res_feats_0"].shape[-1]
    has_mask = mask_input is not None
    empty = np.zeros((1, 1, NO_MASK_SIDE, NO_MASK_SIDE), np.float32)
    return {
        **arrays,
        "point_coords": np.asarray(point_coords, np.float32).reshape(1, -1, 2),
        "point_labels": np.asarray(point_labels, np.float32).reshape(1, -1),
        "mask_input": (
            np.asarray(mask_input, np.float32).reshape(1, 1, side, side) if has_mask else empty
        ),
        "has_mask_input": np.array([1.0 if has_mask else 0.0], np.float32),
        "orig_im_size": np.array(orig_hw, np.float32),
    }


def select_proposal(
    low_res_masks: np.ndarray,
    scores: np.ndarray,
    multimask_output: bool,
    settings: dict[str, float | int],
) -> tuple[np.ndarray, float]:
    """The proposal `InteractiveSam3.decode` keeps, from the graph's four: the best of the
    three multimask ones; or, for one mask, token 0 unless its stability is below sam3's
    threshold (`_dynamic_multimask_via_stability`), then the best of the three.

    Args:
        low_res_masks: (1, 4, L, L) float32; scores: (1, 4) float32.

    Returns:
        (L, L) float32 logits (unclamped) and the proposal's score.
    """
    multi, multi_scores = low_res_masks[0, 1:], scores[0, 1:]
    best = int(np.argmax(multi_scores))
    if not multimask_output:
        single = low_res_masks[0, 0]
        delta = settings["stability_delta"]
        area_u = int((single > -delta).sum())
        stability = (single > delta).sum() / area_u if area_u > 0 else 1.0
        if stability >= settings["stability_thresh"]:
            return single, float(scores[0, 0])
    return multi[best], float(multi_scores[best])


def postprocess(
    model: InteractiveSam3, low_res: np.ndarray, orig_hw: tuple[int, int]
) -> np.ndarray:
    """sam3's hole filling and upsampling of one proposal (L, L) to an (H, W) bool mask, as
    `InteractiveSam3.decode` does."""
    predictor = model.predictor
    logits = torch.from_numpy(np.ascontiguousarray(low_res, np.float32))[None, None]
    masks = predictor._transforms.postprocess_masks(logits, orig_hw)
    return (masks[0, 0] > predictor.mask_threshold).numpy()
