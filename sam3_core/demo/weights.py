"""The demo model's checkpoint: where it ships, how it is written and what it is.

`SAM3_CHECKPOINT=demo:shapes` names `shapes.pt` beside this file: a demo model trained on
synthetic shapes (SAM3's classes at the `tiny` size), not SAM3. It is stored under a released
sam3 checkpoint's key names with its architecture's name, and loads through the same code
as `sam3.pt` (`sam3_core.weights.load_model`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sam3_core.architecture import TINY, Architecture
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import clip_vocabulary

DEMO_PREFIX = "demo:"
DEMO_DIR = Path(__file__).parent
DEMO_ARCHITECTURE: Architecture = TINY
DESCRIPTION = "demo model trained on synthetic shapes (SAM3's classes at a small size), not SAM3"


def demo_checkpoint_path(spec: str) -> Path:
    """`demo:shapes` -> the packaged `shapes.pt`."""
    return DEMO_DIR / f"{spec[len(DEMO_PREFIX) :]}.pt"


def record_beside(checkpoint: Path) -> dict:
    """A checkpoint's training record, written beside it (`shapes.json` beside `shapes.pt`);
    empty where there is none."""
    path = checkpoint.with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def demo_record(spec: str) -> dict:
    """The training record shipped with `demo:NAME`."""
    return record_beside(demo_checkpoint_path(spec))


def held_out_scores(record: dict) -> dict[str, float]:
    """A record's held-out scores (`sam3_core.demo.evaluate`), flat: mean IoU from a centre
    click, a box and a corrective click, concept F1, tracking J."""
    held = record.get("held_out", {})
    scores = {
        key: held[key]
        for key in ("centre_click_miou", "box_miou", "click_then_corrective_click_miou")
        if key in held
    }
    if "f1" in held.get("concepts", {}):
        scores["concept_f1"] = held["concepts"]["f1"]
    if "j" in held.get("tracking", {}):
        scores["tracking_j"] = held["tracking"]["j"]
    return scores


def build_untrained(seed: int = 0, *, concepts: bool = True) -> InteractiveSam3:
    """The demo architecture with seeded random weights (training's starting point)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InteractiveSam3(
            DEMO_ARCHITECTURE, concepts_bpe_path=clip_vocabulary() if concepts else None
        )


def save_demo_checkpoint(model: InteractiveSam3, path: Path) -> None:
    """Write `model` as a sam3-keyed checkpoint in float16 (half the bytes; the demo model's
    masks do not change measurably), atomically: a service may be reading the old file."""
    from sam3_core.weights import sam3_state_dict

    state = {
        k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
        for k, v in sam3_state_dict(model).items()
    }
    payload = {"model": state, "architecture": model.arch.name, "description": DESCRIPTION}
    partial = path.with_suffix(".partial")
    torch.save(payload, partial)
    os.replace(partial, path)
