"""Test-time augmentation: variants cached under their own keys, `mean` keeps set sizes, `elements` multiplies them,
and a checkpoint that records a TTA applies it to the photos it encodes (so its export and its queries agree)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from setenc.catalogs import load_catalog
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.photos import EmbeddingCache, embed_catalog, load_image, photo_sets
from setenc.photos.tta import TTA, CentreCrop, Flip, embed_views, spec_tta, variant_key, with_tta

from conftest import FakeBackbone


class SpatialBackbone(FakeBackbone):
    """Mean colour of the left and of the right half -> projection: a flip or a crop changes the vector."""

    id = "spatial:v1"

    def __init__(self):
        super().__init__()
        self.proj = torch.randn(6, self.dim, generator=torch.Generator().manual_seed(1))

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += len(batch)
        half = batch.shape[-1] // 2
        v = torch.cat([batch[..., :half].mean(dim=(2, 3)), batch[..., half:].mean(dim=(2, 3))], 1) @ self.proj
        return torch.nn.functional.normalize(v + 1e-3, dim=-1)


@pytest.fixture
def backbone() -> SpatialBackbone:
    return SpatialBackbone()


def _direct(backbone, paths, op=None) -> np.ndarray:
    images = [load_image(p) for p in paths]
    return backbone.encode_images([im if op is None else op(im) for im in images]).numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_spec_round_trip_and_one_line_errors():
    assert str(TTA.parse("flip+crop")) == "flip+crop" and TTA.parse("flip+crop").mode == "mean"
    assert str(TTA.parse("flip:elements")) == "flip:elements" and TTA.parse("flip:elements").per_photo == 2
    assert TTA.parse("none") == TTA.parse(None) == TTA() and TTA().views == 1
    two = TTA.parse("crop+crop@0.75")
    assert str(two) == "crop+crop@0.75" and two.views == 3
    assert [op.id for op in two.ops()[1:]] == ["crop0.875", "crop0.75"]
    assert two.keys("ab12") == ["ab12", "ab12:crop0.875", "ab12:crop0.75"]  # a parameter never reuses another's vectors
    for bad, why in (("flop", "unknown tta variant"), ("flip:avg", "unknown tta mode"),
                     ("flip+flip", "named twice"), ("none:elements", "takes no mode"),
                     ("crop+crop@0.875", "named twice"), ("crop@big", "must be a number"),
                     ("crop@1.5", "must be in"), ("flip@2", "takes no parameter")):
        with pytest.raises(SetencError, match=why):
            TTA.parse(bad)


def test_config_field_is_checked_before_any_work():
    from setenc.training.config import load_config

    assert load_config(None, {"tta": "flip"}).tta == "flip" and load_config().tta is None  # None: the recipe chooses
    with pytest.raises(SetencError, match="unknown tta variant"):
        load_config(None, {"tta": "mirror"})


def test_variant_keys_never_touch_or_alias_the_plain_vectors(tiny_catalog, backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    embed_catalog(cat, backbone, tmp_path / "c", progress=False, num_workers=0)
    cache = EmbeddingCache(tmp_path / "c", backbone.id, backbone.dim)
    hashes = cache.hashes(cat.image_paths)
    plain = cache.get(hashes).copy()
    r = embed_catalog(cat, backbone, tmp_path / "c", progress=False, num_workers=0, tta="flip+crop")
    assert (r.views, r.cached, r.embedded) == (3, 12, 24)  # only the variants were embedded
    keys = {row[0] for row in cache.db.execute("SELECT hash FROM vectors")}
    crop_id = CentreCrop().id
    assert crop_id == "crop0.875" and variant_key("ab12", "hflip") == "ab12:hflip"
    assert keys == {k for h in hashes for k in (h, f"{h}:hflip", f"{h}:{crop_id}")}
    np.testing.assert_array_equal(cache.get(hashes), plain)  # plain vectors untouched
    flipped = cache.get([f"{h}:hflip" for h in hashes])
    np.testing.assert_allclose(flipped, _direct(backbone, cat.image_paths, Flip()), atol=1e-6)
    np.testing.assert_allclose(cache.get([f"{h}:{crop_id}" for h in hashes]),
                               _direct(backbone, cat.image_paths, CentreCrop()), atol=1e-6)
    assert np.abs(flipped - plain).max() > 1e-2  # a variant is not the original
    again = embed_catalog(cat, backbone, tmp_path / "c", progress=False, num_workers=0, tta="flip+crop")
    assert (again.cached, again.embedded) == (36, 0)


def test_mean_keeps_set_sizes_and_equals_the_manual_average(tiny_catalog, backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    plain, _, _, _ = photo_sets(cat, backbone, tmp_path / "c", progress=False)
    sets, kept, dropped, report = photo_sets(cat, backbone, tmp_path / "c", progress=False, tta="flip+crop")
    assert [len(s) for s in sets] == [len(s) for s in plain] == [len(a.images) for a in cat] and not dropped
    for art, s, p in zip(kept, sets, plain):
        manual = _unit(p + _direct(backbone, art.images, Flip()) + _direct(backbone, art.images, CentreCrop()))
        np.testing.assert_allclose(s, manual, atol=1e-5)
    assert report.views == 3 and "x 3 views" in report.summary()


def test_elements_multiplies_set_sizes(tiny_catalog, backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    plain, _, _, _ = photo_sets(cat, backbone, tmp_path / "c", progress=False)
    sets, kept, _, _ = photo_sets(cat, backbone, tmp_path / "c", progress=False, tta="flip:elements")
    assert [len(s) for s in sets] == [2 * len(s) for s in plain]
    art, s = kept[2], sets[2]
    np.testing.assert_allclose(s[0::2], plain[2], atol=1e-6)  # photo by photo: the photo, then its flip
    np.testing.assert_allclose(s[1::2], _direct(backbone, art.images, Flip()), atol=1e-6)


def test_a_photo_that_does_not_decode_is_reported_once(tmp_path, backbone):
    from conftest import write_photos

    good = write_photos(tmp_path / "img", 2)
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    r = embed_catalog(good + [bad], backbone, tmp_path / "c", progress=False, num_workers=0, tta="flip+crop")
    assert r.embedded == 6 and [p for p, _ in r.skipped] == [str(bad)]


def test_checkpoint_records_the_tta_and_applies_it_on_encode(tmp_path, backbone):
    from conftest import write_photos

    paths = write_photos(tmp_path / "img", 5)
    images = [Image.open(p).convert("RGB") for p in paths]
    enc = SetEncoder.parameter_free(backbone)
    enc.backbone_spec = with_tta(enc.backbone_spec, "flip")
    loaded = SetEncoder.from_pretrained(enc.save(tmp_path / "tta.pt"), backbone=backbone)
    assert str(loaded.tta) == "flip" and torch.load(tmp_path / "tta.pt", weights_only=True)["backbone"]["tta"] == "flip"
    plain = SetEncoder.parameter_free(backbone)
    assert "tta" not in plain.state()["backbone"] and str(spec_tta(plain.backbone_spec)) == "none"

    both = _direct(backbone, paths) + _direct(backbone, paths, Flip())
    want = np.stack([_unit(_unit(both[:2]).mean(0)), _unit(_unit(both[2:]).mean(0))])
    got = loaded.encode([paths[:2], images[2:]])  # paths and PIL images alike
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - plain.encode([paths[:2], paths[2:]])).max() > 1e-3

    elements = SetEncoder.parameter_free(backbone)
    elements.backbone_spec = with_tta(elements.backbone_spec, "flip:elements")
    assert elements.embed_photos(paths).shape == (10, backbone.dim)
    np.testing.assert_allclose(elements.encode([paths[:2], paths[2:]]),
                               np.stack([_unit(embed_views(backbone, images[:2], "flip:elements").mean(0)),
                                         _unit(embed_views(backbone, images[2:], "flip:elements").mean(0))]),
                               atol=1e-5)


def test_export_and_search_of_a_tta_checkpoint_agree(tiny_catalog, backbone, tmp_path):
    """The export's vectors come from cached variants, a query's from `embed_photos`: the same article is found at
    cosine 1 only if both got the checkpoint's TTA."""
    from setenc.search.index import SetIndex, export_index

    cat = load_catalog(tiny_catalog)
    enc = SetEncoder.parameter_free(backbone)
    enc.backbone_spec = with_tta(enc.backbone_spec, "flip+crop:elements")
    m = export_index(enc, cat, tmp_path / "cache", tmp_path / "idx", progress=False, expansion="none")  # exact cosines
    assert m["backbone"]["tta"] == "flip+crop:elements"
    index = SetIndex.load(tmp_path / "idx", enc)
    assert len(index.photos.set(index.ids.index(cat[2].id))) == 3 * len(cat[2].images)  # re-ranking sees elements
    (top, score), *_ = index.search(list(cat[2].images), k=2)
    assert top == cat[2].id and score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(CheckpointError, match="photo variants"):  # same head, other variants: other vectors
        SetIndex.load(tmp_path / "idx", SetEncoder.parameter_free(backbone))


