"""Late fusion of photos and titles: weight 1 is the photo ranking and 0 the title ranking exactly, missing sides
are zero parts, the tuned fusion survives a checkpoint, and the report tunes it off the scored articles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from setenc.catalogs import load_catalog
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.titles.fusion import Fusion, fuse_vectors, tune_weight
from setenc.heads.model import create_head
from setenc.titles.encoders import create_text_encoder

TITLES = ["nike men running shoes", "nike men running shoe", "clarks formal leather shoes", "puma casual sneaker",
          None, "red chief brown formal shoe", "titan steel watch", "fastrack blue watch"]


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ranking(q, g):
    return np.argsort(-(q @ g.T), axis=1, kind="stable")


def _sets(n=len(TITLES), d=8, seed=0):
    rng = np.random.default_rng(seed)
    return [_unit(rng.normal(size=(int(rng.integers(1, 4)), d))) for _ in range(n)]


def _encoder(weight, d=8):
    text = create_text_encoder("tfidf").fit(TITLES)
    enc = SetEncoder(create_head("mean", d), {"name": "fake", "kwargs": {}, "id": "fake:v1"}, d)
    return enc.with_fusion(Fusion(weight, text))


def test_weight_one_is_the_photo_ranking_and_zero_the_title_ranking():
    rng = np.random.default_rng(0)
    s, t = _unit(rng.normal(size=(20, 8))), _unit(rng.normal(size=(20, 5)))
    for w, ref in ((1.0, s), (0.0, t)):
        f = fuse_vectors(s, t, w)
        assert f.shape == (20, 13) and f.dtype == np.float32
        np.testing.assert_array_equal(_ranking(f[:5], f), _ranking(ref[:5], ref))
        np.testing.assert_allclose(f @ f.T, ref @ ref.T, atol=1e-6)
    f = fuse_vectors(s, t, 0.3)
    np.testing.assert_allclose(f @ f.T, 0.3 * (s @ s.T) + 0.7 * (t @ t.T), atol=1e-6)  # one search, both scores
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-6)
    with pytest.raises(SetencError, match="alpha"):
        fuse_vectors(s, t, 1.2)


def test_encode_articles_end_points_equal_photos_only_and_titles_only():
    sets = _sets()
    photos = _encoder(1.0).encode_sets(sets)
    one = _encoder(1.0).encode_articles(sets, TITLES)
    np.testing.assert_array_equal(_ranking(one, one), _ranking(photos, photos))
    zero = _encoder(0.0)
    titles = zero.fusion.text.encode(TITLES)
    x = zero.encode_articles(sets, TITLES)
    np.testing.assert_allclose(x @ x.T, titles @ titles.T, atol=1e-6)
    assert x.shape == (len(TITLES), zero.out_dim) and zero.out_dim == 8 + titles.shape[1]


def test_missing_titles_and_one_sided_queries():
    enc, sets = _encoder(0.5), _sets()
    gallery = enc.encode_articles(sets, TITLES)
    t = enc.fusion.text.dim
    assert not gallery[4, 8:].any() and gallery[4, :8].any()  # no title: a zero title part, photos kept
    photos_only = enc.encode_articles(sets[:3])  # titles=None: every query is photos only
    ref = enc.encode_sets(sets)
    np.testing.assert_array_equal(_ranking(photos_only, gallery), _ranking(ref[:3], ref))
    title_only = enc.encode_articles([None, None], ["nike running shoes", "blue watch"])
    assert not title_only[:, :8].any() and title_only.shape == (2, 8 + t)
    tv = enc.fusion.text.encode(TITLES)
    np.testing.assert_array_equal(_ranking(title_only, gallery),
                                  _ranking(enc.fusion.text.encode(["nike running shoes", "blue watch"]), tv))
    assert _ranking(title_only, gallery)[1, 0] in (6, 7)  # the watches
    with pytest.raises(SetencError, match="neither photos nor a title"):
        enc.encode_articles([None], [""])
    with pytest.raises(SetencError, match="one title"):
        enc.encode_articles(sets, TITLES[:2])
    plain = SetEncoder(create_head("mean", 8), {"name": "fake", "kwargs": {}, "id": "fake:v1"}, 8)
    with pytest.raises(SetencError, match="no title fusion"):
        plain.encode_articles(sets, TITLES)
    np.testing.assert_array_equal(plain.encode_articles(sets), plain.encode_sets(sets))


def test_fusion_is_recorded_in_the_checkpoint(tmp_path):
    enc, sets = _encoder(0.6), _sets()
    path = enc.save(tmp_path / "fused.pt")
    back = SetEncoder.from_pretrained(path)
    assert back.fusion.weight == 0.6 and back.fusion.text_id == enc.fusion.text.id
    np.testing.assert_array_equal(back.encode_articles(sets, TITLES), enc.encode_articles(sets, TITLES))
    again = SetEncoder.from_pretrained(back.with_fusion(None).save(tmp_path / "plain.pt"))
    assert again.fusion is None


def test_tune_weight_finds_the_informative_side_and_samples_queries(monkeypatch):
    import setenc.titles.fusion as fusion

    rng = np.random.default_rng(0)
    labels = [f"g{i // 2}" for i in range(40)]
    centres = rng.normal(size=(20, 6))
    text = _unit(np.repeat(centres, 2, axis=0) + 0.1 * rng.normal(size=(40, 6)))  # titles know the groups
    image = _unit(rng.normal(size=(40, 6)))  # photos are noise
    exclude = np.arange(40)
    w, rows = tune_weight(image, image, text, text, labels, labels, exclude)
    assert w == 0.0 and rows[0]["recall@1"] == 1.0
    w, _ = tune_weight(text, text, image, image, labels, labels, exclude)
    assert w == 1.0
    monkeypatch.setattr(fusion, "TUNE_ENTRIES", 400)  # 10 queries x 40 gallery
    _, rows = tune_weight(image, image, text, text, labels, labels, exclude)
    assert rows[0]["queries"] == 10


def _titled_catalog(root, titled=True):
    """16 articles of 2 random photos in 4 groups; titles name the group (one article has none)."""
    from conftest import write_photos

    photos = write_photos(root / "img", 32, seed=3)
    names = ["blue running shoe", "steel watch men", "red leather bag", "cotton kurta women"]
    lines = []
    for i in range(16):
        line = {"id": f"a{i}", "images": [str(p.relative_to(root)) for p in photos[2 * i : 2 * i + 2]],
                "group": f"g{i % 4}"}
        if titled and i != 5:
            line["title"] = f"{names[i % 4]} {i}"
        lines.append(line)
    (root / "catalog.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return load_catalog(root / "catalog.jsonl")


def test_report_adds_title_rows_tuned_off_the_scored_articles(tmp_path, fake_backbone):
    from setenc.evaluation.report import evaluate_catalog

    cat = _titled_catalog(tmp_path)
    report = evaluate_catalog(cat, fake_backbone, tmp_path / "cache", out_dir=tmp_path / "r", pictures=False,
                              progress=False, text="tfidf", matchers=["mean"])
    rows = {(r["method"], r["protocol"]): r for r in report["rows"]}
    w = report["text"]["weights"]["mean"]
    assert ("title (tfidf)", "group") in rows and (f"mean + title (tfidf, w={w:g})", "single") in rows
    assert not any("title" in m and p == "self" for m, p in rows)  # the same title on both halves: no row
    assert report["text"]["tuned_on"].endswith("title-tuning") and 0 < report["articles"] < len(cat)
    assert rows[("title (tfidf)", "group")]["recall@1"] > rows[("mean", "group")]["recall@1"]  # titles name groups
    saved = report["text"]["checkpoints"]["mean"]
    assert SetEncoder.from_pretrained(saved).fusion.weight == w
    assert "titles: `tfidf:" in (tmp_path / "r" / "report.md").read_text()


def test_report_without_titles_is_a_one_line_error(tmp_path, fake_backbone):
    from setenc.evaluation.report import evaluate_catalog

    cat = _titled_catalog(tmp_path, titled=False)
    with pytest.raises(SetencError, match="no article has a `title`"):
        evaluate_catalog(cat, fake_backbone, tmp_path / "cache", text="tfidf", progress=False)
    assert fake_backbone.calls == 0  # refused before any embedding


@pytest.mark.parametrize("args, words", [
    (["--text", "tfidf"], ["no article has a `title`", "without --text"]),
    (["--text", "bert"], ["unknown text encoder 'bert'", "minilm"]),
    (["--text-model", "/nowhere"], ["--text-model needs --text"]),
])
def test_evaluate_script_refuses_text_options_in_one_line_before_any_work(tmp_path, args, words):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO, script_env

    _titled_catalog(tmp_path, titled=False)
    env = script_env(tmp_path / "cache")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--catalog",
                           str(tmp_path / "catalog.jsonl"), "--out", str(tmp_path / "r"), *args],
                          env=env, capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert not (Path(env["SETENC_CACHE"]) / "embeddings").exists()  # refused before embedding anything


def test_title_rows_give_a_view_aware_head_its_tags(tmp_path, fake_backbone):
    """Late-fusion rows score a view-aware head with the photos' tags, as its own row does (not as 'unknown')."""
    from setenc.evaluation.protocols import group_protocol
    from setenc.evaluation.titles import title_rows
    from setenc.titles.encoders import create_text_encoder

    cat = _titled_catalog(tmp_path)
    sets = [np.ones((len(a.images), 4), np.float32) for a in cat]
    p = group_protocol(sets, cat)
    p.q_views = [("front",) * len(x) for x in p.queries]
    p.g_views = [("side",) * len(x) for x in p.gallery]
    seen = []

    class Recorder:
        head = type("Head", (), {"titles": None})()
        fusion = type("F", (), {"weight": 1.0, "combine": staticmethod(lambda s, t: s)})()

        def encode_sets(self, sets, views=None, **_):
            seen.append(("sets", views))
            return np.ones((len(sets), 2), np.float32)

        def encode_articles(self, sets, titles, views=None, **_):
            seen.append(("articles", views))
            return np.ones((len(sets), 2), np.float32)

    text = create_text_encoder("tfidf").fit([a.title or "" for a in cat])
    title_rows(text, {"head": Recorder()}, [p], cat, tmp_path / "cache")
    assert seen == [("sets", p.g_views), ("articles", p.q_views)]
