"""Backbones: real from_pretrained / ONNX loading paths on tiny random models, checked against direct calls."""

import hashlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import setenc.photos.backbones as backbones
from setenc.photos.backbones import OnnxBackbone, TorchBackbone, TorchSpec, create_backbone, list_backbones
from setenc.photos.decode import ImageTransform
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.plumbing.paths import graphs_dir


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One ONNX export cache for these tests, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SETENC_CACHE", str(tmp_path_factory.mktemp("setenc-cache")))
        yield


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(40, 24), (24, 40), (33, 33), (60, 20)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


def _unit(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=-1), torch.ones(len(x)), atol=1e-5)


def _tiny_clip(folder, seed: int = 0):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=16,
    )
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def test_registry():
    assert set(list_backbones()) >= {"efficientnet-lite0", "efficientnet-lite2", "clip", "hf", "onnx"}
    with pytest.raises(SetencError, match="efficientnet-lite0"):
        create_backbone("resnet-9000")


def test_clip_loads_through_from_pretrained(clip_dir):
    from transformers import CLIPVisionModelWithProjection

    bb = create_backbone("clip", runtime="torch", model=clip_dir)
    assert isinstance(bb, TorchBackbone) and bb.dim == 16
    assert bb.transform.size == 32 and bb.transform.mean == pytest.approx((0.4, 0.5, 0.6))
    assert bb.id.startswith(f"clip:{clip_dir.name}:")
    imgs = _images()
    y = bb.encode_images(imgs)
    assert y.shape == (3, 16) and _unit(y) and not y.is_inference()
    ref_model = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()  # the naive path
    with torch.no_grad():
        ref = F.normalize(ref_model(pixel_values=torch.stack([bb.transform(i) for i in imgs])).image_embeds, dim=-1)
    assert torch.allclose(y, ref, atol=1e-6)
    again = create_backbone("clip", runtime="torch", model=clip_dir)
    assert again.id == bb.id and torch.equal(again.encode_images(imgs), y)


def test_clip_id_follows_the_weights(clip_dir, tmp_path):
    other = _tiny_clip(tmp_path / clip_dir.name, seed=1)
    ids = {create_backbone("clip", runtime="torch", model=m).id for m in (clip_dir, other)}
    assert len(ids) == 2  # same folder name, different weights


def test_clip_onnx_runtime_equals_torch(clip_dir):
    t = create_backbone("clip", runtime="torch", model=clip_dir)
    o = create_backbone("clip", runtime="onnx", model=clip_dir)
    assert isinstance(o, OnnxBackbone) and o.id == t.id and o.dim == 16
    assert torch.allclose(o.encode_images(_images()), t.encode_images(_images()), atol=1e-5)


