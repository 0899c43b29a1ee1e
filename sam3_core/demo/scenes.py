"""Seeded synthetic scenes of coloured shapes, the demo model's training and test data.

A scene is drawn back to front: each shape hides what lies under it, so every instance mask is
what is visible of it (occlusion-correct), and shapes hidden too much are dropped. Colours and
kinds have the names the concept prompts use ("red circle").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("circle", "square", "triangle", "star", "hexagon")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (240, 205, 40),
    "purple": (135, 60, 185),
    "orange": (245, 135, 25),
}
TEXTURES = ("solid", "striped")
# An instance is kept when this much of it stays visible, and at least MIN_AREA pixels.
MIN_VISIBLE = 0.45
MIN_AREA = 80


@dataclass(frozen=True)
class Scene:
    """One scene.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        masks: (N, H, W) bool, what is visible of each instance, back to front.
        kinds, colours, textures: N names each ("circle", "red", "striped").
        boxes: (N, 4) float32 XYXY pixel boxes of the visible masks (exclusive max).
    """

    image: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    colours: list[str]
    textures: list[str]
    boxes: np.ndarray

    def names(self) -> list[str]:
        """Each instance's concept name, "red circle"."""
        return [f"{c} {k}" for c, k in zip(self.colours, self.kinds, strict=True)]

    def centre_click(self, index: int) -> tuple[float, float]:
        """The point of an instance's visible mask farthest from its edge (x, y): a click a
        person would put "in the middle" even of a star or a half-hidden shape."""
        return interior_point(self.masks[index])


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of `mask` farthest from its boundary (pixel centre)."""
    distance = cv2.distanceTransform(
        np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x) + 0.5, float(y) + 0.5


def resized_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """A (H, W) bool mask on a (side, side) grid, the training targets' size: the share of
    each cell the mask covers, over one half.

    By area, not nearest neighbour: OpenCV's `INTER_NEAREST` reads each cell at its top-left
    corner, half a cell off its centre, and a decoder trained on such targets (the demo
    checkpoint shipped before) drew every mask that far right and down: 1.2 px and 0.9 px
    (median) on 320 x 240 held-out scenes, which cost its centre clicks 0.045 of IoU.
    """
    covered = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    return covered > 0.5


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "square":
        corners, radii = 4, [r] * 4
    elif kind == "triangle":
        corners, radii = 3, [r * 1.15] * 3
    elif kind == "hexagon":
        corners, radii = 6, [r] * 6
    else:  # star
        corners, radii = 10, [r * 1.15 if i % 2 == 0 else r * 0.5 for i in range(10)]
    theta = angle + np.arange(corners) * 2 * np.pi / corners
    points = np.stack(
        [cx + np.asarray(radii) * np.cos(theta), cy + np.asarray(radii) * np.sin(theta)]
    )
    return np.round(points.T).astype(np.int32)


def _shape_mask(
    kind: str, height: int, width: int, cx: float, cy: float, r: float, angle: float
) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    if kind == "circle":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, -1, lineType=cv2.LINE_8)
    else:
        cv2.fillPoly(mask, [_polygon(kind, cx, cy, r, angle)], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-saturation backgrounds (plain, gradient, noise, stripes, checks) so the shapes'
    named colours stay what they are called."""
    base = rng.uniform(30, 225)
    tint = rng.uniform(-18, 18, size=3)
    style = rng.integers(5)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if style == 0:
        grey = np.full((height, width), base, np.float32)
    elif style == 1:
        direction = rng.uniform(0, 2 * np.pi)
        ramp = (xx * np.cos(direction) + yy * np.sin(direction)) / max(height, width)
        grey = base + rng.uniform(-70, 70) * ramp
    elif style == 2:
        grey = base + rng.normal(0, rng.uniform(5, 25), size=(height, width))
    elif style == 3:
        period = rng.uniform(8, 40)
        grey = base + 25 * np.sign(np.sin((xx + yy * rng.uniform(-1, 1)) * np.pi / period))
    else:
        cell = int(rng.integers(10, 40))
        grey = base + 20 * (((xx // cell) + (yy // cell)) % 2 * 2 - 1)
    image = grey[..., None] + tint
    return np.clip(image, 0, 255)


@dataclass(frozen=True)
class _Shape:
    """One shape's drawing: where it is in the first picture and how it is painted."""

    kind: str
    colour: str
    texture: str
    r: float
    cx: float
    cy: float
    angle: float
    rgb: np.ndarray
    light: float
    stripes: tuple[float, float]  # period, direction (used when striped)


def _sample_shapes(rng: np.random.Generator, height: int, width: int, wanted: int) -> list[_Shape]:
    side = min(height, width)
    shapes = []
    for _ in range(wanted):
        kind = KINDS[rng.integers(len(KINDS))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        texture = TEXTURES[int(rng.random() < 0.3)]
        r = rng.uniform(0.06, 0.2) * side
        cx, cy = rng.uniform(r * 0.6, width - r * 0.6), rng.uniform(r * 0.6, height - r * 0.6)
        angle = rng.uniform(0, 2 * np.pi)
        if _shape_mask(kind, height, width, cx, cy, r, angle).sum() < MIN_AREA:
            continue
        rgb = np.asarray(COLOURS[colour], np.float32) + rng.uniform(-18, 18, size=3)
        light = rng.random()
        stripes = (rng.uniform(5, 12), rng.uniform(0, np.pi)) if texture == "striped" else (0, 0)
        shapes.append(_Shape(kind, colour, texture, r, cx, cy, angle, rgb, light, stripes))
    return shapes


def _draw(
    background: np.ndarray, shapes: list[_Shape], offsets: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Paint `shapes` back to front, each moved by its (dx, dy) of `offsets` (its stripes move
    with it): the image, each shape's whole mask and what is visible of it."""
    image = background.copy()
    height, width = image.shape[:2]
    full_masks = []
    for shape, (dx, dy) in zip(shapes, offsets, strict=True):
        cx, cy = shape.cx + dx, shape.cy + dy
        mask = _shape_mask(shape.kind, height, width, cx, cy, shape.r, shape.angle)
        full_masks.append(mask)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            continue
        # Painted within the shape's box only (training draws scenes at every step).
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        yy = np.arange(rows[0], rows[-1] + 1)[:, None]
        xx = np.arange(cols[0], cols[-1] + 1)[None, :]
        shade = 1.0 - 0.25 * shape.light * (yy - cy) / max(shape.r, 1)  # a little lighting
        painted = shape.rgb * np.clip(shade, 0.75, 1.25)[..., None]
        if shape.texture == "striped":
            period, direction = shape.stripes
            phase = ((xx - dx) * np.cos(direction) + (yy - dy) * np.sin(direction)) / period
            painted = np.where((phase % 1.0 < 0.5)[..., None], painted * 0.6, painted)
        inside = mask[window]
        painted = np.broadcast_to(painted, (*inside.shape, 3))
        image[window][inside] = painted[inside]
    # Visible parts: what no later shape covers.
    visible, covered = [], np.zeros((height, width), bool)
    for mask in reversed(full_masks):
        visible.append(mask & ~covered)
        covered |= mask
    visible.reverse()
    return np.clip(image, 0, 255).astype(np.uint8), full_masks, visible


def _kept(full_masks: list[np.ndarray], visible: list[np.ndarray]) -> list[int]:
    """The shapes labelled: those of which enough stays visible."""
    return [
        i
        for i, (full, seen) in enumerate(zip(full_masks, visible, strict=True))
        if seen.sum() >= max(MIN_AREA, MIN_VISIBLE * full.sum())
    ]


def _boxes(masks: np.ndarray) -> np.ndarray:
    return np.stack([mask_box(m) for m in masks]) if len(masks) else np.zeros((0, 4), np.float32)


def make_scene(
    seed: int,
    width: int = 320,
    height: int = 240,
    *,
    min_shapes: int = 2,
    max_shapes: int = 6,
) -> Scene:
    """The scene of `seed` (the same seed gives the same scene on every machine)."""
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    shapes = _sample_shapes(rng, height, width, int(rng.integers(min_shapes, max_shapes + 1)))
    image, full_masks, visible = _draw(background, shapes, np.zeros((len(shapes), 2)))
    keep = _kept(full_masks, visible)
    masks = np.stack([visible[i] for i in keep]) if keep else np.zeros((0, height, width), bool)
    return Scene(
        image=image,
        masks=masks,
        kinds=[shapes[i].kind for i in keep],
        colours=[shapes[i].colour for i in keep],
        textures=[shapes[i].texture for i in keep],
        boxes=_boxes(masks),
    )


@dataclass(frozen=True)
class Clip:
    """Shapes moving over a still background, each at its own steady speed, bouncing off the
    borders: the demo model's tracking data.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        masks: (N, T, H, W) bool, what is visible of each shape in each frame (may be empty
            where another shape hides it).
        kinds, colours: N names each.
    """

    frames: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    colours: list[str]

    def first_click(self, index: int) -> tuple[float, float]:
        """The click a person would put on a shape in the first frame (`interior_point`)."""
        return interior_point(self.masks[index, 0])


def _bounce(start: float, speed: float, low: float, high: float, steps: int) -> np.ndarray:
    """Positions over `steps` frames of a point moving at `speed` between two walls."""
    span = max(high - low, 1e-6)
    travelled = (start - low) + speed * np.arange(steps)
    folded = np.mod(travelled, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded) - start


def make_clip(seed: int, frames: int = 8, width: int = 320, height: int = 240) -> Clip:
    """The clip of `seed`: 2 to 4 shapes (each visible enough in frame 0) moving up to
    ~3 % of the picture's side a frame."""
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    shapes = _sample_shapes(rng, height, width, int(rng.integers(2, 5)))
    side = min(height, width)
    speeds = rng.uniform(-0.03, 0.03, size=(len(shapes), 2)) * side
    moves = np.stack(
        [
            np.stack(
                [
                    _bounce(s.cx, vx, s.r * 0.6, width - s.r * 0.6, frames),
                    _bounce(s.cy, vy, s.r * 0.6, height - s.r * 0.6, frames),
                ],
                axis=1,
            )
            for s, (vx, vy) in zip(shapes, speeds, strict=True)
        ]
    ).reshape(len(shapes), frames, 2)
    drawn = [_draw(background, shapes, moves[:, t]) for t in range(frames)]
    keep = _kept(drawn[0][1], drawn[0][2])  # the shapes seen well enough in the first frame
    masks = np.zeros((len(keep), frames, height, width), bool)
    for t, (_, _, visible) in enumerate(drawn):
        for row, i in enumerate(keep):
            masks[row, t] = visible[i]
    return Clip(
        frames=np.stack([image for image, _, _ in drawn]),
        masks=masks,
        kinds=[shapes[i].kind for i in keep],
        colours=[shapes[i].colour for i in keep],
    )


# Held-out scenes (tests, benchmarks, the page's samples) use seeds from here on; training
# draws its scene seeds below it.
HELD_OUT_SEED = 1_000_000_000


def held_out_scenes(count: int, width: int = 320, height: int = 240) -> list[Scene]:
    """`count` scenes training never sees, each with at least two instances."""
    scenes, seed = [], HELD_OUT_SEED
    while len(scenes) < count:
        scene = make_scene(seed, width, height)
        seed += 1
        if len(scene.kinds) >= 2:
            scenes.append(scene)
    return scenes


def held_out_clips(count: int, frames: int = 30, width: int = 320, height: int = 240) -> list[Clip]:
    """`count` clips training never sees, each with at least two shapes."""
    clips, seed = [], HELD_OUT_SEED
    while len(clips) < count:
        clip = make_clip(seed, frames, width, height)
        seed += 1
        if len(clip.kinds) >= 2:
            clips.append(clip)
    return clips


SAMPLE_COUNT = 4
SAMPLE_SIZE = (480, 360)


def sample_scenes() -> list[Scene]:
    """The held-out scenes the page offers (`sam3_core/demo/samples/scene-N.png`, served at
    `/page/samples/`)."""
    return held_out_scenes(SAMPLE_COUNT, *SAMPLE_SIZE)


def write_samples(directory: str) -> list[str]:
    """Write the page's sample scenes as PNG files; returns their paths."""
    from pathlib import Path

    from PIL import Image

    paths = []
    for i, scene in enumerate(sample_scenes(), start=1):
        path = Path(directory) / f"scene-{i}.png"
        Image.fromarray(scene.image).save(path, optimize=True)
        paths.append(str(path))
    return paths


if __name__ == "__main__":
    import sys

    print("\n".join(write_samples(sys.argv[1] if len(sys.argv) > 1 else ".")))
