"""The demo model's concept stage: text prompts naming shapes and colours ("red circle",
"square", "blue") and box exemplars, trained with sam3's own matcher and losses through the
model's own concept forward (`Sam3Image.forward_grounding`, as `ConceptSam3.ground` calls it).

The ViT trunk is frozen here: it is shared with the interactive path, which stage 1 trained,
and clicks and boxes must keep their masks. Stage 2 trains what only concepts read: the
detector neck, the text encoder and the detector (geometry encoder, transformer, scoring and
segmentation heads). sam3's settings: `BinaryHungarianMatcherV2` (focal, class 2, L1 5,
GIoU 2), `Boxes` (L1 5, GIoU 2), `IABCEMdetr` (classification 20, presence 20, positive
weight 10) and `Masks` (focal 200, dice 10), summed by `Sam3LossWrapper` over the decoder's
outputs, with its one-to-many matcher (weight 2) on the decoder's DAC copy of its queries.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sam3_core.architecture import neck_features
from sam3_core.demo import parallel
from sam3_core.demo.scenes import COLOURS, KINDS, Scene, make_scene, resized_mask
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import quiet_sam3, without_pinned_memory

with quiet_sam3():
    from sam3.model.data_misc import FindStage
    from sam3.model.geometry_encoders import Prompt as GeometricPrompt
    from sam3.train.loss import loss_fns
    from sam3.train.loss.loss_fns import CORE_LOSS_KEY, Boxes, IABCEMdetr, Masks
    from sam3.train.loss.sam3_loss import Sam3LossWrapper
    from sam3.train.matcher import BinaryHungarianMatcherV2, BinaryOneToManyMatcher

# Mask targets are compared with the detector's upsampled mask logits at this side.
CONCEPT_MASK_SIZE = 96
VISUAL_TEXT = "visual"  # the text sam3 encodes for box exemplars without a text
# Query kinds and how often training draws each one.
QUERY_KINDS = {"name": 0.35, "kind": 0.2, "colour": 0.15, "absent": 0.15, "exemplar": 0.15}


@dataclass(frozen=True)
class ConceptQuery:
    """One query on one scene: its text, its box exemplars (normalised cx, cy, w, h, all
    positive) and the instances it should find."""

    text: str
    exemplars: tuple[tuple[float, float, float, float], ...]
    targets: tuple[int, ...]


def vocabulary() -> list[str]:
    """Every text the demo model is taught: "red circle", "circle", "red"."""
    return [f"{c} {k}" for c in COLOURS for k in KINDS] + list(KINDS) + list(COLOURS)


def matching(scene: Scene, text: str) -> tuple[int, ...]:
    """The instances of `scene` that `text` names."""
    return tuple(
        i
        for i, (colour, kind) in enumerate(zip(scene.colours, scene.kinds, strict=True))
        if text in (f"{colour} {kind}", colour, kind)
    )


def normalised_box(scene: Scene, index: int) -> tuple[float, float, float, float]:
    height, width = scene.masks.shape[1:]
    x0, y0, x1, y1 = scene.boxes[index].tolist()
    return ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)


def sample_query(rng: np.random.Generator, scene: Scene) -> ConceptQuery:
    kinds, weights = list(QUERY_KINDS), np.array(list(QUERY_KINDS.values()))
    choice = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    index = int(rng.integers(len(scene.kinds)))
    if choice == "absent":
        absent = [t for t in vocabulary() if not matching(scene, t)]
        if absent:
            return ConceptQuery(absent[int(rng.integers(len(absent)))], (), ())
        choice = "name"
    if choice == "exemplar":
        name = scene.names()[index]
        cx, cy, w, h = normalised_box(scene, index)
        noise = rng.normal(0, 0.05, size=4) * np.array([w, h, w, h])
        box = (cx + noise[0], cy + noise[1], w * (1 + noise[2]), h * (1 + noise[3]))
        return ConceptQuery(VISUAL_TEXT, (box,), matching(scene, name))
    text = {
        "name": scene.names()[index],
        "kind": scene.kinds[index],
        "colour": scene.colours[index],
    }[choice]
    return ConceptQuery(text, (), matching(scene, text))


def _geometric_prompt(queries: list[ConceptQuery]) -> GeometricPrompt:
    """The queries' exemplars as `ConceptSam3.ground` passes them (N, P, 4) boxes."""
    count = max((len(q.exemplars) for q in queries), default=0)
    boxes = torch.zeros(count, len(queries), 4)
    padding = torch.ones(len(queries), count, dtype=torch.bool)
    for col, query in enumerate(queries):
        for row, box in enumerate(query.exemplars):
            boxes[row, col] = torch.tensor(box)
            padding[col, row] = False
    labels = torch.ones(count, len(queries), dtype=torch.bool)
    return GeometricPrompt(box_embeddings=boxes, box_mask=padding, box_labels=labels)


