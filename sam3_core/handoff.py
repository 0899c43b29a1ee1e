"""What one engine hands another when an image changes owner: `ImageState`, everything the
engine keeps about one picture (its embedding and the logits saved for its prompt sets), with
tensors on the CPU so that it pickles anywhere (the serving layer moves it between replicas
through Ray's object store; the engine itself knows nothing of Ray).

`Segmenter.export_image` builds one, `Segmenter.adopt_image` takes one in under the rule of
which content an id holds (see `Segmenter.adopt_image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sam3_core.caches import CachedLogits
from sam3_core.model import ImageEmbedding


@dataclass(frozen=True)
class ImageState:
    """One cached picture, portable between engines.

    Attributes:
        content_digest: SHA-256 of the image bytes the embedding was computed from.
        version: the picture's version, a logical clock stamped by the owner that took the
            latest request sending these bytes (`deployments.ownership`); between replicas,
            the larger `version` is the newer content of an id. Never a wall clock: clocks of
            different nodes disagree.
        embedding: the decoder's tensors on the CPU, in the sender's storage dtype
            (`image_embed` (1, C, S/14, S/14), `high_res_feats` at 4x and 2x that size).
        logits: the picture's saved prompt sets with their (P, L, L) float32 logits, oldest
            save first.
    """

    content_digest: str
    version: int
    embedding: ImageEmbedding
    logits: tuple[CachedLogits, ...] = ()

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes + sum(entry.nbytes for entry in self.logits)


def portable(embedding: ImageEmbedding) -> ImageEmbedding:
    """`embedding` with its tensors on the CPU (a copy only where they were elsewhere)."""
    return moved(embedding, torch.device("cpu"), embedding.image_embed.dtype)


def moved(embedding: ImageEmbedding, device: torch.device, dtype: torch.dtype) -> ImageEmbedding:
    """`embedding` on `device`, stored as `dtype`."""
    return ImageEmbedding(
        image_embed=embedding.image_embed.to(device, dtype),
        high_res_feats=(
            embedding.high_res_feats[0].to(device, dtype),
            embedding.high_res_feats[1].to(device, dtype),
        ),
        orig_hw=embedding.orig_hw,
        trunk=None if embedding.trunk is None else embedding.trunk.to(device, dtype),
    )
