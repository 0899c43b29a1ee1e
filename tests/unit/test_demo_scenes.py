"""The synthetic scenes the demo model learns from and is tested on."""

from __future__ import annotations

import numpy as np

from sam3_core.demo.scenes import (
    COLOURS,
    HELD_OUT_SEED,
    KINDS,
    held_out_scenes,
    interior_point,
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
