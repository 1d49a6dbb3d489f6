"""Portable int8: no quantised graph may saturate the int16 pair sums of x86 CPUs without VNNI, on ANY CPU.

The saturation is a property of the graph's int8 weights, not of the CPU running the test, so these tests fail
everywhere for a quantisation that would give other vectors on some CPU (issue 25).
"""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from setenc.photos.backbones import int8
from setenc.photos.backbones.base import TorchSpec
from setenc.photos.decode import ImageTransform
from setenc.plumbing.errors import SetencError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Graphs go to a throw-away cache; calibration is a small demo render (calibration enough here)."""
    monkeypatch.setenv("SETENC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SETENC_GRAPHS", raising=False)  # graphs of its own too: these tests build and refuse them
    monkeypatch.setattr(int8, "QUANTISATION", _small())


def _small(**kw) -> "int8.Quantisation":
    """The package's settings (or `kw`'s changes to them) on a small demo render: calibration enough here."""
    return dataclasses.replace(int8.QUANTISATION, demo_groups=3, photos=16, chunk=8, **kw)


def vpmaddubsw_matvec(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Naive reference of the x86 u8 x s8 kernels without VNNI: (K,) u8 activations x (N, K) s8 weights, products
    added in PAIRS into a saturating int16 (VPMADDUBSW), the pair sums then added exactly in int32."""
    prod = a.astype(np.int32)[None, :] * w.astype(np.int32)  # (N, K)
    pairs = [np.clip(prod[:, k] + (prod[:, k + 1] if k + 1 < prod.shape[1] else 0), -32768, 32767)
             for k in range(0, prod.shape[1], 2)]
    return np.sum(pairs, axis=0)


