"""Label Studio's wire format (`sam3_core/protocol/label_studio.py`): brush RLE, labelling
configs, smart regions as a prompt. The brush RLE is read back with a decoder written here
from the reference (thi-ng's rle-pack, as Label Studio's front end and SDK decode it); the
end-to-end test (tests/integration/test_label_studio.py) decodes it with Label Studio's own."""

from __future__ import annotations

import numpy as np
import pytest

from sam3_core.errors import InvalidPromptError
from sam3_core.protocol.label_studio import (
    PredictRequest,
    brush_result,
    brush_rle,
    interaction,
    parse_label_config,
)

CONFIG = """<View>
  <Image name="img" value="$picture" zoom="true"/>
  <BrushLabels name="brush" toName="img">
    <Label value="square" background="#f00"/><Label value="circle"/>
  </BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="square"/></KeyPointLabels>
  <RectangleLabels name="rect" toName="img" smart="true"><Label value="square"/></RectangleLabels>
</View>"""


def decode_brush(rle: list[int]) -> np.ndarray:
    """Label Studio's brush RLE to its flat values (rle-pack's decode, bit by bit)."""
    bits = np.unpackbits(np.array(rle, np.uint8))
    position = 0

    def read(n: int) -> int:
        nonlocal position
        value = int("".join(map(str, bits[position : position + n])), 2) if n else 0
        position += n
        return value

    count, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint8)
    i = 0
    while i < count:
        repeated = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeated:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def mask_of(rle: list[int], height: int, width: int) -> np.ndarray:
    rgba = decode_brush(rle).reshape(height, width, 4)
    assert (rgba == rgba[..., :1]).all()  # every channel alike
    return rgba[..., 3] > 0


class TestBrushRle:
    @pytest.mark.parametrize(
        "mask",
        [
            np.zeros((3, 5), bool),
            np.ones((1, 1), bool),
            np.random.default_rng(0).random((17, 23)) > 0.5,
            np.pad(np.ones((40, 60), bool), ((100, 90), (130, 250))),  # runs over 65536 values
        ],
        ids=["empty", "one-pixel", "noise", "long-runs"],
    )
    def test_decodes_to_the_mask(self, mask):
        assert (mask_of(brush_rle(mask), *mask.shape) == mask).all()

    def test_label_studio_bytes(self):
        # A 2x2 mask, top row set: 8 values of 255 then 8 of 0. These are the bytes Label
        # Studio's encoder gives (label_studio_sdk 2.1.2, `brush.mask2rle`).
        mask = np.array([[True, True], [False, False]])
        assert brush_rle(mask) == [0, 0, 0, 16, 57, 27, 252, 255, 243, 128, 0]
        # Header: 16 values, 8-bit words, run fields of 3, 4, 8 and 16 bits.
        assert decode_brush(brush_rle(mask)).tolist() == [255] * 8 + [0] * 8


class TestLabelConfig:
    def test_brush_tag_image_and_labels(self):
        config = parse_label_config(CONFIG)
        assert (config.image_key, config.brush_name, config.brush_to) == ("picture", "brush", "img")
        assert config.labels == ("square", "circle")

    @pytest.mark.parametrize(
        "xml, message",
        [
            (None, "no label_config"),
            ("<View><Image", "not valid XML"),
            ('<View><Image name="i" value="$i"/></View>', "BrushLabels"),
            ('<View><BrushLabels name="b" toName="i"/></View>', "<Image"),
        ],
    )
    def test_refused(self, xml, message):
        with pytest.raises(InvalidPromptError, match=message):
            parse_label_config(xml)


def region(kind: str, positive: bool = True, **value: float) -> dict:
    return {
        "type": kind,
        "original_width": 200,
        "original_height": 100,
        "is_positive": positive,
        "value": {**value, kind: ["square"]},
    }


class TestInteraction:
    def test_points_and_latest_box_in_pixels(self):
        clicked = interaction(
            [
                region("keypointlabels", x=10, y=50),
                region("keypointlabels", False, x=50, y=20),
                region("rectanglelabels", x=0, y=0, width=10, height=10),
                region("rectanglelabels", x=25, y=10, width=50, height=40),
                {"type": "choices", "value": {"choices": ["x"]}},
            ]
        )
        assert clicked is not None
        assert (clicked.width, clicked.height, clicked.label) == (200, 100, "square")
        points = [(p.x, p.y, p.positive) for p in clicked.prompt.points]
        assert points == [(20, 50, True), (100, 20, False)]
        box = clicked.prompt.box
        assert (box.x, box.y, box.width, box.height) == (100, 30, 100, 40)  # centre form

    def test_no_smart_region(self):
        assert interaction([{"type": "choices", "value": {}}]) is None

    def test_negative_rectangle_and_bad_regions(self):
        with pytest.raises(InvalidPromptError, match="negative rectangle"):
            interaction([region("rectanglelabels", False, x=1, y=1, width=2, height=2)])
        with pytest.raises(InvalidPromptError, match="original_width"):
            interaction([{"type": "keypointlabels", "value": {"x": 1}}])
        for value in ([1], "x", None):
            with pytest.raises(InvalidPromptError, match="value object"):
                interaction([{"type": "keypointlabels", "value": value}])
        huge = {**region("keypointlabels", x=1, y=1), "original_width": float("inf")}
        with pytest.raises(InvalidPromptError, match="original_width"):
            interaction([huge])
        odd_label = region("keypointlabels", x=1, y=1)
        odd_label["value"]["keypointlabels"] = {"a": 1}
        assert interaction([odd_label]).label is None

    def test_context_in_params_or_top_level(self):
        regions = [region("keypointlabels", x=1, y=1)]
        assert PredictRequest(params={"context": {"result": regions}}).regions() == regions
        assert PredictRequest(context={"result": regions}).regions() == regions
        assert PredictRequest(params={"context": None}).regions() == []
        assert PredictRequest(params={"context": {"result": 5}}).regions() == []


def test_brush_result_shape():
    config = parse_label_config(CONFIG)
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    result = brush_result(mask, 0.75, "circle", config, "r1")
    assert result["from_name"] == "brush" and result["to_name"] == "img"
    assert result["type"] == "brushlabels" and result["score"] == 0.75
    assert (result["original_width"], result["original_height"]) == (6, 4)
    assert result["value"]["brushlabels"] == ["circle"]
    assert (mask_of(result["value"]["rle"], 4, 6) == mask).all()