def test_full_clip_folder_through_clip_and_hf(tmp_path):
    """A folder of a whole CLIPModel (both towers, projection_dim only at the top level) works for both."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, vocab_size=99,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    model.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = F.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1)
    for name in ("clip", "hf"):
        bb = create_backbone(name, runtime="torch", model=tmp_path)
        assert bb.dim == 24 and torch.allclose(bb.encode(x), ref, atol=1e-6)


def test_uncached_hub_id_says_pass_a_folder():
    with pytest.raises(SetencError, match="--backbone_kwargs.model DIR"):
        create_backbone("clip", model="nobody-here/not-a-cached-model")


def _tiny_vit(folder, pooler: bool):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                    image_size=32, patch_size=8)
    model = ViTModel(cfg, add_pooling_layer=pooler).eval()
    model.save_pretrained(folder)
    proc = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    proc.save_pretrained(folder)
    return model


@pytest.mark.parametrize("pooler", [True, False])
def test_hf_pooled_output_else_cls(tmp_path, pooler):
    model = _tiny_vit(tmp_path, pooler)
    bb = create_backbone("hf", runtime="torch", model=tmp_path)
    imgs = _images()
    x = torch.stack([bb.transform(i) for i in imgs])
    with torch.no_grad():
        out = model(pixel_values=x)
    ref = out.pooler_output if pooler else out.last_hidden_state[:, 0]  # no trained pooler: CLS, not a random one
    y = bb.encode_images(imgs)
    assert bb.dim == 32 and bb.id.startswith(f"hf:{tmp_path.name}:")
    assert torch.allclose(y, F.normalize(ref, dim=-1), atol=1e-5)
    with pytest.raises(SetencError, match="not CLIP"):
        create_backbone("clip", model=tmp_path)


class _TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x)) + 0.1  # (B, 8, h, w)


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    net = _TinyConv().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, and quick
        torch.onnx.export(net, (torch.randn(2, 3, 16, 16),), str(path), input_names=["img"], output_names=["fmap"],
                          dynamic_axes={"img": {0: "b"}, "fmap": {0: "b"}}, dynamo=False)
    return net, path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_onnx_file_backbone(conv_onnx):
    net, path, sha = conv_onnx
    kw = dict(path=path, sha256=sha, pooling="spatial_mean", size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    bb = create_backbone("onnx", **kw)
    imgs = _images()
    x = torch.stack([bb.transform(i) for i in imgs])
    with torch.no_grad():
        ref = F.normalize(net(x).mean(dim=(2, 3)), dim=-1)
    assert bb.dim == 8 and torch.allclose(bb.encode_images(imgs), ref, atol=1e-5)
    assert bb.id.startswith("onnx:tiny:") and create_backbone("onnx", **kw).id == bb.id
    assert create_backbone("onnx", **{**kw, "mean": (0.4,) * 3}).id != bb.id  # preprocessing is in the id
    with pytest.raises(CheckpointError, match="pinned"):
        create_backbone("onnx", **{**kw, "sha256": "0" * 64})
    with pytest.raises(SetencError, match="fmap"):
        create_backbone("onnx", **{**kw, "output_name": "logits"})
    with pytest.raises(SetencError):
        create_backbone("onnx", **{**kw, "pooling": "max"})
    with pytest.raises(SetencError, match="pooling='token0'"):  # a (B, 8, h, w) output has no token axis to pool
        create_backbone("onnx", **{**kw, "pooling": "token0"})


def test_poolings_against_loops():
    from setenc.photos.backbones.onnx import _pool

    y = torch.randn(2, 5, 4)  # (B, T, D)
    assert torch.equal(_pool(y, "token0"), torch.stack([y[b, 0] for b in range(2)]))
    loop = torch.stack([sum(y[b, t] for t in range(5)) / 5 for b in range(2)])
    assert torch.allclose(_pool(y, "token_mean"), loop)
    fmap = torch.randn(2, 4, 3, 3)  # (B, D, H, W)
    loop = torch.tensor([[fmap[b, d].sum().item() / 9 for d in range(4)] for b in range(2)])
    assert torch.allclose(_pool(fmap, "spatial_mean"), loop, atol=1e-6)


def test_auto_falls_back_to_torch_when_export_fails(clip_dir, monkeypatch):
    def broken(spec, device="cpu"):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(backbones, "onnx_runtime", broken)
    with pytest.warns(UserWarning, match="exporter exploded"):
        bb = create_backbone("clip", runtime="auto", model=clip_dir)
    assert isinstance(bb, TorchBackbone)
    with pytest.raises(RuntimeError):
        create_backbone("clip", runtime="onnx", model=clip_dir)


@pytest.fixture(scope="module")
def lite0_pair():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(create_backbone("efficientnet-lite0", runtime=r) for r in ("torch", "onnx"))


def test_efficientnet_lite0_torch_equals_onnx(lite0_pair):
    from setenc.photos.backbones.efficientnet import weights_path

    t, o = lite0_pair
    sha = hashlib.sha256(weights_path("efficientnet-lite0").read_bytes()).hexdigest()
    assert t.id == o.id == f"efficientnet-lite0:{sha[:12]}"
    assert t.transform.size == 224 and t.transform.mean == (0.5, 0.5, 0.5)
    imgs = _images(4)
    yt, yo = t.encode_images(imgs), o.encode_images(imgs)
    assert yt.shape == (4, 1280) and _unit(yt) and _unit(yo)
    assert torch.allclose(yt, yo, atol=1e-4)
    assert len({tuple(v) for v in yt.round(decimals=3).tolist()}) == 4  # different photos, different vectors
    with pytest.raises(ValueError, match="224"):
        t.encode(torch.zeros(1, 3, 100, 100))


def test_onnx_export_is_cached_and_atomic(lite0_pair):
    from setenc.photos.backbones.onnx import export_onnx
    from setenc.photos.backbones.efficientnet import efficientnet_lite

    path = lite0_pair[1].path
    mtime = path.stat().st_mtime_ns
    assert export_onnx(efficientnet_lite("efficientnet-lite0")) == path and path.stat().st_mtime_ns == mtime
    assert path.name == f"efficientnet-lite0-{lite0_pair[0].id.split(':')[1]}-224px.onnx"
    assert path.parent == graphs_dir() and not list(path.parent.glob("*.tmp"))


def test_built_graphs_go_to_setenc_graphs_else_the_cache(tmp_path, monkeypatch):
    """`$SETENC_GRAPHS` shares built graphs between caches; without it they sit in the cache's `onnx/`."""
    monkeypatch.setenv("SETENC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SETENC_GRAPHS", str(tmp_path / "graphs"))
    assert graphs_dir() == tmp_path / "graphs" and graphs_dir().is_dir()
    monkeypatch.delenv("SETENC_GRAPHS")
    assert graphs_dir() == tmp_path / "cache" / "onnx" and graphs_dir().is_dir()


