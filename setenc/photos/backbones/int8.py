"""int8 backbones: a torch backbone exported to ONNX, then statically quantised to int8 for onnxruntime.

Why: int8 runs EfficientNet-Lite about twice as fast as float32 on a CPU (Lite is designed for it: ReLU6, no
squeeze-excite). Its vectors are not the float ones, so an int8 backbone is a backbone of its own: its own name
(`efficientnet-lite0-int8`), id and cache entries, never mixed with float vectors.

Portable by construction: onnxruntime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
multiply with VPMADDUBSW, which adds each PAIR of u8 x s8 products into a saturating int16; with plain 8-bit
weights 255 * (127 + 127) overflows it and the vectors change with the CPU (issue 25: cosine 0.92 to float on an
AVX2 EPYC, 0.995 on a VNNI one). onnxruntime's advice, 7-bit weights (`reduce_range`, |w| <= 64), cannot
overflow (255 * 128 = 32640) but loses accuracy (cosine 0.97). The package instead scales each output channel's
8-bit weights so that its two largest same-sign weights sum to at most 128 ("pair-bounded", `pair_scales`): no
pair, however a kernel pairs them, can leave int16, and a channel whose largest weight stands out keeps up to
8 bits. Depthwise convolutions keep plain 8-bit weights: their kernels widen u8 and s8 to 32 bits before
multiplying (MLAS `ConvSymDepthwiseKernelAvx2`, `MlasConvDepthwiseKernelAvx2`). So every x86 kernel (AVX2,
AVX-512, VNNI, AMX) computes the same exact int32 sums, and ARM's are exact too: vectors of one id agree on every
CPU up to float rounding. `saturating_layers` checks that on the graph's real weights; a graph failing it is
never kept. The settings were chosen on real photos (docs/bench_embed.md#portable-int8); `Quantisation.tag()`
puts them in the backbone id.

Calibration needs photos; the package's own synthetic demo photos (`catalogs.demo`, deterministic and offline)
are used, so every machine builds the same int8 model with nothing downloaded and no user data involved.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from setenc.plumbing.errors import SetencError
from setenc.photos.backbones.base import TorchSpec, short_hash
from setenc.photos.backbones.onnx import _IN, _OUT, OnnxBackbone, _session, cached_graph, export_onnx

log = logging.getLogger(__name__)
# mean cosine to float32 on the (synthetic) calibration photos below which a quantised graph is refused
MIN_COSINE = 0.95
INT16_MAX = 32767  # a VPMADDUBSW pair sum beyond +-INT16_MAX saturates (the negative side has one more: -32768)
U8_MAX = 255  # the largest u8 activation: any value 0..255 can reach a kernel, whatever the calibration
METHODS = ("minmax", "percentile", "entropy")
ROLES = ("stem", "head", "pool", "depthwise")  # layers `keep_float` can keep in float32


@dataclass(frozen=True)
class Quantisation:
    """How a float graph becomes int8; `tag()` (in the backbone id) says it, so graphs never mix."""

    weight_bits: int = 8  # 7 = onnxruntime's `reduce_range` (|w| <= 64): no u8 x s8 pair sum can leave int16
    pair_scales: bool = True  # 8-bit weights scaled so any two same-sign ones of a channel sum to <= 128 in int8:
    # no pair sum can leave int16 either, at more precision than 7 bits where a channel's largest weight stands out
    depthwise_bits: int = 8  # depthwise convs keep 8-bit weights: their kernels pair no products in int16
    weights: str = "int8"  # "int8" (u8 x s8 kernels) or "uint8" (u8 x u8: exact everywhere, slow on AVX2)
    per_channel: bool = True  # one weight scale per output channel (else one per tensor)
    method: str = "percentile"  # activation calibration: minmax, percentile or entropy
    qdq: bool = True  # QuantizeLinear/DequantizeLinear pairs (onnxruntime's recommended format) or QOperator
    keep_float: tuple[str, ...] = ()  # layer roles left in float32, from ROLES
    photos: int = 128  # synthetic demo photos calibrated on
    demo_groups: int = 24  # demo catalogue rendered for them (seed 0) ...
    demo_px: int = 128  # ... at this photo size
    chunk: int = 16  # photos per calibration pass (bounds its memory); must divide `photos`

    def __post_init__(self):
        bits = {self.weight_bits, self.depthwise_bits}
        if bits - {7, 8} or self.weights not in ("int8", "uint8") or self.method not in METHODS:
            raise SetencError(f"unsupported quantisation {self}")
        if self.pair_scales and (self.weight_bits != 8 or self.weights != "int8"):
            raise SetencError("pair_scales bound 8-bit int8 weights; 7-bit or uint8 ones cannot saturate anyway")
        if self.depthwise_bits < self.weight_bits:
            raise SetencError("depthwise weights need no fewer bits than the others (their kernels cannot saturate)")
        if self.photos % self.chunk:
            raise SetencError(f"chunk={self.chunk} must divide photos={self.photos}")
        if set(self.keep_float) - set(ROLES):
            raise SetencError(f"keep_float must be among {ROLES}, got {self.keep_float}")

    def tag(self) -> str:
        """e.g. `qdq-u8s8p-pc-percentile-dw8`: format, activation x weight types and bits (`p`: pair-bounded
        scales), per-channel or per-tensor scales, calibration, layers kept in float, 8-bit depthwise."""
        w = f"{'s' if self.weights == 'int8' else 'u'}{self.weight_bits}{'p' if self.pair_scales else ''}"
        bounded = self.weight_bits == 7 or self.pair_scales  # and depthwise weights not: say so
        keep = "".join(f"-f{r}" for r in self.keep_float) + ("-dw8" if bounded and self.depthwise_bits == 8 else "")
        return f"{'qdq' if self.qdq else 'qop'}-u8{w}-{'pc' if self.per_channel else 'pt'}-{self.method}{keep}"


# the package's settings: chosen on real photos by cosine to float32 and speed (docs/bench_embed.md#portable-int8)
QUANTISATION = Quantisation()


@dataclass
class Int8Spec(TorchSpec):
    """A torch backbone to be quantised: `float_spec` is the one it quantises (its ONNX export is the input)."""

    float_spec: TorchSpec | None = None
    quantisation: Quantisation = QUANTISATION


def int8_spec(spec: TorchSpec, quantisation: Quantisation | None = None) -> Int8Spec:
    """The int8 twin of a torch backbone spec: name `<name>-int8`, an id naming the float weights, how they were
    quantised and the onnxruntime version (another version may quantise differently)."""
    import onnxruntime as ort

    q = quantisation or QUANTISATION
    key = short_hash(asdict(q), ort.__version__)
    return Int8Spec(f"{spec.name}-int8", f"{spec.id}:int8-{q.tag()}-{key}", spec.transform, spec.build,
                    float_spec=spec, quantisation=q)


def cpu_isa(cpuinfo: str | None = None) -> str:
    """The CPU's int8-relevant vector extensions, e.g. `x86_64: AVX2, AVX-512, AVX-512 VNNI`, from the flags of
    /proc/cpuinfo (or the text given): u8 x s8 kernels without VNNI add product pairs in int16."""
    if cpuinfo is None:
        cpuinfo = ""
        with contextlib.suppress(OSError):
            cpuinfo = Path("/proc/cpuinfo").read_text()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    names = [("avx2", "AVX2"), ("avx512bw", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("amx_int8", "AMX-INT8"), ("asimddp", "ARM dot product")]
    found = [label for flag, label in names if flag in flags]
    return f"{platform.machine()}: {', '.join(found) or 'none of AVX2 / AVX-512 / VNNI'}"


def _weight_matrices(model) -> list[tuple[str, np.ndarray]]:
    """(node name, (out channels, products summed) int8 matrix) of every quantised Conv / MatMul / Gemm whose
    kernels pair products in int16: non-depthwise convolutions and matrix products, QDQ or QOperator."""
    from onnx import numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    dq = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
    weight_input = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "MatMul": 1, "MatMulInteger": 1,
                    "QLinearMatMul": 3, "Gemm": 1}
    out = []
    for node in g.node:
        if node.op_type not in weight_input or len(node.input) <= weight_input[node.op_type]:
            continue
        name = node.input[weight_input[node.op_type]]
        tensor = init.get(dq.get(name, name))
        if tensor is None:
            continue
        w = numpy_helper.to_array(tensor)
        if w.dtype != np.int8:
            continue  # float, or uint8 weights: u8 x u8 kernels widen to int16 first (exact)
        attrs = {a.name: a for a in node.attribute}
        if "Conv" in node.op_type:
            group = attrs["group"].i if "group" in attrs else 1
            if group > 1 and w.shape[1] == 1:
                continue  # depthwise: MLAS widens both sides to 32 bits (exact)
            m = w.reshape(w.shape[0], -1)
        elif node.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i:
            m = w
        else:
            m = w.reshape(-1, w.shape[-1]).T  # (K, N) -> (N, K)
        out.append((node.name or name, m))
    return out


def pair_bound(weights: np.ndarray) -> np.ndarray:
    """(rows,) largest |w0 + w1| over two same-sign weights of each row (one output channel's weights)."""
    w = weights.astype(np.float64)
    top = np.sort(np.clip(w, 0, None), axis=1)[:, -2:].sum(1)  # two largest positive weights
    bottom = np.sort(np.clip(-w, 0, None), axis=1)[:, -2:].sum(1)  # two most negative
    return np.maximum(top, bottom)


def worst_pair_sum(weights: np.ndarray) -> int:
    """Largest |a0 w0 + a1 w1| over u8 activations a and any two int8 weights of one output channel (a row):
    the int16 pair sum VPMADDUBSW forms, whichever two products a kernel pairs."""
    return int(U8_MAX * pair_bound(weights).max(initial=0))


def saturating_layers(model) -> list[str]:
    """Layers of a quantised ONNX model (path or ModelProto) whose int8 weights can saturate an int16 pair sum
    of u8 x s8 products: they would give other vectors on an x86 CPU without VNNI. Empty = portable."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return [name for name, m in _weight_matrices(model) if worst_pair_sum(m) > INT16_MAX]


def _calibration_pixels(spec: TorchSpec, q: Quantisation) -> np.ndarray:
    """(N, 3, S, S) float32: the first `q.photos` demo photos, through the backbone's preprocessing."""
    from setenc.catalogs.demo import make_demo_catalog
    from setenc.catalogs.manifest import load_catalog
    from setenc.photos.decode import load_image

    manifest = make_demo_catalog(seed=0, n_groups=q.demo_groups, size=q.demo_px)
    paths = sorted(load_catalog(manifest).image_paths)[: q.photos]
    return torch.stack([spec.transform(load_image(p)) for p in paths]).numpy()


def _depthwise(node) -> bool:
    return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)


