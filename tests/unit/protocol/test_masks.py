import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pydantic import TypeAdapter

from sam3_core.protocol.bodies import Prediction
from sam3_core.protocol.masks import mask_to_polygons, masks_to_rle, predictions_json


def fill(polygons: list, shape: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    for polygon in polygons:
        if polygon:
            cv2.fillPoly(canvas, [np.array(polygon, np.int32).reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def disk(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


SHAPES = {
    "rectangle": lambda: np.pad(np.ones((60, 90), bool), ((20, 120), (30, 80))),
    "disk": lambda: disk((200, 200), (90, 110), 70),
    "two blobs": lambda: disk((200, 300), (60, 60), 40) | disk((200, 300), (220, 120), 50),
    "ring": lambda: disk((200, 200), (100, 100), 80) & ~disk((200, 200), (100, 100), 40),
}


class TestPolygons:
    @pytest.mark.parametrize("name", SHAPES)
    def test_filled_back_matches(self, name):
        mask = SHAPES[name]()
        polygons = mask_to_polygons(mask)
        external = fill(polygons, mask.shape)
        # External contours fill holes: compare with the hole-filled mask.
        assert iou(external, fill_holes(mask)) >= 0.98

    def test_one_polygon_per_external_contour_in_integer_pixels(self):
        polygons = mask_to_polygons(SHAPES["two blobs"]())
        assert len(polygons) == 2
        assert all(isinstance(v, int) for polygon in polygons for point in polygon for v in point)

    def test_rectangle_corners_are_exact(self):
        mask = np.zeros((10, 10), bool)
        mask[2:5, 3:8] = True
        (polygon,) = mask_to_polygons(mask)
        assert sorted(map(tuple, polygon)) == [(3, 2), (3, 4), (7, 2), (7, 4)]

    def test_empty_mask(self):
        assert mask_to_polygons(np.zeros((5, 7), bool)) == [[]]

    def test_full_mask(self):
        (polygon,) = mask_to_polygons(np.ones((5, 7), bool))
        assert sorted(map(tuple, polygon)) == [(0, 0), (0, 4), (6, 0), (6, 4)]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    canvas = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(canvas, contours, -1, 1, thickness=cv2.FILLED)
    return canvas.astype(bool)


class TestRle:
    def test_decodes_to_the_exact_masks(self):
        masks = np.stack([SHAPES["ring"](), np.zeros((200, 200), bool), np.ones((200, 200), bool)])
        encoded = masks_to_rle(masks)
        assert len(encoded) == 3
        for rle, mask in zip(encoded, masks, strict=True):
            assert rle["size"] == [200, 200]
            assert isinstance(rle["counts"], str)
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), mask)

    def test_non_square(self):
        mask = SHAPES["two blobs"]()
        (rle,) = masks_to_rle(mask[None])
        assert rle["size"] == [200, 300]
        assert coco_mask.area({"size": rle["size"], "counts": rle["counts"]}) == mask.sum()

    def test_no_masks(self):
        assert masks_to_rle(np.zeros((0, 4, 4), bool)) == []


def test_predictions_json_is_the_response_schema_with_the_masks_own_polygons():
    masks = np.zeros((2, 20, 30), dtype=bool)
    masks[0, 2:8, 3:9] = True
    masks[0, 12:15, 20:25] = True
    scores = np.array([0.25, 0.5], dtype=np.float32)
    predictions = json.loads(predictions_json(masks, scores, "polygon"))
    parsed = TypeAdapter(list[Prediction]).validate_python(predictions)
    assert [p.format for p in parsed] == ["polygon", "polygon"]
    assert predictions[0]["masks"] == mask_to_polygons(masks[0])
    assert predictions[1]["masks"] == [[]]
    assert [p["confidence"] for p in predictions] == [0.25, 0.5]
    rle = json.loads(predictions_json(masks, scores, "rle"))
    assert [p["masks"] for p in rle] == masks_to_rle(masks)
    TypeAdapter(list[Prediction]).validate_python(rle)