def test_efficientnet_size_runs_the_same_weights_at_another_resolution(lite0_pair):
    """`size=` rebuilds the padding for the new input, names its own id (own cache), and sees the same photos."""
    t224 = lite0_pair[0]
    t256 = create_backbone("efficientnet-lite0", runtime="torch", size=256)
    assert t256.id == t224.id + "@256" and t256.transform.size == 256 and t256.dim == 1280
    assert create_backbone("efficientnet-lite0", runtime="torch", size=224).id == t224.id  # native: same cache
    imgs = _images(4)
    a, b = t224.encode_images(imgs), t256.encode_images(imgs)
    cos = a @ b.T  # (4, 4): each photo is nearest its own other-resolution vector, which differs from it
    assert _unit(b) and torch.equal(cos.argmax(1), torch.arange(4)) and cos.diagonal().max() < 0.9999
    with pytest.raises(SetencError, match="at least 32"):
        create_backbone("efficientnet-lite0", runtime="torch", size=16)
    with pytest.raises(SetencError, match="no option"):
        create_backbone("efficientnet-lite0", runtime="torch", resolution=256)


def test_efficientnet_gem_pool_is_the_generalised_mean_of_the_feature_map(lite0_pair):
    from setenc.photos.backbones.efficientnet import GEM_P, efficientnet_lite

    spec = efficientnet_lite("efficientnet-lite0", pool="gem")
    assert spec.id == lite0_pair[0].id + ":gem"
    module = spec.build().eval()
    x = torch.stack([spec.transform(im) for im in _images(3)])
    with torch.no_grad():
        fmap = module.net.extract_features(x)  # (3, 1280, 7, 7)
        naive = torch.stack([(f.clamp(min=1e-6) ** GEM_P).flatten(1).mean(1) ** (1 / GEM_P) for f in fmap])
        assert torch.allclose(module(x), naive, atol=1e-5) and not torch.allclose(naive, fmap.mean(dim=(2, 3)))
    with pytest.raises(SetencError, match="pool must be one of"):
        efficientnet_lite("efficientnet-lite0", pool="max")


