"""int8 backbones: a torch backbone exported to ONNX, then statically quantised to int8 for onnxruntime.

Why: on a CPU with int8 dot-product instructions (AVX-512 VNNI / AVX-VNNI, ARM dot-product) the int8 graph runs
EfficientNet-Lite0 about twice as fast as float32, and Lite is designed for it (ReLU6, no squeeze-excite).
Its vectors are not the float ones (cosine ~0.99 to them), so an int8 backbone is a backbone of its own: its
own name (`efficientnet-lite0-int8`), id and cache entries, never mixed with float vectors.

Calibration needs photos; the package's own synthetic demo photos (`catalogs.demo`, deterministic and offline)
are used, so every machine builds the same int8 model with nothing downloaded and no user data involved.
Measured: calibrating on them keeps real catalogue photos as close to float32 as calibrating on the catalogue
itself (docs/bench_embed.md, "int8").
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from setenc.plumbing.errors import SetencError
from setenc.photos.backbones.base import TorchSpec, short_hash
from setenc.photos.backbones.onnx import _IN, _OUT, OnnxBackbone, _session, cached_graph, export_onnx

CALIBRATION = {"demo_seed": 0, "demo_groups": 24, "demo_px": 128, "photos": 128, "method": "percentile",
               "format": "qdq", "activations": "uint8", "weights": "int8 per channel"}
log = logging.getLogger(__name__)
# mean cosine to float32 on the (synthetic) calibration photos below which a quantised graph is refused:
# EfficientNet-Lite0 measures 0.969 there and 0.995 on real catalogue photos
MIN_COSINE = 0.95


@dataclass
class Int8Spec(TorchSpec):
    """A torch backbone to be quantised: `float_spec` is the one it quantises (its ONNX export is the input)."""

    float_spec: TorchSpec | None = None


def int8_spec(spec: TorchSpec) -> Int8Spec:
    """The int8 twin of a torch backbone spec: name `<name>-int8`, an id naming the float weights, the
    calibration and the onnxruntime version (another version may quantise differently)."""
    import onnxruntime as ort

    key = short_hash(CALIBRATION, ort.__version__)
    return Int8Spec(f"{spec.name}-int8", f"{spec.id}:int8-{key}", spec.transform, spec.build, float_spec=spec)


def _calibration_pixels(spec: TorchSpec) -> np.ndarray:
    """(N, 3, S, S) float32: the first CALIBRATION["photos"] demo photos, through the backbone's preprocessing."""
    from setenc.catalogs.demo import make_demo_catalog
    from setenc.catalogs.manifest import load_catalog
    from setenc.photos.decode import load_image

    manifest = make_demo_catalog(seed=CALIBRATION["demo_seed"], n_groups=CALIBRATION["demo_groups"],
                                 size=CALIBRATION["demo_px"])
    paths = sorted(load_catalog(manifest).image_paths)[: CALIBRATION["photos"]]
    return torch.stack([spec.transform(load_image(p)) for p in paths]).numpy()


def _quantise(fp32: Path, out: str, pixels: np.ndarray) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{_IN: pixels[i : i + 16]} for i in range(0, len(pixels), 16)])

        def get_next(self):
            return next(self.batches, None)

    pre = out + ".pre.onnx"
    try:  # onnxruntime's calibrator prints its progress: keep the user's stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32), pre)  # shape inference + graph clean-up, as onnxruntime recommends
            quantize_static(pre, out, Batches(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.Percentile)
    finally:
        if os.path.exists(pre):
            os.remove(pre)


def _agreement(fp32: Path, int8: str, pixels: np.ndarray) -> float:
    """Mean cosine between the float and int8 graphs' vectors of the same photos."""
    a, b = (_session(Path(p), "cpu").run([_OUT], {_IN: pixels})[0] for p in (fp32, int8))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    return float((a * b).sum(1).mean())


def quantised_onnx(spec: Int8Spec) -> Path:
    """The cached int8 ONNX file of `spec`, quantised (and checked against float32) on first use."""

    def make(tmp: str) -> None:
        fp32 = export_onnx(spec.float_spec)
        log.info("%s: quantising to int8 once, calibrated on %d synthetic demo photos (about a minute)", spec.name,
                 CALIBRATION["photos"])
        pixels = _calibration_pixels(spec)
        _quantise(fp32, tmp, pixels)
        cosine = _agreement(fp32, tmp, pixels)
        if cosine < MIN_COSINE:
            raise RuntimeError(f"{spec.name}: the int8 graph's vectors are too far from float32 "
                               f"(mean cosine {cosine:.3f} < {MIN_COSINE})")

    return cached_graph(spec, make)


def int8_runtime(spec: Int8Spec, device: str | torch.device = "cpu") -> OnnxBackbone:
    """Run an int8 spec with onnxruntime on the CPU (int8 kernels are the CPU's; a GPU runs float backbones)."""
    if torch.device(device).type != "cpu":
        raise SetencError(f"{spec.name} runs on the CPU only; on a GPU use {spec.float_spec.name}")
    return OnnxBackbone(spec.name, spec.id, quantised_onnx(spec), spec.transform, _IN, _OUT, "none", device)

