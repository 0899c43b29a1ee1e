"""Where the model's weights come from: a SAM3 checkpoint, the hub, or (tests) a random seed."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from sam3_core.architecture import ARCHITECTURES, FULL, Architecture
from sam3_core.calls import ServedModel
from sam3_core.demo.weights import (
    DEMO_PREFIX,
    DESCRIPTION,
    demo_checkpoint_path,
    demo_record,
    held_out_scores,
)
from sam3_core.errors import WeightsError
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import clip_vocabulary
from sam3_core.settings import EngineSettings

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
HUB_CHECKPOINT_FILE = "sam3.pt"

# sam3 checkpoint key prefix -> InteractiveSam3 key prefix. The service's neck is sam3's
# SAM2-style neck (`sam2_convs`); levels 0-2 only (sam3 discards level 3, see architecture.py).
_KEY_MAP = (
    ("detector.backbone.vision_backbone.trunk.", "image_encoder.trunk."),
    *(
        (
            f"detector.backbone.vision_backbone.sam2_convs.{level}.",
            f"image_encoder.convs.{level}.",
        )
        for level in range(3)
    ),
    ("tracker.", "predictor.model."),
    # Concept segmentation: the detector neck (levels 0-2) and sam3's `Sam3Image` detector
    # without its vision backbone (see concept_model.py).
    *(
        (
            f"detector.backbone.vision_backbone.convs.{level}.",
            f"concepts.neck.convs.{level}.",
        )
        for level in range(3)
    ),
    *(
        (f"detector.{part}.", f"concepts.detector.{part}.")
        for part in (
            "backbone.language_backbone",
            "transformer",
            "geometry_encoder",
            "segmentation_head",
            "dot_prod_scoring",
        )
    ),
)

HOW_TO_GET_WEIGHTS = (
    "No SAM3 weights configured. Set SAM3_CHECKPOINT to the path of sam3.pt (request access at "
    "https://huggingface.co/facebook/sam3, then `hf download facebook/sam3 sam3.pt`), or to "
    "hf://facebook/sam3 to download it at start-up with the token in HF_TOKEN. To try the "
    "service without them, SAM3_CHECKPOINT=demo:shapes serves a small demo model trained on "
    "synthetic shapes (not SAM3). For tests and smoke runs only, SAM3_RANDOM_WEIGHTS=tiny "
    "(or full) serves random weights."
)


def resolve_device(name: str) -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError(f"SAM3_DEVICE={name} but CUDA is not available on this machine")
    return device


def interactive_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Select and rename the tensors `InteractiveSam3` needs from a sam3 checkpoint's keys
    (the concept parts' too: an interactive-only model ignores them)."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in checkpoint.items():
        for source, target in _KEY_MAP:
            if key.startswith(source):
                state[target + key[len(source) :]] = tensor
                break
    return state


def checkpoint_of_sam3_model(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state of a model built by `sam3.build_sam3_image_model` (a fine-tuned one, say)
    under the key names of a released checkpoint: the inverse of sam3's own renaming."""
    tracker = "inst_interactive_predictor.model."
    return {
        (f"tracker.{k[len(tracker) :]}" if k.startswith(tracker) else f"detector.{k}"): v
        for k, v in state.items()
    }


def _architecture_of(checkpoint: Mapping, default: Architecture) -> Architecture:
    name = checkpoint.get("architecture", None)
    if name is None:
        return default
    if name not in ARCHITECTURES:
        raise WeightsError(
            f"the checkpoint's architecture {name!r} is none of {list(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


def checkpoint_path(spec: str) -> Path:
    """The file a `SAM3_CHECKPOINT` value names: `demo:NAME`, a hub repo or a path."""
    if spec.startswith(DEMO_PREFIX):
        path = demo_checkpoint_path(spec)
        if not path.is_file():
            raise WeightsError(
                f"SAM3_CHECKPOINT={spec}: no such demo model (there is demo:shapes, a demo model "
                "trained on synthetic shapes)"
            )
        return path
    if spec.startswith(HUB_PREFIX):
        from huggingface_hub import hf_hub_download

        repo_id = spec[len(HUB_PREFIX) :].strip("/")
        try:
            return Path(hf_hub_download(repo_id=repo_id, filename=HUB_CHECKPOINT_FILE))
        except Exception as exc:  # network, auth (gated repo), missing file
            raise WeightsError(f"cannot download {HUB_CHECKPOINT_FILE} from {spec}: {exc}") from exc
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"SAM3_CHECKPOINT={spec} is not a file. {HOW_TO_GET_WEIGHTS}")
    return path


