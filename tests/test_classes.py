"""The class block (setenc/heads/classes.py): the probe against scikit-learn, the appended vector, heads, recipe, training."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, paired_catalog, script_env
from setenc.heads.classes import ClassBlock
from setenc.plumbing.errors import SetencError
from setenc.heads.model import create_head
from setenc.training import recipe
from setenc.training.config import load_config
from test_recipe import synthetic


def _problem(n: int = 240, dim: int = 16, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g)
    y = torch.arange(n) % k
    z = F.normalize(centres[y] + 0.8 * torch.randn(n, dim, generator=g), dim=-1)
    return z, [f"c{int(i)}" for i in y]


def test_probe_is_scikit_learns_logistic_regression():
    """Same objective (C * sum of cross-entropies + |W|^2 / 2, bias free): same class probabilities."""
    from sklearn.linear_model import LogisticRegression

    z, labels = _problem()
    block = ClassBlock(sorted(set(labels)), z.shape[1]).fit(z, labels, c=3.0)
    ref = LogisticRegression(C=3.0, max_iter=5000, tol=1e-10).fit(z.numpy(), labels)
    assert list(ref.classes_) == block.classes
    got = block.probe(z).softmax(-1).numpy()
    assert np.abs(got - ref.predict_proba(z.numpy())).max() < 2e-3
    assert not any(p.requires_grad for p in block.parameters())  # fitted, never trained by the loss


def test_output_appends_weighted_class_probabilities():
    photos, labels = _problem()
    z = F.normalize(torch.randn(len(photos), 6, generator=torch.Generator().manual_seed(1)), dim=-1)  # head vectors
    block = ClassBlock(sorted(set(labels)), photos.shape[1], weight=0.5).fit(photos, labels)
    out = block.append(z, photos)
    assert out.shape == (len(z), 6 + 4) and torch.allclose(out.norm(dim=-1), torch.ones(len(z)))
    p = F.normalize(block.probe(photos).softmax(-1), dim=-1)
    naive = (z @ z.T + 0.25 * p @ p.T) / 1.25  # the cosine the docstring promises
    assert torch.allclose(out @ out.T, naive, atol=1e-5)
    acc = (block.probe(photos).argmax(-1) == torch.tensor([block.classes.index(c) for c in labels])).float().mean()
    assert acc > 0.9  # separable clusters: the probe learned them


def test_bad_classes_are_refused():
    with pytest.raises(SetencError, match="at least 2 distinct"):
        ClassBlock(["a"], 4)
    with pytest.raises(SetencError, match="> 0"):
        ClassBlock(["a", "b"], 4, weight=0.0)
    with pytest.raises(SetencError, match="unknown classes"):
        ClassBlock(["a", "b"], 4).fit(torch.zeros(2, 4), ["a", "z"])


@pytest.mark.parametrize("name", ["mean", "proj", "deepsets"])
def test_head_with_a_class_block_round_trips_and_stays_a_set_function(name):
    torch.manual_seed(0)
    head = create_head(name, 8).eval()
    x, mask = torch.randn(5, 3, 8), torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]]).bool()
    plain = head(x, mask)
    means = torch.stack([F.normalize(x[i, mask[i]].mean(0), dim=0) for i in range(5)])  # naive photo means
    block = head.add(ClassBlock(["a", "b", "c"], 8).fit(means, ["a", "b", "c", "a", "b"]))
    out = head(x.masked_fill(~mask.unsqueeze(-1), float("nan")), mask)  # padding never leaks in
    assert head.out_dim == plain.shape[1] + 3 == out.shape[1] and head.classes == ["a", "b", "c"]
    assert torch.allclose(out, block.append(plain, means), atol=1e-6)
    again = create_head(**head.config).eval()
    again.load_state_dict(head.state_dict())
    assert torch.allclose(again(x, mask), out) and again.config == head.config
    order = torch.tensor([2, 0, 1])
    full = mask.all(dim=1)
    assert torch.allclose(head(x[full][:, order], mask[full]), out[full], atol=1e-6)  # photo order does not matter
    with pytest.raises(SetencError, match="already has"):
        head.add(ClassBlock(["a", "b"], 8))


def test_recipe_adds_the_block_only_where_groups_are_classes():
    classes, why = recipe.choose(load_config(None, {}), synthetic(20, 100, photos=1))
    assert classes.classes is True and any(line.startswith("classes=true") for line in why)
    products, why = recipe.choose(load_config(None, {}), synthetic(60, 3))
    assert products.classes is False and any(line.startswith("classes=false") for line in why)
    fused, why = recipe.choose(load_config(None, {"text": "tfidf", "fusion": "learned"}), synthetic(20, 100, photos=1))
    assert fused.classes is False and any("titles already name the classes" in line for line in why)
    mine, why = recipe.choose(load_config(None, {"classes": False}), synthetic(20, 100, photos=1))
    assert mine.classes is False and not any(line.startswith("classes=") for line in why)


def test_training_fits_the_block_and_the_checkpoint_carries_it(tmp_path):
    pytest.importorskip("pytorch_lightning")
    from setenc.encoder import SetEncoder

    catalog = paired_catalog(tmp_path / "cat", 24, 2, seed=3)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--catalog", str(catalog), "--out",
                           str(tmp_path / "runs"), "--classes", "true", "--epochs", "3", "--progress", "false"],
                          cwd=REPO, env=script_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[train] class block: a probe over" in proc.stdout
    run = tmp_path / "runs" / "cat-proj-s0"
    encoder = SetEncoder.from_pretrained(run / "best.pt")
    groups = {json.loads(line)["group"] for line in (tmp_path / "cat" / "catalog.jsonl").read_text().splitlines()}
    assert set(encoder.head.classes) < groups and len(encoder.head.classes) >= 2  # the training articles' groups
    assert encoder.out_dim == encoder.dim + len(encoder.head.classes)  # the recipe's photo vectors + the block
    vecs = encoder.encode_sets([np.random.default_rng(0).standard_normal((2, encoder.dim)).astype(np.float32)])
    assert vecs.shape == (1, encoder.out_dim) and abs(float(np.linalg.norm(vecs)) - 1) < 1e-5
    assert encoder.head.part("classes").probe.weight.abs().sum() > 0  # fitted, not the zero init
    ev = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--checkpoint", str(run / "best.pt"),
                         "--catalog", str(catalog), "--out", str(tmp_path / "rep"), "--no-pictures"], cwd=REPO,
                        env=script_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    report = (tmp_path / "rep" / "report.md").read_text()
    assert f"appends the probabilities of {len(encoder.head.classes)} classes" in report
