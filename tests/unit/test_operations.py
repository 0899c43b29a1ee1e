"""The operation table: each operation declared once, everything else derived from it."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from deployments.operations import OPERATIONS, SEGMENT, run
from deployments.segmenter import SegmenterReplica
from sam3_core import PromptSet, Segmenter, SegmentRequest
from tests.conftest import encode_image, random_pixels

CLICK = PromptSet.model_validate({"points": [{"x": 9, "y": 9, "positive": True}]})


def test_every_operation_is_an_engine_method_and_a_replica_method():
    for operation in OPERATIONS:
        assert callable(getattr(Segmenter, operation.name)), operation.name
        method = getattr(SegmenterReplica, operation.name)
        assert inspect.iscoroutinefunction(method) and method.__name__ == operation.name


def test_routes_and_names_are_unique():
    assert (
        len({op.path for op in OPERATIONS})
        == len({op.name for op in OPERATIONS})
        == len(OPERATIONS)
    )


def test_segment_reply_formats(segmenter):
    data = encode_image(random_pixels(100))
    rle = run(segmenter, SEGMENT, SegmentRequest(image=data, mask_format="rle", prompts=CLICK), "r")
    assert rle.body.startswith(b'{"predictions":[') and rle.replica == "r"
    decoded = segmenter.segment(SegmentRequest(image=data, prompts=CLICK)).decoded
    (prediction,) = json.loads(rle.body)["predictions"]
    assert prediction["format"] == "rle" and prediction["masks"]["size"] == [120, 160]
    mask = coco_mask.decode({"size": [120, 160], "counts": prediction["masks"]["counts"]})
    assert np.array_equal(mask.astype(bool), decoded.masks[0])
    polygon = run(segmenter, SEGMENT, SegmentRequest(image=data, prompts=CLICK), "r")
    (as_polygon,) = json.loads(polygon.body)["predictions"]
    assert as_polygon["format"] == "polygon"
    assert as_polygon["confidence"] == pytest.approx(float(decoded.scores[0]))
    assert polygon.embedding_cache == "hit" and rle.embedding_cache == "miss"
    assert {"decode", "encode"} <= set(polygon.timings) and "embed" in rle.timings
