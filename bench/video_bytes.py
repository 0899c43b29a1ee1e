"""Where a video session's bytes are: sam3's state broken down by field, each tensor storage
counted once (at the first path it is found under), frame and object numbers folded into
`*` (`tracker[*].output_dict.non_cond_frame_outputs[*].maskmem_features`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import fields, is_dataclass
from typing import Any

import torch


def state_breakdown(state: Any, top: int = 12) -> dict[str, int]:
    """Bytes by field path, largest first (`top` of them; the rest as "other")."""
    seen: set[int] = set()
    totals: Counter[str] = Counter()
    stack: list[tuple[str, Any]] = [("", state)]
    containers: set[int] = set()
    while stack:
        path, value = stack.pop()
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                totals[path or "."] += storage.nbytes()
            continue
        if isinstance(value, (dict, list, tuple)) or is_dataclass(value):
            if id(value) in containers:
                continue
            containers.add(id(value))
        if isinstance(value, dict):
            items = sorted(value.items(), key=lambda kv: str(kv[0]), reverse=True)
            stack.extend((f"{path}.{_name(k)}", v) for k, v in items)
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{path}[*]", v) for v in reversed(value))
        elif is_dataclass(value) and not isinstance(value, type):
            stack.extend((f"{path}.{f.name}", getattr(value, f.name, None)) for f in fields(value))
    ranked = totals.most_common()
    kept = dict(ranked[:top])
    rest = sum(size for _, size in ranked[top:])
    if rest:
        kept["other"] = rest
    return kept


def _name(key: Any) -> str:
    return "*" if isinstance(key, int) else str(key)
