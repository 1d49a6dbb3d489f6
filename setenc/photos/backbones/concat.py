"""Several frozen nets on one input, their unit vectors side by side: one backbone to every caller.

Why: two ImageNet nets of different depth and resolution make different mistakes, and a set head or a class probe
reading both does better than either (fashion44k, 5 folds x 2 seeds: EfficientNet-Lite0 + Lite2 R@1 0.892 against
0.874 for Lite0 alone; Lite2 alone was no better than Lite0; docs/bench_heads.md, round 8). Concatenating unit
vectors keeps each net's cosine intact: the pair's cosine is the mean of the parts' cosines.

All parts read one letterboxed, normalised input (one transform, one decode, one cache entry per photo) at the
largest part's size; a smaller part gets it resized to its own size inside the net (bilinear), so each net sees
photos at the resolution it was trained at. The result is a `TorchSpec` like any other, so the ONNX runtime and
the cache need nothing new.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from setenc.plumbing.errors import SetencError
from setenc.photos.backbones.base import TorchSpec


class Concatenated(nn.Module):
    """(B, 3, S, S) -> (B, sum of dims): each part's L2-normalised features, in order; part i reads the input
    resized to `sizes[i]` where that differs from S."""

    def __init__(self, parts: Sequence[nn.Module], sizes: Sequence[int], size: int):
        super().__init__()
        self.parts, self.sizes, self.size = nn.ModuleList(parts), [int(s) for s in sizes], int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for part, size in zip(self.parts, self.sizes):
            y = x if size == self.size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out.append(F.normalize(part(y), dim=-1))
        return torch.cat(out, dim=-1)


def concatenated(name: str, specs: Sequence[TorchSpec]) -> TorchSpec:
    """One spec from the parts' specs: `Backbone.encode` normalises the concatenation, so each part ends up scaled
    by 1/sqrt(len(parts)). The id names every part and, when sizes differ, the shared input size."""
    if len(specs) < 2:
        raise SetencError(f"{name}: a concatenated backbone needs at least 2 parts, got {len(specs)}")
    reads = {(s.transform.mean, s.transform.std, s.transform.fill) for s in specs}
    if len(reads) != 1:
        raise SetencError(f"{name}: every part must read the same normalisation and fill, got {sorted(reads)}")
    sizes = [s.transform.size for s in specs]
    first = max(range(len(specs)), key=lambda i: sizes[i])
    size = sizes[first]
    builds: list[Callable[[], nn.Module]] = [s.build for s in specs]
    id = "+".join(s.id for s in specs) + (f"@{size}" if len(set(sizes)) > 1 else "")
    return TorchSpec(name, id, specs[first].transform,
                     lambda: Concatenated([build() for build in builds], sizes, size))