def test_evaluation_scores_with_the_checkpoints_tta(tiny_catalog, backbone, tmp_path):
    from setenc.evaluation.report import evaluate_catalog

    cat = load_catalog(tiny_catalog)
    flip = SetEncoder.parameter_free(backbone)
    flip.backbone_spec = with_tta(flip.backbone_spec, "flip")
    r = evaluate_catalog(cat, backbone, tmp_path / "c", {"m": flip}, ["mean"], ["group"], "all", tune=False,
                         pictures=False, progress=False)
    assert r["tta"] == "flip"
    assert len(EmbeddingCache(tmp_path / "c", backbone.id, backbone.dim)) == 24  # the photos and their flips
    rows = {row["method"]: row for row in r["rows"]}
    assert rows["m"]["map@r"] == pytest.approx(rows["mean"]["map@r"])  # both scored on the same (flip) vectors
    with pytest.raises(SetencError, match="different photo variants"):
        evaluate_catalog(cat, backbone, tmp_path / "c", {"m": flip, "p": SetEncoder.parameter_free(backbone)},
                         ["mean"], ["group"], "all", tune=False, pictures=False, progress=False)


class GridNet(torch.nn.Module):
    """A stand-in net whose last feature map is given: (B, C, h, w) of the test's choosing."""

    def __init__(self, fmap: torch.Tensor):
        super().__init__()
        self.fmap = fmap

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fmap.expand(len(x), -1, -1, -1)