@dataclass
class _Targets:
    """What `Sam3Image.back_convert` reads of sam3's `BatchedFindTarget`."""

    num_boxes: torch.Tensor
    boxes: torch.Tensor
    boxes_padded: torch.Tensor
    segments: torch.Tensor
    semantic_segments: None
    is_valid_segment: torch.Tensor
    is_exhaustive: torch.Tensor
    object_ids: torch.Tensor
    object_ids_padded: torch.Tensor


def _targets(scenes: list[Scene], queries: list[tuple[int, ConceptQuery]]) -> _Targets:
    counts = [len(q.targets) for _, q in queries]
    most = max(1, *counts)
    boxes, masks, ids = [], [], []
    padded = torch.zeros(len(queries), most, 4)
    padded_ids = torch.full((len(queries), most), -1, dtype=torch.long)
    for row, (image, query) in enumerate(queries):
        scene = scenes[image]
        for col, index in enumerate(query.targets):
            box = torch.tensor(normalised_box(scene, index))
            boxes.append(box)
            padded[row, col] = box
            padded_ids[row, col] = index
            ids.append(index)
            masks.append(torch.from_numpy(resized_mask(scene.masks[index], CONCEPT_MASK_SIZE)))
    side = CONCEPT_MASK_SIZE
    return _Targets(
        num_boxes=torch.tensor(counts, dtype=torch.long),
        boxes=torch.stack(boxes) if boxes else torch.zeros(0, 4),
        boxes_padded=padded,
        segments=torch.stack(masks) if masks else torch.zeros(0, side, side, dtype=torch.bool),
        semantic_segments=None,
        is_valid_segment=torch.ones(len(boxes), dtype=torch.bool),
        is_exhaustive=torch.ones(len(queries), dtype=torch.bool),
        object_ids=torch.tensor(ids, dtype=torch.long),
        object_ids_padded=padded_ids,
    )


def build_criterion() -> tuple[BinaryHungarianMatcherV2, Sam3LossWrapper]:
    """sam3's matcher and losses with the weights sam3's training configurations use."""
    matcher = BinaryHungarianMatcherV2(
        focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2
    )
    losses = [
        Boxes(weight_dict={"loss_bbox": 5.0, "loss_giou": 2.0}),
        IABCEMdetr(
            pos_weight=10.0,
            weight_dict={"loss_ce": 20.0, "presence_loss": 20.0},
            weak_loss=False,
            alpha=0.25,
            gamma=2,
            use_presence=True,
            pad_n_queries=None,
        ),
        Masks(weight_dict={"loss_mask": 200.0, "loss_dice": 10.0}, focal_alpha=0.25),
    ]
    # The decoder's DAC copy of its queries (training only) is matched one-to-many.
    wrapper = Sam3LossWrapper(
        loss_fns_find=losses,
        normalization="local",
        matcher=matcher,
        o2m_matcher=BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=4),
        o2m_weight=2.0,
        use_o2m_matcher_on_o2m_aux=False,
    )
    return matcher, wrapper