def test_concatenated_parts_each_keep_their_cosine():
    """Unit vectors side by side, scaled by 1/sqrt(k) by `encode`: the pair's cosine is the mean of the parts'."""
    from setenc.photos.backbones.concat import concatenated

    def part(seed: int) -> TorchSpec:
        def build():
            torch.manual_seed(seed)
            return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        return TorchSpec(f"p{seed}", f"p{seed}:w", ImageTransform(16), build)

    pair = TorchBackbone(concatenated("pair", [part(0), part(1)]))
    a, b = TorchBackbone(part(0)), TorchBackbone(part(1))
    assert (pair.id, pair.dim, pair.transform) == ("p0:w+p1:w", 16, a.transform)
    x = torch.randn(5, 3, 16, 16)
    z, za, zb = pair.encode(x), a.encode(x), b.encode(x)
    assert torch.allclose(z, torch.cat([za, zb], -1) / 2**0.5, atol=1e-6) and _unit(z)
    assert torch.allclose(z @ z.T, (za @ za.T + zb @ zb.T) / 2, atol=1e-5)
    big = TorchSpec("q", "q:w", ImageTransform(32), part(1).build)  # a part at another size reads a resized input
    mixed = TorchBackbone(concatenated("mixed", [part(0), big]))
    assert mixed.id == "p0:w+q:w@32" and mixed.transform.size == 32
    x32 = torch.randn(2, 3, 32, 32)
    small = F.interpolate(x32, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(mixed.encode(x32), torch.cat([a.encode(small), TorchBackbone(big).encode(x32)], -1) / 2**0.5,
                          atol=1e-6)
    with pytest.raises(SetencError, match="same normalisation"):
        concatenated("bad", [part(0), TorchSpec("q", "q:w", ImageTransform(16, std=(0.25,) * 3), part(1).build)])
    with pytest.raises(SetencError, match="at least 2"):
        concatenated("one", [part(0)])


@pytest.mark.slow
def test_efficientnet_lite0_lite2_pair_is_both_nets_on_one_input():
    """The registered pair: Lite2 at 260 px next to Lite0 on that input resized to its 224, torch = ONNX."""
    pair = create_backbone("efficientnet-lite0+lite2", runtime="torch")
    lite0 = create_backbone("efficientnet-lite0", runtime="torch")
    lite2 = create_backbone("efficientnet-lite2", runtime="torch")
    assert pair.id == f"{lite0.id}+{lite2.id}@260" and pair.dim == 2560 and pair.transform == lite2.transform
    imgs = _images(3)
    z = pair.encode_images(imgs)
    x = torch.stack([lite2.transform(im) for im in imgs])
    x224 = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    assert torch.allclose(z, torch.cat([lite0.encode(x224), lite2.encode(x)], -1) / 2**0.5, atol=1e-5)
    same = create_backbone("efficientnet-lite0+lite2", runtime="torch", size=288)  # size=: both nets at 288 px
    assert same.id == f"{lite0.id}@288+{lite2.id}@288" and same.transform.size == 288
    assert torch.allclose(create_backbone("efficientnet-lite0+lite2", runtime="onnx").encode_images(imgs), z, atol=1e-4)


@pytest.mark.slow
def test_efficientnet_lite2_torch_equals_onnx():
    t = create_backbone("efficientnet-lite2", runtime="torch")
    o = create_backbone("efficientnet-lite2", runtime="onnx")
    assert t.transform.size == 260 and t.dim == o.dim == 1280
    assert torch.allclose(t.encode_images(_images()), o.encode_images(_images()), atol=1e-4)


class _TinyNet(torch.nn.Module):
    """(B, 3, 32, 32) -> (B, 16): a conv net small enough to quantise in seconds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)

    def forward(self, x):
        return torch.nn.functional.relu6(self.conv(x)).mean(dim=(2, 3)) + 0.05


def test_int8_twin_is_its_own_backbone(monkeypatch):
    """Quantised once into the cache, vectors near the float net's, an id of its own, CPU + onnxruntime only.

    True on any CPU: the graph's weights cannot saturate an int16 pair sum (x86 without VNNI), so every CPU
    computes the same integer sums (tests/test_int8.py guards that for every quantisation)."""
    import dataclasses

    from setenc.photos.backbones import int8
    from setenc.photos.backbones.base import TorchSpec
    from setenc.photos.decode import ImageTransform

    # a small demo render is calibration enough here
    small = dataclasses.replace(int8.QUANTISATION, demo_groups=3, photos=16, chunk=8)
    monkeypatch.setattr(int8, "QUANTISATION", small)
    spec = TorchSpec("tiny", "tiny:abc", ImageTransform(32, (0.5,) * 3, (0.5,) * 3), _TinyNet)
    q = int8.int8_spec(spec)
    bb = int8.int8_runtime(q)
    assert bb.name == "tiny-int8" and bb.id.startswith(f"tiny:abc:int8-{int8.QUANTISATION.tag()}-")
    assert int8.saturating_layers(bb.path) == [] and bb.cpu_only and not TorchBackbone(spec).cpu_only
    imgs = _images(4)
    ref, got = TorchBackbone(spec).encode_images(imgs), bb.encode_images(imgs)
    assert _unit(got) and (ref * got).sum(1).min() > 0.9 and not torch.equal(ref, got)
    mtime = bb.path.stat().st_mtime_ns
    assert int8.int8_runtime(q).path == bb.path and bb.path.stat().st_mtime_ns == mtime  # quantised once
    assert not list(bb.path.parent.glob("*.tmp")) and not list(bb.path.parent.glob("*.pre.onnx"))
    with pytest.raises(SetencError, match="CPU only"):
        int8.int8_runtime(q, "cuda")
    with pytest.raises(SetencError, match="runtime='onnx'"):
        create_backbone("efficientnet-lite0-int8", runtime="torch")


@pytest.mark.slow
def test_efficientnet_lite0_int8_near_float(lite0_pair):
    q = create_backbone("efficientnet-lite0-int8")
    imgs = _images(4)
    assert q.dim == 1280 and q.id.startswith(lite0_pair[1].id + ":int8-")
    assert (q.encode_images(imgs) * lite0_pair[1].encode_images(imgs)).sum(1).min() > 0.97
