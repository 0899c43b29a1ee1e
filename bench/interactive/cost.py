"""The benchmark model's embed:decode cost ratio, measured in-process as a replica runs it."""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from PIL import Image

from bench.interactive.workload import HEIGHT, WIDTH
from bench.samples import smooth_image
from sam3_core.architecture import NARROW
from sam3_core.model import InteractiveSam3


def cost_ratio() -> dict[str, float]:
    """Embed and decode time of the benchmark's model on one CPU thread, as in a replica."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = InteractiveSam3(NARROW, max_hole_area=0).eval()
    picture = Image.open(io.BytesIO(smooth_image(0, HEIGHT, WIDTH))).convert("RGB")
    image = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)
    embedding = model.encode(image)
    started = time.perf_counter()
    for _ in range(3):
        embedding = model.encode(image)
    embed = (time.perf_counter() - started) / 3
    coords, labels = np.array([[[320.0, 240.0]]]), np.array([[1]])
    model.decode(embedding, point_coords=coords, point_labels=labels)
    started = time.perf_counter()
    for _ in range(20):
        model.decode(embedding, point_coords=coords, point_labels=labels)
    decode = (time.perf_counter() - started) / 20
    torch.set_num_threads(threads)
    return {"embed_ms": embed * 1000, "decode_ms": decode * 1000, "ratio": embed / decode}
