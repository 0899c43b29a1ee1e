"""The embedding's wire layout: round trips, alignment, and what each encoding costs."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sam3_core.protocol.embedding import ALIGN, MAGIC, read_embedding, write_embedding


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image_embed": rng.normal(0, 1, (1, 8, 4, 4)).astype(np.float32),
        "high_res_feats_0": rng.normal(0, 3, (1, 1, 16, 16)).astype(np.float32),
        "high_res_feats_1": rng.normal(0, 2, (1, 2, 8, 8)).astype(np.float32),
    }


def test_float32_round_trips_exactly_and_keeps_extra_header_fields():
    data = write_embedding(arrays(), (30, 40), "float32", extra={"decoder": {"etag": "e"}})
    assert data[:8] == MAGIC
    header, out = read_embedding(data)
    assert header["orig_hw"] == [30, 40] and header["decoder"] == {"etag": "e"}
    for name, array in arrays().items():
        assert np.array_equal(out[name], array)
    (length,) = struct.unpack_from("<I", data, 8)
    base = -(-(12 + length) // ALIGN) * ALIGN
    assert all(entry["offset"] % ALIGN == 0 for entry in header["tensors"])
    assert len(data) >= base + sum(entry["nbytes"] for entry in header["tensors"])


@pytest.mark.parametrize(
    ("encoding", "tolerance", "ratio"), [("float16", 2e-3, 0.5), ("int8", 0.03, 0.3)]
)
def test_smaller_encodings(encoding, tolerance, ratio):
    source = arrays()
    full = len(write_embedding(source, (1, 1), "float32"))
    data = write_embedding(source, (1, 1), encoding)
    assert len(data) <= full * ratio + 1024
    _, out = read_embedding(data)
    for name, array in source.items():
        peak = np.abs(array).max()
        assert np.abs(out[name] - array).max() <= tolerance * peak, name


def test_refuses_what_is_not_an_embedding():
    with pytest.raises(ValueError, match="magic"):
        read_embedding(b"PNG....." + b"\0" * 20)
    with pytest.raises(ValueError, match="encoding"):
        write_embedding(arrays(), (1, 1), "int4")  # type: ignore[arg-type]
