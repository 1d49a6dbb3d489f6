"""ONNX Runtime: any ONNX image encoder (`onnx`), and the fast CPU path for every torch backbone.

A torch backbone is exported once into `graphs_dir()` (`$SETENC_GRAPHS`, else the cache's `onnx/`), keyed by its id
(weights hash + preprocessing) and input size, written atomically, and checked against torch before it is kept. On a
2-core CPU EfficientNet-Lite0 runs ~5x faster this way than through torch, with the same vectors to ~1e-5.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.photos.decode import WHITE, ImageTransform
from setenc.plumbing.paths import file_sha256, graphs_dir
from setenc.photos.backbones.base import Backbone, TorchSpec, short_hash

POOLINGS = ("none", "token0", "token_mean", "spatial_mean")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IN, _OUT = "pixels", "features"  # tensor names in the graphs we export


def _session(path: Path, device: str | torch.device):
    """An onnxruntime session with as many intra-op threads as torch uses, all graph optimisations on."""
    import onnxruntime as ort

    device = torch.device(device)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle threads sleep instead of spinning: they share the cores with the decode workers (measured faster)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SetencError(f"{path}: device={device} needs onnxruntime-gpu; install it or use runtime='torch'")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
        raise SetencError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {e})") from None


def _pool(y: torch.Tensor, pooling: str) -> torch.Tensor:
    """Model output -> (B, D): as is, first token, mean over tokens, or mean over the spatial grid."""
    rank = {"token0": 3, "token_mean": 3, "spatial_mean": 4}.get(pooling, y.ndim)
    if y.ndim != rank:
        raise ValueError(f"pooling={pooling!r} needs a {rank}-d output, the model gives {tuple(y.shape)}")
    if pooling == "token0":
        return y[:, 0]  # (B, T, D) -> (B, D)
    if pooling == "token_mean":
        return y.mean(dim=1)  # (B, T, D) -> (B, D)
    if pooling == "spatial_mean":
        return y.mean(dim=(2, 3))  # (B, D, H, W) -> (B, D)
    return y.flatten(1)  # (B, D)


class OnnxBackbone(Backbone):
    """An ONNX graph taking NCHW float32 pixels, run by onnxruntime."""

    runtime = "onnx"

    def __init__(
        self,
        name: str,
        id: str,
        path: str | os.PathLike,
        transform: ImageTransform,
        input_name: str | None = None,
        output_name: str | None = None,
        pooling: str = "none",
        device: str | torch.device = "cpu",
    ):
        if pooling not in POOLINGS:
            raise SetencError(f"{path}: pooling={pooling!r} is not one of {POOLINGS}")
        self.name, self.id, self.transform, self.pooling, self.path = name, id, transform, pooling, Path(path)
        self.session = _session(self.path, device)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = input_name or inputs[0]
        self.output_name = output_name or outputs[0]
        for given, known, what in ((self.input_name, inputs, "input"), (self.output_name, outputs, "output")):
            if given not in known:
                raise SetencError(f"{path}: has no {what} named {given!r}; its {what}s are {known}")
        s = transform.size
        try:
            self.dim = int(self._features(torch.zeros(1, 3, s, s)).shape[-1])
        except Exception as e:  # noqa: BLE001 -- wrong size / layout / pooling surface here, not mid-run
            raise SetencError(
                f"{path}: does not turn a (1, 3, {s}, {s}) float32 batch into vectors with pooling={pooling!r} "
                f"({type(e).__name__}: {e}); check size= and pooling="
            ) from None

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()  # (B, 3, S, S)
        y = self.session.run([self.output_name], {self.input_name: x})[0]
        return _pool(torch.from_numpy(np.asarray(y, dtype=np.float32)), self.pooling)


def onnx_file(
    path: str | os.PathLike,
    sha256: str | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    pooling: str = "none",
    size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    fill: tuple[int, int, int] = WHITE,
    device: str | torch.device = "cpu",
) -> OnnxBackbone:
    """The `onnx` backbone: any ONNX image encoder file, pinned by sha256.

    Args:
        path: the .onnx file; it takes (B, 3, size, size) float32 normalised pixels.
        sha256: the file's expected sha256 (hex); a mismatch is an error. None skips the check.
        input_name, output_name: graph tensors to use (default: the first input / output).
        pooling: "none" for (B, D) outputs, "token0" / "token_mean" for (B, T, D), "spatial_mean" for (B, D, H, W).
        size, mean, std, fill: preprocessing: letterbox to size x size on `fill`, then (x/255 - mean) / std.
    """
    path = Path(path)
    if not path.is_file():
        raise SetencError(f"{path}: ONNX model file not found")
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256.strip().lower():
        raise CheckpointError(
            f"{path}: sha256 is {digest} but {sha256} was pinned; this is not the pinned model -- fix the path, "
            "or update the pin if the model was changed on purpose"
        )
    transform = ImageTransform(size, mean, std, fill)
    key = short_hash(digest, input_name, output_name, pooling, vars(transform))
    return OnnxBackbone("onnx", f"onnx:{path.stem}:{key}", path, transform, input_name, output_name, pooling, device)


def _export(module: nn.Module, x: torch.Tensor, path: str) -> None:
    """torch -> ONNX with a dynamic batch axis: the TorchScript exporter (fast), else the dynamo one."""
    errors = []
    for dynamo in (False, True):
        if dynamo:
            kw = dict(dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
        else:
            kw = dict(dynamic_axes={_IN: {0: "batch"}, _OUT: {0: "batch"}}, opset_version=17)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (x,), path, input_names=[_IN], output_names=[_OUT], dynamo=dynamo, **kw)
            return
        except Exception as e:  # noqa: BLE001 -- exporters fail in many ways; report them all
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {e}")
    raise RuntimeError("ONNX export failed -- " + " | ".join(errors))


def _check(module: nn.Module, path: str, size: int) -> None:
    """The exported graph must give torch's vectors, at a batch size other than the one exported with."""
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(module(x).float(), dim=-1)
    try:
        y = _session(Path(path), "cpu").run([_OUT], {_IN: x.numpy()})[0]
    except Exception as e:  # noqa: BLE001 -- an export that does not load or run is an export failure
        raise RuntimeError(f"the exported graph does not run in onnxruntime: {e}") from None
    got = torch.nn.functional.normalize(torch.from_numpy(y).float(), dim=-1)
    if got.shape != ref.shape:
        raise RuntimeError(f"ONNX export gives shape {tuple(got.shape)}, torch {tuple(ref.shape)}")
    err = (got - ref).abs().max().item()
    if err > 1e-3:
        raise RuntimeError(f"ONNX export differs from torch (max |diff| {err:.2e} on unit vectors)")