def load_checkpoint(model: InteractiveSam3, checkpoint: Mapping[str, torch.Tensor]) -> None:
    """Load a sam3 checkpoint (its `model` dict or the bare state) into `model`, strictly for
    every tensor the model has; the checkpoint's other tensors (text encoder, ...) are ignored."""
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]
    missing, unexpected = model.load_state_dict(interactive_state_dict(checkpoint), strict=False)
    if missing:
        raise WeightsError(
            f"the checkpoint lacks {len(missing)} tensors of the model "
            f"(first: {missing[:3]}); is it a SAM3 image checkpoint?"
        )
    if model.concepts is None and any(key.startswith("concepts.") for key in unexpected):
        logger.info("interactive-only model: the checkpoint's concept tensors are not loaded")


def load_model(settings: EngineSettings, checkpoint_arch: Architecture = FULL) -> InteractiveSam3:
    """Build the model the settings ask for, on the device they name, in eval mode.

    A checkpoint is a released SAM3 one (`checkpoint_arch` is there for tests), or one that
    names its architecture (`"architecture": "tiny"` beside `"model"`, as the demo model's
    `demo:shapes` does).
    """
    device = resolve_device(settings.device)
    started = time.perf_counter()
    options = {
        "max_hole_area": settings.max_hole_area,
        "concepts_bpe_path": clip_vocabulary() if settings.concepts else None,
    }
    if settings.checkpoint:
        path = checkpoint_path(settings.checkpoint)
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise WeightsError(f"cannot read checkpoint {path}: {exc}") from exc
        arch = _architecture_of(checkpoint, checkpoint_arch)
        model = InteractiveSam3(arch, **options)
        load_checkpoint(model, checkpoint)
        source = str(path)
        if "description" in checkpoint:
            model.description = str(checkpoint["description"])
            source = f"{path}: {model.description}"
            logger.warning("SAM3_CHECKPOINT=%s is a %s", settings.checkpoint, source)
    elif settings.random_weights:
        arch = ARCHITECTURES[settings.random_weights]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.random_seed)
            model = InteractiveSam3(arch, **options)
        source = f"RANDOM weights ({arch.name}, seed {settings.random_seed})"
        logger.warning(
            "=" * 72 + "\nSAM3 is serving %s: masks are meaningless. For tests and smoke runs "
            "only; set SAM3_CHECKPOINT for real segmentation.\n" + "=" * 72,
            source,
        )
    else:
        raise WeightsError(HOW_TO_GET_WEIGHTS)
    model = model.to(device).eval()
    logger.info(
        "SAM3 %s model (%s) from %s on %s, built in %.1f s",
        "interactive + concepts" if model.concepts is not None else "interactive-only",
        model.arch.name,
        source,
        device,
        time.perf_counter() - started,
    )
    return model


def served_model(settings: EngineSettings, model: InteractiveSam3) -> ServedModel:
    """What `model`, loaded by `load_model(settings)`, is: for `GET /sam3/model`. A path
    is named by its file name alone (where it lies is the operator's business)."""

    def concepts(trained: bool) -> Literal["trained", "untrained", "off"]:
        if model.concepts is None:
            return "off"
        return "trained" if trained else "untrained"

    spec, arch = settings.checkpoint, model.arch.name
    if spec and spec.startswith(DEMO_PREFIX):
        record = demo_record(spec)
        return ServedModel(
            weights="demo",
            name=spec,
            description=model.description or DESCRIPTION,
            architecture=arch,
            concepts=concepts(bool(record.get("concept_steps"))),
            held_out=held_out_scores(record),
        )
    if spec:
        name = spec if spec.startswith(HUB_PREFIX) else Path(spec).name
        description = model.description or f"SAM3 weights from {name}"
        return ServedModel("checkpoint", name, description, arch, concepts(True))
    description = (
        f"random weights (seed {settings.random_seed}): masks are noise; for tests and smoke "
        "runs only"
    )
    return ServedModel("random", f"random:{arch}", description, arch, concepts(False))


def sam3_state_dict(model: InteractiveSam3) -> dict[str, torch.Tensor]:
    """`model`'s tensors under a released sam3 checkpoint's key names (`detector.*`,
    `tracker.*`): the inverse of `interactive_state_dict`, so that a checkpoint made here
    (the demo model's) loads through the same code as `sam3.pt`."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        for source, target in _KEY_MAP:
            if key.startswith(target):
                state[source + key[len(target) :]] = tensor
                break
        else:
            raise WeightsError(f"no sam3 checkpoint key for the model's tensor {key}")
    return state
