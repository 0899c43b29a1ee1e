"""What one engine hands another when a video session changes owner: `SessionState`, the
session as it is (sam3's live inference state with the session's compressed frames inside:
prompts, memories, per-object outputs, cached features), so that the next owner continues
exactly where this one stopped.

Why the live state and not a replay of the session's requests: a replay runs every
propagation again (at full size on a CPU, tens of seconds a frame), while the state is a few
MiB per frame at most and moves in the time of a copy. sam3 keeps it in plain dicts, lists,
dataclasses and tensors, which `torch.save` writes whole (tensors shared between its parts
stay shared); `tests/unit/test_video_handoff.py` checks that a moved session answers the same
masks as one that never moved.

The payload is written by one replica of the deployment and read by another (through Ray's
object store, never from a client): only then is it unpickled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SessionState:
    """One video session, portable between engines.

    Attributes:
        key: (tenant, session_id).
        version: the session's version, a logical clock stamped by the owner that started it
            (`deployments.ownership`): between replicas the larger is the newer session.
        payload: sam3's inference state (`video_state.new_state`'s dict, as propagated),
            frames included, written by `torch.save`.
        idle_s: how long the session had been idle (its idle expiry continues).
    """

    key: tuple[str | None, str]
    version: int
    payload: bytes
    idle_s: float = 0.0

    @property
    def nbytes(self) -> int:
        return len(self.payload)


def pack(state: dict[str, Any]) -> bytes:
    """sam3's state of a session (frames included) as bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack(payload: bytes, device: torch.device) -> dict[str, Any]:
    """`pack`'s state again, its tensors on `device` where they were on an accelerator (on
    the host where sam3 kept them there: offloaded tracker state stays offloaded)."""

    def place(storage: Any, location: str) -> Any:  # `storage` is read onto the host first
        if location == "cpu" or device.type != "cuda":
            return storage
        return storage.cuda(device.index)

    state = torch.load(io.BytesIO(payload), map_location=place, weights_only=False)
    frames = state["input_batch"].img_batch
    frames.device = device
    return state
