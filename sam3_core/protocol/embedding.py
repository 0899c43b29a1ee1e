"""The embedding's wire format (`POST /sam3/embedding`): the interactive decoder's inputs for
one image, so that a client (the page's Web Worker) decodes clicks itself.

Layout (little-endian throughout):

    offset 0   8 bytes   magic b"SAM3EMB1"
    offset 8   uint32    H, the header's length in bytes
    offset 12  H bytes   header, UTF-8 JSON (below)
    then       zero bytes up to the next multiple of 16: the data section starts there
    data       each array at its "offset" (from the data section's start, 16-aligned)

Header: `{"encoding": "float16" | "int8" | "float32", "orig_hw": [H, W],
"tensors": [{"name", "shape", "dtype", "offset", "nbytes", "scales"?}], ...}` plus whatever
the server adds (the decoder's settings and ETag). Arrays are C-order. "int8" arrays carry
per-channel scales (axis 1): `"scales": {"offset", "nbytes"}`, float32, one per channel, and
the value is `q * scale[c]`. The three arrays are the graph's `image_embed`,
`high_res_feats_0` and `high_res_feats_1` (`sam3_core.onnx_decoder`).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

import numpy as np

MAGIC = b"SAM3EMB1"
MEDIA_TYPE = "application/vnd.sam3.embedding"
ALIGN = 16
Encoding = Literal["float16", "int8", "float32"]
ENCODINGS: tuple[Encoding, ...] = ("float16", "int8", "float32")
_WIRE = {"float16": "<f2", "float32": "<f4", "int8": "i1"}


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def quantize_per_channel(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per channel (axis 1) of an (1, C, H, W) float array: (q, scales)."""
    peak = np.abs(array).max(axis=(0, 2, 3)).astype(np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(array / scales[None, :, None, None]), -127, 127).astype(np.int8)
    return q, scales


def write_embedding(
    arrays: dict[str, np.ndarray],
    orig_hw: tuple[int, int],
    encoding: Encoding = "float16",
    extra: dict[str, Any] | None = None,
) -> bytes:
    """Encode float32 arrays (name -> (1, C, H, W)) in the layout above."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}")
    chunks: list[bytes] = []
    tensors = []
    offset = 0

    def place(data: bytes) -> dict[str, int]:
        nonlocal offset
        start = offset
        chunks.append(data + b"\0" * (_aligned(len(data)) - len(data)))
        offset += _aligned(len(data))
        return {"offset": start, "nbytes": len(data)}

    for name, array in arrays.items():
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "dtype": encoding}
        if encoding == "int8":
            q, scales = quantize_per_channel(array.astype(np.float32))
            entry |= place(q.tobytes())
            entry["scales"] = place(scales.astype("<f4").tobytes())
        else:
            entry |= place(np.ascontiguousarray(array, dtype=_WIRE[encoding]).tobytes())
        tensors.append(entry)
    header = {
        **(extra or {}),
        "encoding": encoding,
        "orig_hw": [int(orig_hw[0]), int(orig_hw[1])],
        "tensors": tensors,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    prefix = MAGIC + struct.pack("<I", len(head)) + head
    return prefix + b"\0" * (_aligned(len(prefix)) - len(prefix)) + b"".join(chunks)


def read_embedding(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and the arrays (float32, dequantized) of an encoded embedding."""
    if data[:8] != MAGIC or len(data) < 12:
        raise ValueError("not a SAM3 embedding (magic bytes)")
    (length,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12 : 12 + length])
    base = _aligned(12 + length)
    arrays = {}
    for entry in header["tensors"]:
        start = base + entry["offset"]
        raw = data[start : start + entry["nbytes"]]
        dtype = _WIRE[entry["dtype"]]
        array = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).astype(np.float32)
        if entry["dtype"] == "int8":
            at = base + entry["scales"]["offset"]
            scales = np.frombuffer(data[at : at + entry["scales"]["nbytes"]], dtype="<f4")
            array = array * scales[None, :, None, None]
        arrays[entry["name"]] = array
    return header, arrays
