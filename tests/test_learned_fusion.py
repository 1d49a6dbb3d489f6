"""Learned fusion: the title vector as one more set element, trained with the head (setenc/heads/elements.py TitleElement)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.heads.model import create_head, list_heads
from setenc.heads.sets import pad_sets
from setenc.titles.encoders import TfidfTextEncoder
from setenc.training.config import load_config
from setenc.training.pairs import PairDataset, collate_pairs

D, T = 8, 6
OPTIONS = {"pma": {"num_heads": 2}, "deepsets": {"hidden": 16, "skip": True}}
SPEC = {"name": "fake", "kwargs": {}, "id": "fake:v1"}
TITLES = ["red running shoe", "blue running shoe", "denim jacket", "leather jacket", "green cap", "red cap"]


def _head(name: str, titles: int | None = T, trained: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    head = create_head(name, D, titles=titles, **OPTIONS.get(name, {}))
    if trained and titles is not None:
        with torch.no_grad():
            head.part("titles").proj.weight.normal_(0, 0.5)
            head.part("titles").modality.normal_(0, 0.1)
    return head.eval()


def _sets(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)).astype(np.float32) for n in sizes]


@pytest.mark.parametrize("name", list_heads())
def test_photos_only_title_only_and_both(name):
    head, plain = _head(name), _head(name, titles=None)
    x, mask = pad_sets(_sets([3, 2, 0]), empty_ok=True)
    t = torch.as_tensor(np.random.default_rng(1).normal(size=(3, T)), dtype=torch.float32)
    t[1] = 0  # article 1: photos, no title; article 2: title, no photos
    out = head(x, mask, titles=t)
    assert out.shape == (3, head.out_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(out[1], plain(x[1:2, :2], mask[1:2, :2])[0])  # no title: the photos-only head
    torch.testing.assert_close(head(x[:2], mask[:2]), plain(x[:2], mask[:2]))  # titles=None: photos only
    assert not torch.allclose(out[0], plain(x[:1], mask[:1])[0])  # the title moves the vector
    with pytest.raises(SetencError, match="empty set"):
        head(x, mask, titles=torch.zeros(3, T))  # article 2 has neither


@pytest.mark.parametrize("name", ["mean", "proj"])
def test_untrained_fusion_ranks_as_the_photos_only_head(name):
    head, plain = _head(name, trained=False), _head(name, titles=None)
    x, mask = pad_sets(_sets([3, 1]))
    t = torch.ones(2, T)
    torch.testing.assert_close(head(x, mask, titles=t), plain(x, mask))


def _encoder() -> SetEncoder:
    text = TfidfTextEncoder(dim=None).fit(TITLES)
    return SetEncoder(_head("proj", titles=text.dim), SPEC, D, text=text)


def test_encode_articles_queries_and_checkpoint_round_trip(tmp_path):
    enc = _encoder()
    sets = _sets([2, 1, 3, 1, 2, 1])
    again = SetEncoder.from_pretrained(enc.save(tmp_path / "lf.pt"))
    assert again.head.titles == enc.head.titles and again.text.id == enc.text.id and again.fusion is None
    both = enc.encode_articles(sets, TITLES)
    np.testing.assert_allclose(again.encode_articles(sets, TITLES), both, atol=1e-6)
    assert both.shape == (6, enc.out_dim) == (6, D)
    photos = again.encode_articles(sets)  # photos only
    np.testing.assert_allclose(photos, again.encode_articles(sets, [None] * 6), atol=1e-6)
    title = again.encode_articles([None] * 6, TITLES)  # title only
    np.testing.assert_allclose(np.linalg.norm(title, axis=1), 1, atol=1e-5)
    assert not np.allclose(both, photos) and not np.allclose(both, title)
    cache = again.encode_articles([None, sets[1]], [TITLES[0], ""], cache_root=tmp_path / "cache")
    np.testing.assert_allclose(cache, [title[0], photos[1]], atol=1e-6)
    with pytest.raises(SetencError, match="neither photos nor a title"):
        again.encode_articles([None], [""])
    with pytest.raises(SetencError, match="learned fusion"):
        from setenc.titles.fusion import Fusion

        again.with_fusion(Fusion(0.5, again.text))


def test_pairs_drop_titles_and_photos(tiny_catalog):
    from setenc.catalogs import load_catalog

    cat = load_catalog(tiny_catalog)
    sets = _sets([len(a.images) for a in cat.articles])
    titles = np.eye(len(sets), T, dtype=np.float32)
    titles[0] = 0  # article 0 has no title: never title-only
    ds = PairDataset(sets, cat, dropout=0, titles=titles, modality_dropout=0.3)
    items = [it for epoch in range(8) for it in (ds.set_epoch(epoch) or [ds[k] for k in range(len(ds))])]
    sides = [(s, t) for a, b, _, _, _, ta, tb in items for s, t in ((a, ta), (b, tb))]
    assert any(len(s) == 0 for s, _ in sides) and any(not t.any() and len(s) for s, t in sides)
    assert all(t.any() for s, t in sides if len(s) == 0)  # a title-only side has its title
    xa, ma, xb, mb, y, va, vb, ta, tb = collate_pairs(items[:6])
    assert va is None and ta.shape == (6, T)
    head = _head("proj")
    assert torch.isfinite(head(xa, ma, va, ta)).all() and torch.isfinite(head(xb, mb, vb, tb)).all()
    plain = PairDataset(sets, cat, dropout=0)  # the photos are drawn as without titles
    a0, b0, _ = plain[1]
    assert len(items[1][0]) in (0, len(a0))


def test_config_needs_text_and_fusion_together():
    with pytest.raises(SetencError, match="needs both"):
        load_config(None, {"text": "tfidf"})
    with pytest.raises(SetencError, match="not one of"):
        load_config(None, {"text": "tfidf", "fusion": "late"})
    assert load_config(None, {"text": "tfidf", "fusion": "learned"}).fusion == "learned"


def test_training_with_learned_fusion_end_to_end(tmp_path):
    """`train.py --text tfidf --fusion learned`: the checkpoint encodes photos, titles or both."""
    from conftest import paired_catalog, script_env
    from test_train import train

    path = paired_catalog(tmp_path / "cat", 24, 2, seed=5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for i, line in enumerate(lines):
        if i % 4:  # every fourth article untitled
            line["title"] = f"{TITLES[(i // 2) % 6]} {line['group']}"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = train(script_env(tmp_path / "cache"), "--catalog", path, "--out", tmp_path, "--run_name", "r",
                "--text", "tfidf", "--fusion", "learned", "--epochs", 2, "--batch_size", 8, "--progress", "false",
                "--split", "[0.5, 0.25, 0.25]")
    assert "learned fusion: tfidf" in out and "test/group:title" in out
    enc = SetEncoder.from_pretrained(tmp_path / "r" / "best.pt")
    assert enc.head.titles == enc.text.dim
    v = enc.encode_articles([np.ones((2, enc.dim), np.float32), None], ["red cap g1", "denim jacket g2"])
    assert v.shape == (2, enc.out_dim) and np.isfinite(v).all()


def test_report_scores_a_learned_fusion_with_titles_and_a_view_aware_head_with_tags(tmp_path):
    """`evaluate_sets` (scripts/evaluate.py) gives a learned fusion its titles and a view-aware head its tags."""
    from pathlib import Path

    from setenc.catalogs import Article, Catalog
    from setenc.evaluation.report import evaluate_sets

    arts = [Article(f"a{i}", (Path(f"p{i}.jpg"),), group=f"g{i // 2}", title=TITLES[i], views=("front",))
            for i in range(6)]
    cat, sets = Catalog(arts, tmp_path, name="c"), _sets([1] * 6)
    fused = _encoder()
    aware = SetEncoder(create_head("proj", D, views=["front"]), SPEC, D)
    with torch.no_grad():
        aware.head.part("views").table.weight[1] = 5.0
    rows, _ = evaluate_sets(sets, cat, {"fused": fused, "aware": aware}, ["mean"], ("group",))
    by = {r["method"]: r for r in rows if r["protocol"] == "group"}
    p_ids = [a.id for a in arts]
    want = fused.encode_articles(sets, TITLES)
    from setenc.evaluation.metrics import vector_metrics
    from setenc.evaluation.protocols import group_protocol

    p = group_protocol(sets, cat)
    assert p.q_ids == p_ids
    m = vector_metrics(want, want, p.q_labels, p.g_labels, exclude=p.exclude)
    assert by["fused"]["map@r"] == round(float(m["map@r"]), 4)
    tagged = aware.encode_sets(sets, views=[("front",)] * 6)
    m = vector_metrics(tagged, tagged, p.q_labels, p.g_labels, exclude=p.exclude)
    assert by["aware"]["map@r"] == round(float(m["map@r"]), 4)