def _float_nodes(model, roles: tuple[str, ...]) -> list[str]:
    """Names of the nodes playing `roles` (first conv, last conv, final pooling, depthwise convs)."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    names = []
    if "stem" in roles and convs:
        names.append(convs[0].name)
    if "head" in roles and convs:
        names.append(convs[-1].name)
    if "pool" in roles:
        names += [n.name for n in model.graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    if "depthwise" in roles:
        names += [n.name for n in convs if _depthwise(n)]
    return names


def _overrides(model, q: Quantisation) -> dict:
    """onnxruntime `TensorQuantOverrides`: 8-bit depthwise weights where `q.depthwise_bits` asks for them;
    where `q.pair_scales` does, the other conv weights' range (symmetric, so scale = range / 127) is their
    `pair_bound`, so two same-sign int8 weights of a channel sum to at most 127 + 1 (rounding)."""
    from onnx import numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    axis = {"axis": 0} if q.per_channel else {}
    out = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in init:
            continue
        if _depthwise(node):
            if q.depthwise_bits > q.weight_bits:
                out[node.input[1]] = [{"reduce_range": False, **axis}]
        elif q.pair_scales:
            w = numpy_helper.to_array(init[node.input[1]])
            bound = pair_bound(w.reshape(len(w) if q.per_channel else 1, -1))
            out[node.input[1]] = [{"rmin": -float(r), "rmax": float(r), **axis} for r in np.where(bound > 0, bound, 1)]
    return out


def edge_histogram(a: np.ndarray, edges: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """`np.histogram(a, bins=edges)[0]`, the same counts, without numpy's sort of every 65,536-value block.

    Why: onnxruntime's percentile calibrator merges each later batch into the first batch's (near-uniform) bins with
    `np.histogram(data, bins=edge_array)`, which sorts: 121 of the pair's 174 s of quantisation (one loaded core).
    Here a value's bin is computed from the mean bin width, then moved to the bin whose edges hold it by the same
    comparisons numpy makes (`edges[i] <= x < edges[i + 1]`, the last bin closed), so the counts are identical."""
    n = len(edges) - 1
    if n < 1 or not np.all(edges[1:] > edges[:-1]):
        return np.histogram(a, bins=edges)[0]
    first, last = edges[0], edges[-1]
    scale = np.float32(n / (float(last) - float(first)))
    a, counts = a.ravel(), np.zeros(n, np.int64)
    for start in range(0, len(a), block):  # a block at a time: stays in cache
        x = a[start : start + block]
        x = x[(x >= first) & (x <= last)]  # NaN and values outside the edges are not counted
        i = np.clip(((x - first) * scale).astype(np.intp), 0, n - 1)
        while True:
            low, high = x < edges[i], (x >= edges[i + 1]) & (i < n - 1)
            if not (low.any() or high.any()):
                break
            i -= low
            i += high
        counts += np.bincount(i, minlength=n)
    return counts


class _NumpyEdgeHistograms:
    """numpy as onnxruntime's calibration module sees it while `_edge_histograms` is on: `histogram` with an edge
    array goes through `edge_histogram`; everything else is numpy's own."""

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def histogram(a, bins=10, **kw):
        if isinstance(bins, np.ndarray) and not kw:
            return edge_histogram(a, bins), bins
        return np.histogram(a, bins=bins, **kw)


