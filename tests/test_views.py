"""View-aware heads: a learned vector per photo view tag, added before pooling (setenc/heads/views.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from setenc.encoder import SetEncoder
from setenc.heads.model import create_head, list_heads
from setenc.heads.sets import pad_ids, pad_sets
from setenc.training.pairs import PairDataset, collate_pairs
from setenc.heads.views import UNKNOWN, sets_view_ids, view_ids, view_vocabulary

D = 8
VOCAB = ["back", "front", "side"]
OPTIONS = {"pma": {"num_heads": 2}, "deepsets": {"hidden": 16, "skip": True}}
SPEC = {"name": "fake", "kwargs": {}, "id": "fake:v1"}


def _head(name: str, views=VOCAB, seed: int = 0, trained: bool = True):
    torch.manual_seed(seed)
    head = create_head(name, D, views=views, **OPTIONS.get(name, {}))
    if trained and views is not None:  # a trained table: every tag its own vector
        with torch.no_grad():
            head.part("views").table.weight.normal_(0, 0.5)
    return head.eval()


def _set(n: int, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, D)), dtype=torch.float32)


def test_vocabulary_and_ids():
    assert view_vocabulary([("front", "side"), None, ("back", "front")]) == VOCAB
    np.testing.assert_array_equal(view_ids(("side", "front", "top"), 3, VOCAB), [3, 2, UNKNOWN])  # unseen: unknown
    np.testing.assert_array_equal(view_ids(None, 2, VOCAB), [0, 0])
    np.testing.assert_array_equal(view_ids(("front", "back"), 3, VOCAB), [0, 0, 0])  # rows do not match tags
    np.testing.assert_array_equal(view_ids(("front", "back"), 4, VOCAB, per_photo=2), [2, 2, 1, 1])  # TTA elements
    assert [list(i) for i in sets_view_ids([np.zeros((1, D))] * 2, None, VOCAB)] == [[0], [0]]
    assert pad_ids([np.array([1, 2]), np.array([3])]).tolist() == [[1, 2], [3, 0]]


@pytest.mark.parametrize("name", list_heads())
def test_permutation_invariant_with_tags_moving_along(name):
    head = _head(name)
    x, tags = _set(5), torch.tensor([[2, 2, 1, 3, 2]])
    ref = head(x[None], torch.ones(1, 5, dtype=torch.bool), tags)
    for seed in range(3):
        perm = torch.as_tensor(np.random.default_rng(seed).permutation(5))
        out = head(x[perm][None], torch.ones(1, 5, dtype=torch.bool), tags[:, perm])
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    within = torch.tensor([1, 0, 2, 3, 4])  # two photos of one view swap places; their tags do not move
    torch.testing.assert_close(head(x[within][None], torch.ones(1, 5, dtype=torch.bool), tags), ref,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list_heads())
def test_tags_matter_once_trained_and_padding_ignores_them(name):
    head = _head(name)
    x, mask = pad_sets([_set(3), _set(2, 1)])
    a = head(x, mask, torch.tensor([[1, 1, 1], [2, 2, 0]]))
    b = head(x, mask, torch.tensor([[2, 2, 2], [2, 2, 3]]))  # set 1's padded slot gets another tag
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


@pytest.mark.parametrize("name", list_heads())
def test_equals_the_tag_free_head_at_init(name):
    plain, aware = _head(name, views=None), _head(name, trained=False)
    x, mask = pad_sets([_set(3), _set(1, 1)])
    ref = plain(x, mask)
    torch.testing.assert_close(aware(x, mask, torch.tensor([[1, 2, 3], [3, 0, 0]])), ref)
    torch.testing.assert_close(aware(x, mask), ref)
    torch.testing.assert_close(plain(x, mask, torch.tensor([[1, 2, 3], [3, 0, 0]])), ref)  # tag-free: ids ignored


def test_untagged_and_unseen_tags_are_unknown():
    head = _head("proj")
    x, mask = pad_sets([_set(2)])
    unknown = head(x, mask, torch.zeros(1, 2, dtype=torch.long))
    torch.testing.assert_close(head(x, mask), unknown)  # no ids at all: every photo unknown
    torch.testing.assert_close(head(x, mask, torch.tensor([[-1, 99]])), unknown)  # out of range: unknown
    enc = SetEncoder(head, SPEC, D)
    sets = [x[0].numpy()]
    np.testing.assert_allclose(enc.encode_sets(sets, views=[("top", "under")]), enc.encode_sets(sets), atol=1e-6)
    np.testing.assert_allclose(enc.encode_sets(sets, views=[None]), enc.encode_sets(sets), atol=1e-6)
    assert not np.allclose(enc.encode_sets(sets, views=[("front", "side")]), enc.encode_sets(sets))


def test_checkpoint_round_trip(tmp_path):
    enc = SetEncoder(_head("proj"), SPEC, D)
    rng = np.random.default_rng(0)
    sets = [rng.normal(size=(n, D)).astype(np.float32) for n in (3, 1, 2)]
    views = [("front", "back", "side"), None, ("side", "new")]
    again = SetEncoder.from_pretrained(enc.save(tmp_path / "v.pt"))
    assert again.head.views == VOCAB and again.head.config["views"] == VOCAB
    np.testing.assert_array_equal(again.encode_sets(sets, views=views), enc.encode_sets(sets, views=views))
    assert not np.allclose(again.encode_sets(sets, views=views), again.encode_sets(sets))


def test_pairs_carry_each_photos_tag_along(tiny_catalog):
    from setenc.catalogs import load_catalog

    cat = load_catalog(tiny_catalog)
    # photo k of article i is the vector (i, k, ...) and its view id is 10 * i + k: the pairing is checkable
    sets = [np.array([[i, k] + [0] * (D - 2) for k in range(len(a.images))], np.float32)
            for i, a in enumerate(cat.articles)]
    ids = [np.array([10 * i + k for k in range(len(s))]) for i, s in enumerate(sets)]
    ds = PairDataset(sets, cat, dropout=0.5, views=ids)
    items = [ds[k] for k in range(len(ds))]
    for a, b, _, va, vb, _, _ in items:
        for s, v in ((a, va), (b, vb)):
            np.testing.assert_array_equal(10 * s[:, 0] + s[:, 1], v)
    batch = collate_pairs(items)
    assert len(batch) == 9 and batch[5].shape == batch[1].shape and batch[6].shape == batch[3].shape
    assert batch[7] is None and batch[8] is None  # no titles
    plain = PairDataset(sets, cat, dropout=0.5)  # the same draws with and without ids
    for k, (a, b, y, *_) in enumerate(items):
        pa, pb, py = plain[k]
        np.testing.assert_array_equal(pa, a) and np.testing.assert_array_equal(pb, b)
        assert py == y


def test_training_with_views_end_to_end(tmp_path):
    """`train.py --views true` on a view-tagged catalogue: the checkpoint's head carries the vocabulary."""
    from conftest import paired_catalog
    from test_train import train
    from conftest import script_env

    path = paired_catalog(tmp_path / "cat", 24, 2, seed=5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["views"] = ["front", "side"] if i % 3 else ["front", "back"]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = train(script_env(tmp_path / "cache"), "--catalog", path, "--out", tmp_path, "--run_name", "r",
                "--views", "true", "--epochs", 2, "--batch_size", 8, "--progress", "false",
                "--split", "[0.5, 0.25, 0.25]")
    assert "view-aware head: 3 view tags" in out
    enc = SetEncoder.from_pretrained(tmp_path / "r" / "best.pt")
    assert enc.head.views == VOCAB
    assert enc.head.part("views").table.weight.abs().sum() > 0  # trained away from zero
