"""`POST /sam3/embedding` and `GET /sam3/decoder.onnx`: a client decodes clicks itself, with
the same masks as `/sam3/visual_segment` (tiny model, random weights, hole filling off)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from pycocotools import mask as coco_mask

from sam3_core import onnx_decoder
from sam3_core.protocol.embedding import MEDIA_TYPE, read_embedding
from tests.unit.http_client import B64, CLICK, make_client


def test_embedding_is_the_decoders_input_and_decodes_as_the_server_does(api, engine):
    answer = api.post("/sam3/embedding", json={"image": {"type": "base64", "value": B64}})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == MEDIA_TYPE
    image_id = answer.headers["x-sam3-image-id"]
    header, arrays = read_embedding(answer.content)
    assert header["encoding"] == "float16" and header["orig_hw"] == [90, 120]
    decoder = api.get("/sam3/decoder.onnx")
    assert decoder.status_code == 200
    assert header["decoder"]["etag"] == decoder.headers["etag"].strip('"')
    session = ort.InferenceSession(decoder.content, providers=["CPUExecutionProvider"])
    point = CLICK["points"][0]
    feed = onnx_decoder.decoder_inputs(
        arrays, [[point["x"], point["y"]]], [1], orig_hw=tuple(header["orig_hw"])
    )
    low_res, scores = session.run(None, feed)
    chosen, score = onnx_decoder.select_proposal(low_res, scores, True, header["decoder"])
    served = api.post(
        "/sam3/visual_segment",
        json={"image_id": image_id, "prompts": [CLICK], "format": "rle"},
    ).json()["predictions"][0]
    # The wire's float16 against the server's float32: the same mask, nearly the same score.
    assert abs(score - served["confidence"]) < 1e-2
    mask = onnx_decoder.postprocess(engine.model, chosen, (90, 120))
    served_mask = coco_mask.decode({"size": [90, 120], "counts": served["masks"]["counts"]})
    union = np.logical_or(mask, served_mask).sum()
    assert union > 0 and np.logical_and(mask, served_mask).sum() / union >= 0.98


def test_encodings_and_sizes(api):
    first = api.post("/sam3/embedding", json={"image": {"type": "base64", "value": B64}})
    image_id = first.headers["x-sam3-image-id"]
    sizes = {}
    for encoding in ("float32", "float16", "int8"):
        answer = api.post("/sam3/embedding", json={"image_id": image_id, "encoding": encoding})
        assert answer.status_code == 200 and answer.headers["x-sam3-embedding-cache"] == "hit"
        header, arrays = read_embedding(answer.content)
        assert header["encoding"] == encoding
        assert set(arrays) == {"image_embed", "high_res_feats_0", "high_res_feats_1"}
        sizes[encoding] = len(answer.content)
    assert sizes["int8"] < 0.6 * sizes["float16"] < 0.6 * sizes["float32"]
    bad = api.post("/sam3/embedding", json={"image_id": image_id, "encoding": "int4"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
    unknown = api.post("/sam3/embedding", json={"image_id": "never-sent"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "image_not_cached"


def test_decoder_etag_revalidates(api):
    first = api.get("/sam3/decoder.onnx")
    etag = first.headers["etag"]
    assert first.content[:2] and "no-cache" in first.headers["cache-control"]
    again = api.get("/sam3/decoder.onnx", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    stale = api.get("/sam3/decoder.onnx", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_tenancy(engine):
    api, _ = make_client(engine, api_keys="k-one, k-two")
    one, two = {"Authorization": "Bearer k-one"}, {"Authorization": "Bearer k-two"}
    body = {"image": {"type": "base64", "value": B64}, "image_id": "mine"}
    assert api.post("/sam3/embedding", json=body, headers=one).status_code == 200
    other = api.post("/sam3/embedding", json={"image_id": "mine"}, headers=two)
    assert other.status_code == 404 and other.json()["code"] == "image_not_cached"
    assert api.post("/sam3/embedding", json={"image_id": "mine"}).status_code == 401
    assert api.get("/sam3/decoder.onnx").status_code == 401
    assert api.get("/sam3/decoder.onnx", headers=two).status_code == 200


def test_openapi_documents_the_binary_replies(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert MEDIA_TYPE in paths["/sam3/embedding"]["post"]["responses"]["200"]["content"]
    assert "/sam3/decoder.onnx" in paths