def cached_graph(spec: TorchSpec, make: Callable[[str], None]) -> Path:
    """The cached ONNX file named by `spec.id` and input size; on first use `make(tmp)` writes (and checks) it into
    a temporary file that is then renamed into place, so readers see no file or a whole, checked one."""
    path = graphs_dir() / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', spec.id)}-{spec.transform.size}px.onnx"
    if path.is_file():
        return path
    print(f"[backbone] {spec.id}: building its ONNX graph once into {path.parent} (later runs reuse it)",
          file=sys.stderr)  # tens of seconds on a first run: say what it is
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    os.close(fd)
    try:
        make(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def export_onnx(spec: TorchSpec) -> Path:
    """The cached ONNX file for a torch backbone, exported (and checked against torch) on first use."""
    size = spec.transform.size

    def make(tmp: str) -> None:
        module = spec.build().eval().requires_grad_(False).cpu()
        _export(module, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)), tmp)
        _check(module, tmp, size)

    return cached_graph(spec, make)


def onnx_runtime(spec: TorchSpec, device: str | torch.device = "cpu") -> OnnxBackbone:
    """Run a torch backbone through onnxruntime; same id, transform and vectors as its torch runtime."""
    path = export_onnx(spec)
    try:
        return OnnxBackbone(spec.name, spec.id, path, spec.transform, _IN, _OUT, "none", device)
    except SetencError as e:
        raise SetencError(f"{e}; delete {path} to export it again") from None
