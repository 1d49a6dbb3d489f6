"""Bad input through the real scripts: every problem is one clear line (or a skipped-and-reported photo), never a
traceback. The library-level cases live beside their modules (test_images, test_catalog, test_embed, test_model,
test_index); docs/reliability.md maps every case to its test.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, write_photos
from setenc.catalogs import load_catalog
from setenc.plumbing.errors import CatalogError

GOOD = 12  # good photos in the messy catalog, 2 per article


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One cache for the module, so the ONNX export of the backbone is made once."""
    cache = tmp_path_factory.mktemp("setenc-cache")
    return {**os.environ, "SETENC_CACHE": str(cache), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def run(env, *args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def refused(env, *args) -> str:
    """Run a script that must stop: exit 2, one `error:` line naming the problem, no traceback."""
    proc = run(env, *args, ok=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _exif_rotated(path: Path) -> None:
    """A 30x10 landscape pixel array tagged 'rotate 90' (orientation 6): upright it is 10x30 portrait."""
    img = Image.new("RGB", (30, 10), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif.tobytes())


def make_bad_photos(folder: Path) -> dict[str, Path]:
    """One photo for every way a file can be unusable (`bad`) or merely unusual (`odd`, must embed)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_photos(folder / "src", 1, seed=9, size=64)[0].read_bytes()
    bad = {
        "corrupt": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "jpg"),
        "truncated": (good[:600], "jpg"),
        "zero-byte": (b"", "jpg"),
        "not-an-image": (b"name,price\nboot,9\n", "jpg"),
    }
    out = {}
    for name, (data, ext) in bad.items():
        out[name] = folder / f"{name}.{ext}"
        out[name].write_bytes(data)
    out["directory"] = folder / "directory.jpg"
    out["directory"].mkdir()
    out["missing"] = folder / "missing.jpg"
    out["bomb"] = folder / "bomb.png"
    Image.new("1", (10000, 10000)).save(out["bomb"])  # 100 MP > the 64 MP limit; a few kB on disk
    odd = {
        "grey": Image.new("L", (20, 20), 90),
        "cmyk": Image.new("CMYK", (20, 20), (0, 255, 255, 0)),
        "rgba": Image.new("RGBA", (20, 20), (0, 0, 255, 128)),
        "png16": Image.fromarray(np.full((20, 20), 40000, np.uint16)),
        "palette": Image.new("RGB", (20, 20), (10, 200, 10)).convert("P"),
        "one-pixel": Image.new("RGB", (1, 1), (1, 2, 3)),
    }
    for name, img in odd.items():
        out[name] = folder / f"{name}.{'jpg' if name == 'cmyk' else 'png'}"
        img.save(out[name])
    out["exif"] = folder / "exif.png"
    _exif_rotated(out["exif"])
    return out


BAD = ("corrupt", "truncated", "zero-byte", "not-an-image", "bomb")  # exist but cannot be decoded: skipped
ABSENT = ("directory", "missing")  # no photo file at all: the manifest is refused (docs/reliability.md)
ODD = ("grey", "cmyk", "rgba", "png16", "palette", "one-pixel", "exif")


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """6 articles of 2 good photos (3 groups) + one article per bad / odd photo (with one good photo beside the
    bad one, so the article survives) + one article whose only photo is bad."""
    root = tmp_path_factory.mktemp("messy")
    photos = make_bad_photos(root / "img")
    good = write_photos(root / "img", GOOD, seed=1)
    lines = [{"id": f"a{i}", "images": [str(p.relative_to(root)) for p in good[2 * i : 2 * i + 2]],
              "group": f"g{i // 2}", "sku": 100 + i} for i in range(GOOD // 2)]
    for i, name in enumerate(BAD + ODD):
        pair = [photos[name], good[i % GOOD]]
        lines.append({"id": name, "images": [str(p.relative_to(root)) for p in pair],
                      "group": f"g{i % 3}"})
    lines.append({"id": "only-bad", "images": [str(photos["corrupt"].relative_to(root))], "group": "g0"})
    (root / "catalog.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root / "catalog.jsonl", photos


@pytest.mark.parametrize("name", ABSENT)
def test_absent_photo_refuses_the_manifest_naming_article_and_file(messy, name):
    """Through the scripts: tests/test_e2e.py::test_bad_catalog_is_one_clear_line."""
    path, photos = messy
    lines = [*path.read_text().splitlines(), json.dumps({"id": "x", "images": [str(photos[name])]})]
    other = path.with_name(f"absent-{name}.jsonl")
    other.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError, match=rf"absent-{name}\.jsonl:{len(lines)}: article 'x': photo not found or "
                                           rf"not a file: .*{name}\.jpg"):
        load_catalog(other)
    assert len(load_catalog(other, check_files=False)) == len(lines)  # the library can still skip them at embed


@pytest.fixture(scope="module")
def embedded(env, messy, tmp_path_factory):
    """One embed run over the messy catalog; (stdout, report dict)."""
    report = tmp_path_factory.mktemp("report") / "report.json"
    proc = run(env, "scripts/embed.py", "--catalog", messy[0], "--report", report, "--workers", "0",
                "--tta", "none")  # one vector a photo: counts are photos
    return proc.stdout, json.loads(report.read_text())


def test_embed_skips_every_bad_photo_counts_and_lists_it(embedded, messy):
    stdout, report = embedded
    _, photos = messy
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {photos[n].name for n in BAD}  # each bad photo once, none of the odd ones
    for name, words in [("corrupt", "cannot"), ("truncated", "truncated"), ("zero-byte", "empty"),
                        ("not-an-image", "not"), ("bomb", "pixels")]:
        reason = skipped[photos[name].name]
        assert str(photos[name]) in reason and words in reason, (name, reason)
    assert report["embedded"] == GOOD + len(ODD)  # good + odd photos
    assert f"{len(BAD)} skipped" in stdout and "skipped:" in stdout


def test_odd_photos_embed_and_exif_orientation_is_respected(env, messy, embedded, monkeypatch):
    """Through the same backbone the script used: the EXIF photo's vector is the upright photo's vector."""
    from setenc.photos import create_backbone
    from setenc.training.recipe import BACKBONE
    from setenc.photos import EmbeddingCache

    _, photos = messy
    monkeypatch.setenv("SETENC_CACHE", env["SETENC_CACHE"])  # the ONNX export the script made
    backbone = create_backbone(BACKBONE)  # the recipe's, which the script embedded with
    cache = EmbeddingCache(Path(env["SETENC_CACHE"]) / "embeddings", backbone.id, backbone.dim)
    hashes = cache.hashes([photos[n] for n in ODD])
    assert all(h is not None for h in hashes)
    vecs = cache.get(hashes)
    assert np.isfinite(vecs).all() and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
    upright = Image.new("RGB", (10, 30), (200, 30, 30))
    rotated = Image.new("RGB", (30, 10), (200, 30, 30))
    v_up, v_rot = backbone.encode_images([upright, rotated]).numpy()
    assert np.allclose(vecs[ODD.index("exif")], v_up, atol=1e-4)
    assert not np.allclose(v_up, v_rot, atol=1e-3)


def test_evaluate_drops_unembeddable_articles_and_names_them(env, messy, embedded, tmp_path):
    """Missing / bad photos: skipped at embed; an article left with no photo is dropped and listed, not fatal."""
    run(env, "scripts/evaluate.py", "--catalog", messy[0], "--out", tmp_path / "r", "--no-pictures", "--no-tune",
        "--matchers", "mean", "--protocols", "group")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["dropped_articles"] == ["only-bad"]
    assert report["articles"] == GOOD // 2 + len(BAD) + len(ODD)


# -- the manifest ----------------------------------------------------------------------------------------
def _manifest(tmp_path: Path, lines: list, raw: bytes = b"") -> Path:
    photos = write_photos(tmp_path / "img", 2)
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    text = text.replace("P0", str(photos[0].relative_to(tmp_path))).replace("P1", str(photos[1].relative_to(tmp_path)))
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(text.encode() + raw + b"\n")
    return path


SLOW = pytest.mark.slow  # each case is one more script start (~10 s on a loaded 2-core box); the library-level
# test named in docs/reliability.md runs in the default suite


@pytest.mark.parametrize("lines, words", [
    ([{"id": "a", "images": ["P0"]}, '{"id": "b", "images": ["P1"]'], ["catalog.jsonl:2", "not valid JSON"]),
    pytest.param([{"id": "a", "images": ["P0"]}, {"id": "a", "images": ["P1"]}],
                 ["catalog.jsonl:2", "duplicate article id 'a'"], marks=SLOW),
    pytest.param([{"id": "a", "images": ["P0"]}, {"id": "b", "images": []}], ["catalog.jsonl:2", "'b' has no photos"],
                 marks=SLOW),
    pytest.param([{"id": "a", "images": ["P0", "P1"], "views": ["front"]}],
                 ["catalog.jsonl:1", "'views' (1)", "(2 photos)"], marks=SLOW),
], ids=["malformed-json", "duplicate-id", "zero-photos", "short-views"])
def test_bad_manifest_stops_embed_with_one_line(env, tmp_path, lines, words):
    line = refused(env, "scripts/embed.py", "--catalog", _manifest(tmp_path, lines))
    assert all(w in line for w in words), line


def test_manifest_that_is_not_utf8_names_the_line(tmp_path):
    """Raw non-UTF-8 bytes (a Latin-1 file name pasted into the manifest): refused, line named, how to fix."""
    path = _manifest(tmp_path, [{"id": "a", "images": ["P0"]}, ""], raw=b'{"id": "b", "images": ["img/caf\xe9.jpg"]}')
    with pytest.raises(CatalogError, match=r"catalog\.jsonl:2: not UTF-8 \(byte 0xe9 at column 32\).*save the man"):
        load_catalog(path)


def test_photo_name_with_non_utf8_bytes_is_refused_clearly(tmp_path):
    """A file name whose bytes are not UTF-8 can only reach a manifest as a JSON surrogate escape ("\\udce9");
    it is refused at load, naming the article and saying to rename the file (the cache index, reports and
    every log line are UTF-8)."""
    path = _manifest(tmp_path, [{"id": "a", "images": ["P0"]}, {"id": "b", "images": ["img/caf\udce9.jpg"]}])
    with pytest.raises(CatalogError, match=r"catalog\.jsonl:2: article 'b'.*not valid UTF-8.*rename"):
        load_catalog(path, check_files=False)


@SLOW
def test_unknown_config_key_stops_train(env, tiny_catalog, tmp_path):
    """(Extra keys in a catalog line are metadata instead: test_catalog.py::test_extra_keys_are_meta.)"""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("head: mean\nlearning_rate: 0.1\n")
    line = refused(env, "scripts/train.py", "--config", cfg, "--catalog", tiny_catalog)
    assert "cfg.yaml" in line and "unknown config key(s) ['learning_rate']" in line, line


@SLOW
def test_pairs_naming_unknown_article_stops_the_script(env, tiny_catalog):
    (tiny_catalog.parent / "pairs.csv").write_text("a,b\na0,a1\na2,ghost\n")
    line = refused(env, "scripts/evaluate.py", "--catalog", tiny_catalog, "--out", tiny_catalog.parent / "r")
    assert "pairs.csv:3" in line and "unknown article 'ghost'" in line, line


# -- checkpoints and indexes -----------------------------------------------------------------------------
def _checkpoint(path: Path, backbone_id: str, dim: int) -> Path:
    from setenc.heads.model import create_head
    from setenc.encoder import SetEncoder

    spec = {"name": "efficientnet-lite0", "kwargs": {}, "id": backbone_id}
    return SetEncoder(create_head("proj", dim, out_dim=4), spec, dim).save(path)


@SLOW
@pytest.mark.parametrize("backbone_id, dim", [("efficientnet-lite0:other", 1280), (None, 8)], ids=["backbone", "dim"])
def test_checkpoint_from_another_backbone_or_dim_stops_export(env, tiny_catalog, tmp_path, backbone_id, dim):
    ckpt = _checkpoint(tmp_path / "c.pt", backbone_id, dim)
    line = refused(env, "scripts/export.py", "--checkpoint", ckpt, "--catalog", tiny_catalog, "--out", tmp_path / "x")
    assert "checkpoint was trained on backbone" in line and f"({dim}-d)" in line, line


@SLOW
@pytest.mark.parametrize("kind", ["truncated", "pickle"])
def test_damaged_or_pickled_checkpoint_stops_evaluate(env, tiny_catalog, tmp_path, kind):
    ckpt = _checkpoint(tmp_path / "c.pt", None, 1280)
    if kind == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    else:
        ckpt.write_bytes(pickle.dumps({"format": "setenc-head-v1", "evil": Image.new("RGB", (1, 1))}))
    line = refused(env, "scripts/evaluate.py", "--checkpoint", ckpt, "--catalog", tiny_catalog, "--out", tmp_path / "r")
    assert str(ckpt) in line and "weights_only=True" in line, line


@SLOW
def test_index_missing_a_file_stops_search(env, tiny_catalog, tmp_path, embedded):
    run(env, "scripts/export.py", "--catalog", tiny_catalog, "--out", tmp_path / "idx")
    (tmp_path / "idx" / "ids.json").unlink()
    photo = next(iter(load_catalog(tiny_catalog))).images[0]
    line = refused(env, "scripts/search.py", tmp_path / "idx", photo)
    assert "ids.json" in line and "missing from the index export" in line and "re-export" in line, line


@SLOW
def test_nan_in_cached_embedding_stops_evaluate(env, tiny_catalog, tmp_path):
    """A NaN row written into the cache behind its back: named as NaN/inf with the fix (delete the cache)."""
    from setenc.photos import EmbeddingCache

    cache_root = tmp_path / "cache"
    run(env, "scripts/embed.py", "--catalog", tiny_catalog, "--out", cache_root,
        "--backbone", "efficientnet-lite0", "--tta", "none")  # what evaluate.py reads without a checkpoint
    (cache_dir,) = [p for p in cache_root.iterdir() if p.is_dir()]
    for shard in (cache_dir / "shards").glob("*.bin"):
        shard.write_bytes(np.full(shard.stat().st_size // 4, np.nan, np.float32).tobytes())
    line = refused(env, "scripts/evaluate.py", "--catalog", tiny_catalog, "--cache", cache_root,
                   "--out", tmp_path / "r", "--no-pictures")
    assert "NaN/inf" in line and str(cache_dir) in line and "delete the cache" in line, line
