import numpy as np
import pytest
from pydantic import ValidationError

from sam3_core.errors import InvalidPromptError
from sam3_core.prompts import (
    Box,
    Prompt,
    PromptSet,
    check_inside_image,
    decoder_groups,
    is_strict_subset,
    validate_prompt_set,
)

P1 = {"x": 10, "y": 20, "positive": True}
P2 = {"x": 30, "y": 40, "positive": False}
P3 = {"x": 50, "y": 60, "positive": True}
BOX = {"x": 100, "y": 50, "width": 40, "height": 20}


def prompt_set(*prompts: dict) -> PromptSet:
    return PromptSet.model_validate({"prompts": list(prompts)})


class TestAcceptedForms:
    def test_object_list_and_single_prompt_are_the_same_set(self):
        as_object = PromptSet.model_validate({"prompts": [{"box": BOX, "points": [P1]}]})
        as_list = PromptSet.model_validate([{"box": BOX, "points": [P1]}])
        as_single = PromptSet.model_validate({"box": BOX, "points": [P1]})
        assert as_object == as_list == as_single
        assert len(as_object.prompts) == 1

    def test_none_and_null_prompts_are_empty(self):
        assert PromptSet.model_validate(None).prompts == []
        assert PromptSet.model_validate({"prompts": None}).prompts == []

    @pytest.mark.parametrize(
        ("bad", "unknown", "takes"),
        [
            ({"point": [P1]}, "'point'", "a prompt takes box, points"),  # the typo, one prompt
            ([{"points": [P1], "boxes": [BOX]}], "'boxes'", "a prompt takes box, points"),
            ({"prompts": [{"points": [{**P1, "label": 3}]}]}, "'label'", "a point takes x, y"),
            ({"prompts": [{"box": {**BOX, "w": 4}}]}, "'w'", "a box takes x, y, width, height"),
            ({"prompts": [], "prompt": [{"points": [P1]}]}, "'prompt'", "prompt set takes"),
        ],
    )
    def test_unknown_keys_are_refused_naming_the_known_ones(self, bad, unknown, takes):
        """A typo used to answer a mask for no prompt at all: it is refused, not ignored."""
        with pytest.raises(ValidationError) as raised:
            PromptSet.model_validate(bad)
        (error,) = raised.value.errors()
        assert unknown in error["msg"] and takes in error["msg"]

    @pytest.mark.parametrize("positive", ["yes", "true", 1, 0, None, [True]])
    def test_positive_is_a_json_boolean_only(self, positive):
        with pytest.raises(ValidationError) as raised:
            PromptSet.model_validate([{"points": [{**P1, "positive": positive}]}])
        assert raised.value.errors()[0]["type"] == "bool_type"

    def test_the_json_schema_says_the_prompt_objects_are_closed(self):
        """What the OpenAPI document tells clients (and schemathesis) matches what is refused."""
        defs = PromptSet.model_json_schema()["$defs"]
        assert all(defs[name]["additionalProperties"] is False for name in ("Box", "Point"))
        assert defs["Prompt"]["additionalProperties"] is False
        assert defs["Point"]["properties"]["positive"]["type"] == "boolean"

    @pytest.mark.parametrize(
        "bad",
        [
            {"prompts": [{"points": [{"x": 1, "y": 2}]}]},  # positive is required
            {"prompts": [{"box": {"x": 1, "y": 2, "width": 3}}]},  # height is required
            {"prompts": [{"points": [{"x": "left", "y": 2, "positive": True}]}]},
            {"prompts": "everything"},
        ],
    )
    def test_schema_violations_raise_validation_errors(self, bad):
        with pytest.raises(ValidationError):
            PromptSet.model_validate(bad)


class TestValidation:
    @pytest.mark.parametrize(
        ("prompt", "field"),
        [
            ({"box": {**BOX, "x": float("nan")}}, "prompts[0].box.x"),
            ({"box": {**BOX, "height": float("inf")}}, "prompts[0].box.height"),
            ({"box": {**BOX, "width": -4}}, "prompts[0].box.width"),
            ({"box": {**BOX, "height": 0}}, "prompts[0].box.height"),
            ({"points": [P1, {**P2, "y": float("-inf")}]}, "prompts[0].points[1].y"),
            ({"points": [{**P1, "x": float("nan")}]}, "prompts[0].points[0].x"),
            ({"points": [{**P1, "x": 1e308}]}, "prompts[0].points[0].x"),
            ({"box": {**BOX, "width": 3e38}}, "prompts[0].box.width"),
        ],
    )
    def test_bad_values_name_the_field(self, prompt, field):
        with pytest.raises(InvalidPromptError, match=field.replace("[", r"\[").replace("]", r"\]")):
            validate_prompt_set(prompt_set(prompt), max_prompts=8, max_points=8)

    def test_limits(self):
        with pytest.raises(InvalidPromptError, match="3 prompts, the limit is 2"):
            validate_prompt_set(prompt_set({}, {}, {}), max_prompts=2, max_points=8)
        with pytest.raises(InvalidPromptError, match=r"prompts\[0\].points: 3 points"):
            validate_prompt_set(prompt_set({"points": [P1, P2, P3]}), max_prompts=2, max_points=2)
        validate_prompt_set(prompt_set({"points": [P1, P2]}), max_prompts=1, max_points=2)