@contextlib.contextmanager
def _edge_histograms():
    """onnxruntime's calibrator with `edge_histogram` (same ranges, hence the same graph: tested) for one build."""
    from onnxruntime.quantization import calibrate

    saved, calibrate.np = calibrate.np, _NumpyEdgeHistograms()
    try:
        yield
    finally:
        calibrate.np = saved


def quantise(fp32: Path, out: str, pixels: np.ndarray, q: Quantisation) -> None:
    """Statically quantise the float graph `fp32` into `out` with settings `q`, calibrated on `pixels`."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Batches(CalibrationDataReader):
        """Photos [start, end) in one batch: onnxruntime keeps every activation of a pass in memory (~60 MB a
        224-px photo for Lite0), so it calibrates `q.chunk` photos at a time and merges the ranges."""

        def __init__(self):
            self.batches = iter(())

        def __len__(self):
            return len(pixels)

        def set_range(self, start_index: int, end_index: int):
            self.batches = iter([{_IN: pixels[start_index:end_index]}])

        def get_next(self):
            return next(self.batches, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    pre = out + ".pre.onnx"
    try:  # onnxruntime's calibrator prints its progress: keep the user's stdout clean
        with contextlib.redirect_stdout(io.StringIO()), _edge_histograms():
            quant_pre_process(str(fp32), pre)  # shape inference + graph clean-up, as onnxruntime recommends
            model = onnx.load(pre)
            quantize_static(pre, out, Batches(), quant_format=QuantFormat.QDQ if q.qdq else QuantFormat.QOperator,
                            activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8 if q.weights == "int8" else QuantType.QUInt8,
                            per_channel=q.per_channel, reduce_range=q.weight_bits == 7,
                            nodes_to_exclude=_float_nodes(model, q.keep_float), calibrate_method=methods[q.method],
                            extra_options={"TensorQuantOverrides": _overrides(model, q),
                                           "CalibStridedMinMax": q.chunk})
    finally:
        if os.path.exists(pre):
            os.remove(pre)


def agreement(fp32: Path, int8: str | Path, pixels: np.ndarray) -> np.ndarray:
    """(N,) cosine between the float and int8 graphs' vectors of the same photos."""
    a, b = (_session(Path(p), "cpu").run([_OUT], {_IN: pixels})[0] for p in (fp32, int8))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    return (a * b).sum(1)