class _SaturatingNet(torch.nn.Module):
    """A conv whose every output channel has two large weights of one sign: at plain 8 bits they quantise to 127
    and 76, and 255 * (127 + 76) leaves int16."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 8, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.mul_(0.1)
            self.conv.weight[:, 0, 0, 0] = 0.5
            self.conv.weight[:, 1, 0, 0] = 0.3

    def forward(self, x):
        x = torch.cat([x, x[:, :1]], dim=1)  # (B, 4, S, S): 4 input channels, as MLAS's int8 conv kernels take
        return torch.nn.functional.relu6(self.conv(x)).mean(dim=(2, 3)) + 0.05


def _spec() -> TorchSpec:
    return TorchSpec("sat", "sat:abc", ImageTransform(32, (0.5,) * 3, (0.5,) * 3), _SaturatingNet)


def test_worst_pair_sum_matches_the_int16_emulation():
    """The static bound equals the worst the emulated kernel sees over u8 activations, for any pairing."""
    rng = np.random.default_rng(0)
    for hi in (64, 127):
        w = rng.integers(-hi, hi + 1, size=(5, 6)).astype(np.int8)  # (N, K)
        worst = 0
        for i in range(6):
            for j in range(i + 1, 6):  # every pair a kernel could form, both activations at 0 or 255
                for a in ((255, 255), (255, 0), (0, 255)):
                    x = np.zeros(6, np.int64)
                    x[[i, j]] = a
                    worst = max(worst, np.abs(x[None] * w.astype(np.int64)).max(),
                                np.abs((x[None] * w.astype(np.int64)).sum(1)).max())
        assert int8.worst_pair_sum(w) == worst
    w7 = rng.integers(-64, 65, size=(16, 32)).astype(np.int8)  # 7-bit weights: the emulation is exact
    for a in rng.integers(0, 256, size=(20, 32)):
        assert np.array_equal(vpmaddubsw_matvec(a, w7), w7.astype(np.int64) @ a)
    w8 = np.full((1, 2), 127, np.int8)  # 8-bit: saturates
    assert vpmaddubsw_matvec(np.array([255, 255]), w8)[0] == 32767 != 255 * 254
    assert int8.worst_pair_sum(w8) == 255 * 254 > int8.INT16_MAX >= int8.worst_pair_sum(w7)


def test_saturating_quantisation_is_rejected_and_the_package_one_is_portable(tmp_path):
    """Plain 8-bit u8 x s8 weights: the check names the layer and the build refuses them in one line; the
    package's settings leave no layer that can saturate, yet keep more than 7 bits (pair-bounded scales: the
    largest weight of a channel above 64); 7-bit (reduce_range) and uint8 weights cannot saturate either."""
    from onnx import numpy_helper

    from setenc.photos.backbones.onnx import export_onnx

    spec = _spec()
    fp32 = export_onnx(spec)
    pixels = int8._calibration_pixels(spec, int8.QUANTISATION)
    eight = dict(weight_bits=8, depthwise_bits=8, pair_scales=False)
    for q, bad in ((_small(**eight), True), (int8.QUANTISATION, False), (_small(weights="uint8", **eight), False),
                   (_small(weight_bits=7, pair_scales=False), False)):
        out = str(tmp_path / f"{q.tag()}.onnx")
        int8.quantise(fp32, out, pixels, q)
        assert bool(int8.saturating_layers(out)) == bad, q
        if q == int8.QUANTISATION and q.pair_scales:
            (conv,) = [w for w in map(numpy_helper.to_array, onnx.load(out).graph.initializer) if w.ndim == 4]
            assert int8.worst_pair_sum(conv.reshape(len(conv), -1)) <= int8.INT16_MAX and np.abs(conv).max() > 64
    with pytest.raises(SetencError, match="saturate int16 pair sums") as e:
        int8.int8_runtime(int8.int8_spec(spec, _small(**eight)))
    assert "\n" not in str(e.value)


def test_package_quantisation_bounds_every_pair():
    """The shipped settings themselves: u8 x s8 weights are 7-bit or pair-bounded, and the id says which."""
    q = int8.QUANTISATION
    assert q.weights == "uint8" or q.weight_bits == 7 or q.pair_scales
    assert int8.int8_spec(_spec(), q).id.startswith(f"sat:abc:int8-{q.tag()}-")
    tags = {int8.Quantisation(weight_bits=8, pair_scales=False).tag(),  # distinct: graphs never share a cache
            int8.Quantisation(weight_bits=7, pair_scales=False, depthwise_bits=7).tag(), int8.Quantisation().tag()}
    assert tags == {"qdq-u8s8-pc-percentile", "qdq-u8s7-pc-percentile", "qdq-u8s8p-pc-percentile-dw8"}


def test_a_graph_far_from_float_is_one_line_naming_the_cpu(monkeypatch):
    monkeypatch.setattr(int8, "MIN_COSINE", 1.01)
    with pytest.raises(SetencError, match=r"on this CPU \(.*\).*use sat instead") as e:
        int8.int8_runtime(int8.int8_spec(_spec()))
    assert "\n" not in str(e.value)


def test_cpu_isa_reads_the_flags():
    avx2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    vnni = "flags\t\t: avx2 avx512f avx512bw avx512_vnni\n"
    assert int8.cpu_isa(avx2).endswith(": AVX2") and "VNNI" not in int8.cpu_isa(avx2)
    assert int8.cpu_isa(vnni).endswith(": AVX2, AVX-512, AVX-512 VNNI")
    assert int8.cpu_isa("").endswith("none of AVX2 / AVX-512 / VNNI")
    assert int8.cpu_isa()  # this machine's, whatever it is


def test_int8_pair_is_registered_as_the_pairs_twin():
    from setenc.photos.backbones import BACKBONES, list_backbones

    assert "efficientnet-lite0+lite2-int8" in list_backbones()
    twin, pair = BACKBONES.get("efficientnet-lite0+lite2-int8")(), BACKBONES.get("efficientnet-lite0+lite2")()
    assert isinstance(twin, int8.Int8Spec) and twin.float_spec.id == pair.id
    assert twin.id.startswith(f"{pair.id}:int8-") and twin.name == "efficientnet-lite0+lite2-int8"


def test_edge_histogram_counts_as_numpy_does():
    """onnxruntime's calibrator extends its first batch's bins with float32 `np.arange` edges; the counts must be
    numpy's exactly (values on edges, the closed last bin, NaN, values outside), also against a naive count."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(200_003).astype(np.float32)) * 3
    _, edges = np.histogram(x[:1000], bins=64)
    edges = edges.astype(np.float32)
    width = edges[1] - edges[0]
    edges = np.hstack((edges, np.arange(edges[-1] + width, x.max() + width, width))).astype(np.float32)
    x[:50] = edges[rng.integers(0, len(edges), 50)]  # exactly on edges, the last one included
    x[50:53] = [np.nan, -1.0, edges[-1] * 2]
    got = int8.edge_histogram(x, edges, block=4096)
    assert np.array_equal(got, np.histogram(x, bins=edges)[0])
    naive = [np.sum((x >= lo) & ((x < hi) if i < len(edges) - 2 else (x <= hi)))
             for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    assert got.tolist() == naive and 0 < got.sum() == np.sum((x >= edges[0]) & (x <= edges[-1])) < len(x)


def test_fast_calibration_builds_the_same_graph(tmp_path, monkeypatch):
    """Percentile calibration through `edge_histogram` writes byte for byte the graph numpy's histogram writes,
    so an int8 backbone's id (and cache) still names one graph."""
    import contextlib

    from setenc.photos.backbones.onnx import export_onnx

    spec = _spec()
    fp32 = export_onnx(spec)
    pixels = int8._calibration_pixels(spec, int8.QUANTISATION)
    int8.quantise(fp32, str(tmp_path / "fast.onnx"), pixels, int8.QUANTISATION)
    monkeypatch.setattr(int8, "_edge_histograms", contextlib.nullcontext)
    int8.quantise(fp32, str(tmp_path / "numpy.onnx"), pixels, int8.QUANTISATION)
    assert (tmp_path / "fast.onnx").read_bytes() == (tmp_path / "numpy.onnx").read_bytes()