class TestInsideImage:
    """A 640x480 image: (H, W) = (480, 640)."""

    @pytest.mark.parametrize(
        "prompt",
        [
            {
                "points": [
                    {"x": 0, "y": 0, "positive": True},
                    {"x": 640, "y": 480, "positive": False},
                ]
            },
            {"box": {"x": 630, "y": 10, "width": 100, "height": 50}},  # a drag past the edge
            {"box": {"x": 320, "y": 240, "width": 2000, "height": 2000}},  # around the image
            {},
        ],
    )
    def test_points_on_the_image_and_boxes_overlapping_it_pass(self, prompt):
        check_inside_image(prompt_set(prompt), (480, 640))

    @pytest.mark.parametrize(
        ("prompt", "named"),
        [
            ({"points": [P1, {"x": 5000, "y": -20, "positive": True}]}, "prompts[0].points[1].x"),
            ({"points": [{"x": 10, "y": -0.5, "positive": True}]}, "prompts[0].points[0].y"),
            ({"points": [{"x": 640.5, "y": 1, "positive": False}]}, "prompts[0].points[0].x"),
            ({"box": {"x": 700, "y": 10, "width": 100, "height": 50}}, "prompts[0].box"),
            ({"box": {"x": 10, "y": -30, "width": 10, "height": 50}}, "prompts[0].box"),
        ],
    )
    def test_outside_is_refused_with_the_field_and_the_image_size(self, prompt, named):
        with pytest.raises(InvalidPromptError) as raised:
            check_inside_image(prompt_set(prompt), (480, 640))
        message = raised.value.message
        assert message.startswith(named + ":") and "640x480 pixels" in message


class TestDecoderGroups:
    def test_box_is_centre_anchored(self):
        assert Box(**BOX).xyxy() == (80, 40, 120, 60)

    def test_no_prompt_is_one_sentinel_point(self):
        (group,) = decoder_groups(PromptSet())
        assert group.slots == (0,)
        assert group.point_coords.tolist() == [[[0, 0]]]
        assert group.point_labels.tolist() == [[-1]]
        assert group.boxes is None

    def test_empty_prompt_is_decoded_like_no_prompt(self):
        (alone,) = decoder_groups(PromptSet())
        groups = decoder_groups(prompt_set({"points": [P1]}, {}))
        empty = next(g for g in groups if g.slots == (1,))
        assert np.array_equal(empty.point_coords, alone.point_coords)
        assert np.array_equal(empty.point_labels, alone.point_labels)

    def test_points_are_padded_with_not_a_point(self):
        (group,) = decoder_groups(prompt_set({"points": [P1, P2, P3]}, {"points": [P2]}))
        assert group.point_coords.shape == (2, 3, 2)
        assert group.point_labels.tolist() == [[1, 0, 1], [0, -1, -1]]
        assert group.point_coords[1].tolist() == [[30, 40], [0, 0], [0, 0]]

    def test_boxes_and_point_prompts_are_decoded_apart_and_keep_their_slots(self):
        groups = decoder_groups(
            prompt_set({"points": [P1]}, {"box": BOX}, {}, {"box": BOX, "points": [P2, P3]})
        )
        by_slots = {g.slots: g for g in groups}
        assert set(by_slots) == {(1, 3), (0,), (2,)}
        boxes = by_slots[(1, 3)]
        assert boxes.boxes.tolist() == [[80, 40, 120, 60]] * 2
        assert boxes.point_labels.tolist() == [[-1, -1], [0, 1]]
        assert by_slots[(0,)].boxes is None

    def test_boxes_without_points_have_no_point_arrays(self):
        (group,) = decoder_groups(prompt_set({"box": BOX}, {"box": BOX}))
        assert group.point_coords is None and group.point_labels is None
        assert group.boxes.shape == (2, 4)


class TestIdentity:
    def test_is_stable_and_exact(self):
        a = prompt_set({"points": [P1, P2]})
        assert a.identity() == prompt_set({"points": [P1, P2]}).identity()
        assert a.identity() != prompt_set({"points": [P2, P1]}).identity()
        assert a.identity() != prompt_set({"points": [P1, {**P2, "x": 30.0001}]}).identity()

    def test_is_order_sensitive_by_prompt(self):
        a = prompt_set({"points": [P1]}, {"box": BOX})
        assert a.identity() != prompt_set({"box": BOX}, {"points": [P1]}).identity()

    def test_empty_points_equal_no_points(self):
        assert Prompt(points=[]) == Prompt()


class TestStrictSubset:
    def test_fewer_points_same_box_is_a_strict_subset(self):
        earlier = prompt_set({"box": BOX, "points": [P1]})
        assert is_strict_subset(earlier, prompt_set({"box": BOX, "points": [P2, P1]}))

    def test_box_alone_refines_into_box_and_click(self):
        assert is_strict_subset(prompt_set({"box": BOX}), prompt_set({"box": BOX, "points": [P1]}))

    def test_equal_sets_never_match(self):
        same = prompt_set({"points": [P1, P2]})
        assert not is_strict_subset(same, same)
        assert not is_strict_subset(same, prompt_set({"points": [P2, P1]}))

    def test_different_box_or_extra_point_or_prompt_count_do_not_match(self):
        new = prompt_set({"box": BOX, "points": [P1, P2]})
        assert not is_strict_subset(prompt_set({"box": {**BOX, "x": 1}, "points": [P1]}), new)
        assert not is_strict_subset(prompt_set({"box": BOX, "points": [P3]}), new)
        assert not is_strict_subset(prompt_set({"points": [P1]}), new)
        assert not is_strict_subset(prompt_set({"box": BOX}, {"box": BOX}), new)

    def test_matched_position_by_position(self):
        new = prompt_set({"points": [P1, P2]}, {"points": [P3]})
        assert is_strict_subset(prompt_set({"points": [P1]}, {"points": [P3]}), new)
        assert not is_strict_subset(prompt_set({"points": [P3]}, {"points": [P1]}), new)
