"""Workarounds that let the `sam3` 0.1.4 package build and run anywhere, without forking it.

- Two constructors hard-code `device="cuda"` (`PositionEmbeddingSine` with
  `precompute_resolution`, `TransformerDecoder._get_coords`): while building, factory calls
  asking for CUDA are redirected to the target device (`building_on`). Redirecting on CUDA
  machines too keeps those precomputed caches (plain dicts, not buffers, so `.to()` would not
  move them) on the device the model runs on, e.g. `cuda:1`.
- `sam3/model/edt.py` imports `triton` at module level; it is used only by video-tracking
  utilities. Where triton cannot be imported, a stand-in module raises if it is ever called.
- Building the tracker enters a process-wide CUDA bf16 autocast (`bf16_context`) that would
  silently change precision for everything else on a GPU; `leave_tracker_autocast` undoes it.
- The geometry encoder pins a tensor (`pin_memory()`) on every box prompt, which raises on a
  machine without CUDA; `without_pinned_memory` makes that call a no-op there.
- The video path (`Sam3VideoInference`, its tracker) moves tensors with `.cuda()` in a
  few places (memory features, previous mask logits, frames) and keeps tracker state on
  `torch.device("cuda")`; `running_on` runs it on any device (see its docstring).
  `building_on`, `without_pinned_memory` and `running_on` share one torch function mode
  (`_AimAt`): what sam3 aims at CUDA goes to the target device.
- On the CPU, sam3's connected-components fallback (`connected_components_cpu`, used by
  the video model's hole filling) stacks an empty list when a frame has no new detection
  and raises; `allow_empty_connected_components` answers an empty batch with empty labels,
  as the GPU kernels do.
- The wheel lacks the CLIP BPE vocabulary its text encoder's tokenizer opens
  (`assets/bpe_simple_vocab_16e6.txt.gz`); `open_clip_torch`, a dependency of ours, ships
  the same file (`clip_vocabulary`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# Messages sam3 and torch print on every CPU-only import; they say nothing actionable here.
_NOISE = (
    r"CUDA is not available or torch_xla is imported",
    r".*torch\.jit\.script.* is deprecated",
    r"User provided device_type of 'cuda', but CUDA is not available",
)


@contextlib.contextmanager
def quiet_sam3() -> Iterator[None]:
    """Silence the known, harmless warnings sam3 raises while importing and building."""
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def ensure_sam3_importable() -> None:
    """Let sam3 import where `triton` cannot (CPU-only torch builds, macOS, aarch64)."""
    if "sam3.model.edt" in sys.modules:
        return
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a triton build broken for this platform
        pass
    else:
        return
    stand_in = types.ModuleType("sam3.model.edt")

    def edt_triton(*_args: Any, **_kwargs: Any) -> torch.Tensor:
        raise RuntimeError("sam3's triton EDT kernel is unavailable: triton is not installed")

    stand_in.edt_triton = edt_triton  # type: ignore[attr-defined]
    sys.modules["sam3.model.edt"] = stand_in


def _names_cuda(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, int) and not isinstance(value, bool):
        return True  # a bare device index names a CUDA device
    return isinstance(value, str) and value.startswith("cuda")


class _AimAt(TorchFunctionMode):
    """What sam3 aims at CUDA goes to `target` instead: `device=<cuda>` arguments (factory
    calls), `Tensor.cuda()` and `Tensor.to(<cuda>)`; `pin_memory()` (page-locking for copies
    to CUDA) returns the tensor itself unless `target` is CUDA. One mode for building
    (`building_on`), running the video model (`running_on`) and the detector without CUDA
    (`without_pinned_memory`)."""

    def __init__(self, target: torch.device) -> None:
        super().__init__()
        self.target = target

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            extra = {k: v for k, v in kwargs.items() if k == "non_blocking"}
            return args[0].to(self.target, **extra)
        if func is torch.Tensor.pin_memory and self.target.type != "cuda":
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _names_cuda(args[1]):
            args = (args[0], self.target, *args[2:])
        if _names_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": self.target}
        return func(*args, **kwargs)


@contextlib.contextmanager
def building_on(device: torch.device) -> Iterator[None]:
    """Build sam3 modules so that hard-coded CUDA tensors land on `device` instead."""
    with quiet_sam3(), _AimAt(device):
        yield


def leave_tracker_autocast(tracker: torch.nn.Module) -> None:
    """Exit the bf16 autocast `Sam3TrackerPredictor.__init__` entered for the whole process."""
    context = getattr(tracker, "bf16_context", None)
    if context is not None:
        with quiet_sam3():
            context.__exit__(None, None, None)


def without_pinned_memory() -> contextlib.AbstractContextManager[Any]:
    """Run sam3's detector where pinning memory is impossible (no CUDA); a no-op elsewhere."""
    if torch.cuda.is_available():
        return contextlib.nullcontext()
    return _AimAt(torch.device("cpu"))


@contextlib.contextmanager
def running_on(device: torch.device) -> Iterator[None]:
    """Run sam3's video model on `device` although its code names CUDA.

    Chosen over a tracking loop of our own: sam3's `propagate_in_video` is ~1,500 lines of
    detection, association and memory heuristics that a copy would have to follow release by
    release; redirecting its device calls keeps every result sam3's own. On a CUDA device
    only `.cuda()`'s target needs choosing (`torch.cuda.device`): no mode is entered, so the
    redirect costs nothing where sam3 was meant to run. On other devices each torch call
    passes through the mode (a few microseconds).
    """
    if device.type == "cuda":
        with quiet_sam3(), torch.cuda.device(device):
            yield
        return
    with quiet_sam3(), _AimAt(device):
        yield


def allow_empty_connected_components() -> None:
    """Let `sam3.perflib.connected_components.connected_components` take an empty batch
    (see module docstring). Idempotent; sam3 imports the function at each call, so replacing
    the module attribute is enough."""
    from sam3.perflib import connected_components as module

    original = module.connected_components
    if getattr(original, "_sam3_serve_empty_batch", False):
        return

    def connected_components(input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if input_tensor.shape[0] == 0:
            empty = torch.zeros(input_tensor.shape, dtype=torch.int64, device=input_tensor.device)
            shape = empty.shape if empty.dim() == 4 else (0, 1, *empty.shape[1:])
            return empty.view(shape), empty.view(shape).clone()
        return original(input_tensor)

    connected_components._sam3_serve_empty_batch = True  # type: ignore[attr-defined]
    module.connected_components = connected_components


CLIP_VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"


def clip_vocabulary() -> str:
    """Path of the CLIP BPE vocabulary in the installed `open_clip` package (found without
    importing it: open_clip's own import is slow and not needed)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "concept segmentation needs the CLIP BPE vocabulary shipped by open_clip_torch: "
            "pip install open_clip_torch"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / CLIP_VOCABULARY)