@contextlib.contextmanager
def torch_focal_loss() -> Iterator[None]:
    """sam3's losses default to a Triton focal-loss kernel (GPU only); on the CPU, its own
    PyTorch branch of the same function (`triton=False`)."""
    original = loss_fns.sigmoid_focal_loss
    loss_fns.sigmoid_focal_loss = functools.partial(original, triton=False)
    try:
        yield
    finally:
        loss_fns.sigmoid_focal_loss = original


def training_mode(model: InteractiveSam3) -> list[torch.nn.Parameter]:
    """Put the concept parts in training mode and return the parameters stage 2 trains;
    the rest is frozen (and stays in eval mode)."""
    concepts = model.concepts
    assert concepts is not None, "the concept stage needs a model built with concepts"
    model.eval()
    concepts.train()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = list(concepts.parameters())
    for parameter in trained:
        parameter.requires_grad_(True)
    return trained


def concept_batch(
    rng: np.random.Generator, model: InteractiveSam3, batch: int, per_scene: int
) -> tuple[torch.Tensor, list[Scene], list[tuple[int, ConceptQuery]]]:
    pixels, scenes, queries = [], [], []
    while len(scenes) < batch:
        width, height = (int(v) for v in rng.integers(160, 336, size=2))
        scene = make_scene(int(rng.integers(0, 2**31 - 1)), width, height)
        if not scene.kinds:
            continue
        pixels.append(model._transform(torch.from_numpy(scene.image).permute(2, 0, 1)))
        queries += [(len(scenes), sample_query(rng, scene)) for _ in range(per_scene)]
        scenes.append(scene)
    return torch.stack(pixels), scenes, queries


def concept_step(
    model: InteractiveSam3,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    criterion: tuple[BinaryHungarianMatcherV2, Sam3LossWrapper],
    batch: int,
    per_scene: int,
) -> dict[str, float]:
    """One step: `batch` scenes, `per_scene` queries each, all in one `forward_grounding`."""
    concepts = model.concepts
    assert concepts is not None
    detector = concepts.detector
    matcher, loss = criterion
    pixels, scenes, queries = concept_batch(rng, model, batch, per_scene)
    with torch.no_grad():
        trunk = model.image_encoder.trunk(pixels)[-1]
    fpn, pos = neck_features(concepts.neck, trunk)
    texts = detector.backbone.forward_text([q.text for _, q in queries], device="cpu")
    backbone_out = {
        "backbone_fpn": fpn,
        "vision_pos_enc": pos,
        "language_features": texts["language_features"],
        "language_mask": texts["language_mask"],
    }
    find_input = FindStage(
        img_ids=torch.tensor([image for image, _ in queries], dtype=torch.long),
        text_ids=torch.arange(len(queries), dtype=torch.long),
        input_boxes=None,
        input_boxes_mask=None,
        input_boxes_label=None,
        input_points=None,
        input_points_mask=None,
    )
    target = _targets(scenes, queries)
    detector.matcher = matcher
    try:
        with without_pinned_memory(), torch_focal_loss():
            out = detector.forward_grounding(
                backbone_out=backbone_out,
                find_input=find_input,
                find_target=target,
                geometric_prompt=_geometric_prompt([q for _, q in queries]),
            )
            losses = loss.compute_loss(out, detector.back_convert(target))
    finally:
        detector.matcher = None
    total = losses[CORE_LOSS_KEY]
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    parallel.mean_gradients(optimizer.param_groups[0]["params"])
    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 0.1)
    optimizer.step()
    logged = {
        k: float(v.detach()) if torch.is_tensor(v) else float(v)
        for k, v in losses.items()
        if k != CORE_LOSS_KEY and "aux" not in k
    }
    logged["concept_loss"] = float(total.detach())
    return logged
