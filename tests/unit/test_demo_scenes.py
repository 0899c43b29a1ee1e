"""The synthetic scenes and clips the demo model learns from and is tested on."""

from __future__ import annotations

import hashlib

import numpy as np

from sam3_core.demo.scenes import (
    COLOURS,
    HELD_OUT_SEED,
    KINDS,
    held_out_clips,
    held_out_scenes,
    interior_point,
    make_clip,
    make_scene,
)


def test_the_same_seed_gives_the_same_scene_and_another_seed_another():
    a, b, c = make_scene(7), make_scene(7), make_scene(8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.names() == b.names()
    assert not np.array_equal(a.image, c.image)


def test_masks_are_what_is_visible_disjoint_and_boxed():
    for seed in range(30):
        scene = make_scene(seed, 200, 150)
        assert scene.image.shape == (150, 200, 3) and scene.image.dtype == np.uint8
        n = len(scene.kinds)
        assert scene.masks.shape == (n, 150, 200) and scene.boxes.shape == (n, 4)
        # Occlusion-correct: no pixel belongs to two instances.
        assert (scene.masks.sum(axis=0) <= 1).all()
        for mask, box in zip(scene.masks, scene.boxes, strict=True):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert set(scene.kinds) <= set(KINDS) and set(scene.colours) <= set(COLOURS)


def test_an_instance_has_its_named_colour():
    scene = make_scene(3)
    for mask, colour, texture in zip(scene.masks, scene.colours, scene.textures, strict=True):
        if texture != "solid":
            continue
        mean = scene.image[mask].reshape(-1, 3).mean(axis=0)
        nearest = min(COLOURS, key=lambda name: np.abs(np.subtract(COLOURS[name], mean)).sum())
        assert nearest == colour


def test_the_centre_click_lies_inside_the_visible_mask_away_from_its_edge():
    for scene in held_out_scenes(5):
        for i, mask in enumerate(scene.masks):
            x, y = scene.centre_click(i)
            xi, yi = int(x), int(y)
            assert mask[yi, xi]
            assert mask[max(yi - 2, 0) : yi + 3, max(xi - 2, 0) : xi + 3].all()


def test_interior_point_of_a_ring_avoids_its_hole():
    yy, xx = np.mgrid[0:50, 0:50]
    r = np.hypot(yy - 25, xx - 25)
    ring = (r < 20) & (r > 10)
    x, y = interior_point(ring)
    assert ring[int(y), int(x)]


def test_held_out_scenes_have_several_instances_and_seeds_of_their_own():
    scenes = held_out_scenes(4)
    assert all(len(s.kinds) >= 2 for s in scenes)
    assert (
        np.array_equal(scenes[0].image, make_scene(HELD_OUT_SEED).image)
        or len(make_scene(HELD_OUT_SEED).kinds) < 2
    )


def test_a_clip_is_seeded_and_its_shapes_move_with_masks_of_what_is_visible():
    clip, again = make_clip(11, 12), make_clip(11, 12)
    assert np.array_equal(clip.frames, again.frames) and np.array_equal(clip.masks, again.masks)
    n = len(clip.kinds)
    assert (
        n >= 1 and clip.frames.shape == (12, 240, 320, 3) and clip.masks.shape == (n, 12, 240, 320)
    )
    assert (clip.masks.sum(axis=0) <= 1).all()  # no pixel of two shapes in any frame
    assert clip.masks[:, 0].any(axis=(1, 2)).all()  # every shape is seen in the first frame
    shifts = [
        np.abs(np.argwhere(m[0]).mean(axis=0) - np.argwhere(m[-1]).mean(axis=0)).max()
        for m in clip.masks
        if m[-1].any()
    ]
    assert max(shifts) > 5, shifts  # the shapes move
    for t in range(12):  # over a still background
        still = ~clip.masks[:, 0].any(axis=0) & ~clip.masks[:, t].any(axis=0)
        assert np.array_equal(clip.frames[0][still], clip.frames[t][still])


def test_the_first_click_is_on_its_shape_and_held_out_clips_have_several_shapes():
    clip = make_clip(5, 3)
    x, y = clip.first_click(0)
    assert clip.masks[0, 0][int(y), int(x)]
    held = held_out_clips(2, 4)
    assert all(len(c.kinds) >= 2 and c.frames.shape[0] == 4 for c in held)


def test_scenes_and_clips_are_those_the_shipped_checkpoint_was_trained_and_scored_on():
    """The streams `shapes.pt` learnt from and `shapes.json` scores: a change to how scenes
    are drawn (even one that looks like a pure speed-up) must keep every pixel, or retrain."""
    scenes = hashlib.sha256()
    for s in held_out_scenes(4) + [make_scene(s, 160 + 7 * s, 335 - 5 * s) for s in range(12)]:
        scenes.update(s.image.tobytes())
        scenes.update(s.masks.tobytes())
    clips = hashlib.sha256()
    for c in held_out_clips(2, 6) + [make_clip(s, 5, 200, 170) for s in range(4)]:
        clips.update(c.frames.tobytes())
        clips.update(c.masks.tobytes())
    assert scenes.hexdigest() == "246b0882a05ee7d00f70e71e7361245a587151703db54de78572c7247300dd5f"
    assert clips.hexdigest() == "0b32ee6e966d15c9d115ffdf8e85e843c153c116c2369c638cc9822b15252f83"