def quantised_onnx(spec: Int8Spec) -> Path:
    """The cached int8 ONNX file of `spec`, quantised (and checked) on first use."""

    def make(tmp: str) -> None:
        fp32 = export_onnx(spec.float_spec)
        q = spec.quantisation
        log.info("%s: quantising to int8 once (%s), calibrated on %d synthetic demo photos (about a minute)",
                 spec.name, q.tag(), q.photos)
        pixels = _calibration_pixels(spec, q)
        quantise(fp32, tmp, pixels, q)
        risky = saturating_layers(tmp)
        if risky:  # settings error, not a CPU one: such a graph's vectors would depend on the CPU
            raise SetencError(f"{spec.name}: quantisation {q.tag()} lets {len(risky)} layers (first: {risky[0]}) "
                              "saturate int16 pair sums on x86 CPUs without VNNI; use 7-bit or uint8 weights")
        cosine = float(agreement(fp32, tmp, pixels).mean())
        if cosine < MIN_COSINE:
            raise SetencError(f"{spec.name}: its int8 vectors are too far from float32 on this CPU ({cpu_isa()}): "
                              f"mean cosine {cosine:.3f} < {MIN_COSINE}; use {spec.float_spec.name} instead")

    return cached_graph(spec, make)


def int8_runtime(spec: Int8Spec, device: str | torch.device = "cpu") -> OnnxBackbone:
    """Run an int8 spec with onnxruntime on the CPU (int8 kernels are the CPU's; a GPU runs float backbones)."""
    if torch.device(device).type != "cpu":
        raise SetencError(f"{spec.name} runs on the CPU only; on a GPU use {spec.float_spec.name}")
    backbone = OnnxBackbone(spec.name, spec.id, quantised_onnx(spec), spec.transform, _IN, _OUT, "none", device)
    backbone.cpu_only = True
    return backbone