@pytest.mark.parametrize("side, region", [(7, slice(1, 6)), (9, slice(1, 8)), (8, slice(1, 7))])
def test_centre_pooling_averages_the_full_map_and_its_central_region_in_one_pass(side, region):
    from setenc.photos.backbones.efficientnet import PooledFeatures

    fmap = torch.rand(1, 4, side, side, generator=torch.Generator().manual_seed(side))
    got = PooledFeatures(GridNet(fmap), centre=0.75)(torch.zeros(2, 3, 8, 8))
    full, centre = fmap.mean(dim=(2, 3)), fmap[:, :, region, region].mean(dim=(2, 3))
    want = torch.nn.functional.normalize(full, dim=-1) + torch.nn.functional.normalize(centre, dim=-1)
    torch.testing.assert_close(got, want.expand(2, -1))
    torch.testing.assert_close(PooledFeatures(GridNet(fmap))(torch.zeros(1, 3, 8, 8)), full)  # default unchanged


def test_centre_pooling_is_a_backbone_option_with_its_own_id():
    from setenc.photos.backbones import BACKBONES

    plain = BACKBONES.create("efficientnet-lite0")
    centred = BACKBONES.create("efficientnet-lite0", centre=0.75)
    assert centred.id == plain.id + ":centre0.75" and centred.transform.size == plain.transform.size
    pair = BACKBONES.create("efficientnet-lite0+lite2", centre=0.75)
    assert pair.id.count(":centre0.75") == 2  # each net of the pair pools its own centre
    for bad in (0, 1, 1.5):
        with pytest.raises(SetencError, match="centre"):
            BACKBONES.create("efficientnet-lite0", centre=bad)


@pytest.mark.slow
def test_centre_pooling_exports_to_onnx_with_torchs_vectors():
    from setenc.photos import create_backbone

    torch_bb, onnx_bb = (create_backbone("efficientnet-lite0", runtime=r, centre=0.75) for r in ("torch", "onnx"))
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert onnx_bb.runtime == "onnx" and onnx_bb.id == torch_bb.id
    torch.testing.assert_close(onnx_bb.encode(x), torch_bb.encode(x), atol=1e-4, rtol=0)
