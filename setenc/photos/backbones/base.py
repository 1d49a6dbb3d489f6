"""The one interface every frozen photo encoder implements, and the torch runtime behind most of them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from setenc.photos.decode import ImageTransform


class Backbone:
    """A frozen photo encoder: (B, 3, S, S) normalised pixels -> (B, dim) L2-normalised float32 vectors.

    `id` names weights + preprocessing (the embedding-cache key) and is the same for every runtime, because
    every runtime of one backbone gives the same vectors (tested to ~1e-5).
    """

    name: str  # registry name, e.g. "efficientnet-lite0"
    id: str  # e.g. "efficientnet-lite0:<sha256[:12] of the weights>"
    dim: int  # output dimension
    transform: ImageTransform  # picklable: PIL RGB image -> (3, S, S) float32
    runtime: str  # "torch" | "onnx"
    cpu_only: bool = False  # int8 graphs: their kernels are the CPU's, so engines never place them on a GPU

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, dim) un-normalised features on any device."""
        raise NotImplementedError

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed a batch of transformed photos; the result lives on the batch's device.

        Returns an ordinary tensor (not an inference tensor), so it can feed code that trains on top of it.
        """
        size = self.transform.size
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, size, size):
            raise ValueError(f"{self.name}: expected a (B, 3, {size}, {size}) batch, got {tuple(batch.shape)}")
        with torch.inference_mode():
            y = F.normalize(self._features(batch).float(), dim=-1)  # (B, dim)
        return y.to(batch.device).clone()

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """Convenience: transform PIL images and embed them, `batch_size` at a time -> (len(images), dim)."""
        out = [
            self.encode(torch.stack([self.transform(im) for im in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim}, runtime={self.runtime!r}, {self.transform})"


@dataclass
class TorchSpec:
    """What a torch backbone is, before its weights are loaded: the ONNX path may never need to load them."""

    name: str  # registry name
    id: str  # weights + preprocessing id
    transform: ImageTransform  # preprocessing
    build: Callable[[], torch.nn.Module]  # loads the frozen net: (B, 3, S, S) -> (B, D) un-normalised


class TorchBackbone(Backbone):
    """A frozen `nn.Module` run by torch."""

    runtime = "torch"

    def __init__(self, spec: TorchSpec, device: str | torch.device = "cpu"):
        self.name, self.id, self.transform = spec.name, spec.id, spec.transform
        self.device = torch.device(device)
        self.module = spec.build().eval().requires_grad_(False).to(self.device)
        s = self.transform.size
        with torch.inference_mode():
            self.dim = int(self.module(torch.zeros(1, 3, s, s, device=self.device)).shape[-1])

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch.to(self.device, torch.float32))


def short_hash(*parts: object) -> str:
    """12 hex digits naming a combination of weight digests and preprocessing settings."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
