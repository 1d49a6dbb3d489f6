"""Contrastive losses against naive loop references, hand-computed values and their gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from setenc.plumbing.errors import SetencError
from setenc.training.losses import InfoNCE, MultiSimilarityLoss, SupConLoss, create_loss, list_losses


def dot(u, v):
    return sum(x * y for x, y in zip(u, v))


def ref_infonce(a, b, t, labels=None):
    """Loop over anchors; the denominator skips other rows of the anchor's label."""
    a, b = a.tolist(), b.tolist()
    n = len(a)

    def one_way(p, q):
        total = 0.0
        for i in range(n):
            den = 0.0
            for j in range(n):
                if j != i and labels is not None and labels[i] == labels[j]:
                    continue
                den += math.exp(dot(p[i], q[j]) / t)
            total += -(dot(p[i], q[i]) / t - math.log(den))
        return total / n

    return (one_way(a, b) + one_way(b, a)) / 2


def ref_supcon(z, labels, t):
    """Khosla et al. eq. 2 (L_out), one anchor at a time; anchors without a positive are skipped."""
    z = z.tolist()
    losses = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        den = sum(math.exp(dot(z[i], z[k]) / t) for k in range(len(z)) if k != i)
        losses.append(-sum(dot(z[i], z[p]) / t - math.log(den) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def ref_multi_similarity(z, labels, alpha, beta, base, margin):
    """Wang et al. 2019 eq. 5 with their mining (eq. 3-4), one anchor at a time; the mean over every anchor."""
    z = z.tolist()
    total = 0.0
    for i in range(len(z)):
        s = [dot(z[i], z[j]) for j in range(len(z))]
        pos = [j for j in range(len(z)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(z)) if labels[j] != labels[i]]
        kept_neg = [j for j in neg if pos and s[j] + margin > min(s[p] for p in pos)]
        kept_pos = [j for j in pos if neg and s[j] - margin < max(s[n] for n in neg)]
        total += math.log(1 + sum(math.exp(-alpha * (s[j] - base)) for j in kept_pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s[j] - base)) for j in kept_neg)) / beta
    return total / len(z)


def unit(n, e=6, seed=0):
    return F.normalize(torch.randn(n, e, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("t", [0.07, 0.5])
@pytest.mark.parametrize("labels", [None, [0, 1, 0, 2, 1, 3, 0]])
def test_infonce_matches_loop_reference(t, labels):
    a, b = unit(7, seed=1), unit(7, seed=2)
    got = InfoNCE(temperature=t)(a, b, None if labels is None else torch.tensor(labels))
    assert got.item() == pytest.approx(ref_infonce(a, b, t, labels), rel=1e-5)


def test_infonce_hand_computed():
    eye = torch.eye(2)
    # logits [[1, 0], [0, 1]]: each row's loss is -log(e / (e + 1)) = log(1 + 1/e)
    assert InfoNCE(temperature=1.0)(eye, eye).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # one shared label: no negatives left, each row is certain of its positive
    assert InfoNCE(temperature=1.0)(eye, eye, torch.tensor([5, 5])).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("t", [0.07, 0.3])
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 0, 3], [1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6, 6]])
def test_supcon_matches_loop_reference(t, labels):
    z = unit(8, seed=3)
    got = SupConLoss(temperature=t).pooled(z, torch.tensor(labels))
    assert got.item() == pytest.approx(ref_supcon(z, labels, t), rel=1e-5)


@pytest.mark.parametrize("params", [(2.0, 50.0, 0.5, 0.1), (1.0, 10.0, 0.2, 0.3), (2.0, 40.0, 0.0, 0.0)])
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 0, 3], [1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_multi_similarity_matches_loop_reference(params, labels):
    z = unit(8, seed=3)
    got = MultiSimilarityLoss(*params).pooled(z, torch.tensor(labels))
    assert got.item() == pytest.approx(ref_multi_similarity(z, labels, *params), rel=1e-5, abs=1e-7)


def test_multi_similarity_two_views_and_hand_computed():
    a, b = unit(6, seed=30), unit(6, seed=31)
    loss = MultiSimilarityLoss()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert loss(a, b, labels).item() == pytest.approx(loss.pooled(torch.cat([a, b]), labels.repeat(2)).item())
    assert loss(a, b).item() == pytest.approx(loss.pooled(torch.cat([a, b]), torch.arange(6).repeat(2)).item())
    # two tight, opposite classes: no pair is hard, nothing is mined, nothing to pay
    tight = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    out = loss.pooled(tight, torch.tensor([0, 0, 1, 1]))
    out.backward()
    assert out.item() == 0.0 and torch.equal(tight.grad, torch.zeros_like(tight))
    # anchor 0 (1, 0): positive (0, 1) at s = 0, negative (1, 0) at s = 1; anchor 1: both at s = 0; anchor 2 has no
    # positive, so none of its negatives is mined
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    pos = math.log(1 + math.e) / 2
    want = (pos + math.log(1 + math.exp(25)) / 50 + pos + math.log(1 + math.exp(-25)) / 50) / 3
    assert loss.pooled(z, torch.tensor([0, 0, 1])).item() == pytest.approx(want, rel=1e-6)


def test_supcon_without_positives_is_zero_with_grad():
    z = unit(4, seed=4).requires_grad_()
    loss = SupConLoss(learnable=True).pooled(z, torch.arange(4))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    single = unit(1, seed=5).requires_grad_()
    assert SupConLoss().pooled(single, torch.tensor([3])).item() == 0.0


@pytest.mark.parametrize("name", ["infonce", "supcon"])
def test_learnable_temperature_gets_gradient_and_fixed_does_not(name):
    a, b = unit(6, seed=8), unit(6, seed=9)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    learned = create_loss(name, temperature=0.1, learnable=True)
    loss = learned(a, b, labels)  # one call shape for every loss
    loss.backward()
    assert learned.log_scale.grad is not None and learned.log_scale.grad.abs().item() > 0
    assert learned.temperature == pytest.approx(0.1)
    assert list(create_loss(name).parameters()) == []


def test_learnable_scale_is_clamped():
    loss = InfoNCE(temperature=0.07, learnable=True, max_scale=100.0)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1000.0))
    assert loss.scale.item() == pytest.approx(100.0)
    a, b = unit(4, seed=10), unit(4, seed=11)
    assert loss(a, b).item() == pytest.approx(ref_infonce(a, b, 0.01), rel=1e-5)


def test_aligned_pairs_cost_less_than_shuffled():
    a = unit(16, e=32, seed=12)
    b = F.normalize(a + 0.1 * unit(16, e=32, seed=13), dim=-1)
    shuffled = b[torch.randperm(16, generator=torch.Generator().manual_seed(14))]
    infonce = InfoNCE()
    assert infonce(a, b) < infonce(a, shuffled)
    supcon, labels = SupConLoss(), torch.arange(16).repeat(2)
    assert supcon.pooled(torch.cat([a, b]), labels) < supcon.pooled(torch.cat([a, shuffled]), labels)


def test_gradients_are_finite_with_masked_labels():
    a, b = unit(6, seed=15).requires_grad_(), unit(6, seed=16).requires_grad_()
    InfoNCE(learnable=True)(a, b, torch.tensor([0, 0, 0, 1, 1, 2])).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_registry_and_bad_inputs():
    assert list_losses() == ["infonce", "supcon", "ms"]
    assert isinstance(create_loss("supcon", temperature=0.1), SupConLoss)
    assert isinstance(create_loss("ms", beta=40.0), MultiSimilarityLoss)
    with pytest.raises(SetencError, match="known: infonce, supcon, ms"):
        create_loss("triplet")
    with pytest.raises(SetencError, match="has no option temperature"):
        create_loss("ms", temperature=0.05)
    with pytest.raises(SetencError, match="alpha"):
        MultiSimilarityLoss(alpha=0.0)
    with pytest.raises(SetencError, match="temperature"):
        InfoNCE(temperature=0.0)
    with pytest.raises(SetencError, match="max_scale"):
        InfoNCE(temperature=0.001)
    with pytest.raises(ValueError, match="labels"):
        InfoNCE()(unit(3), unit(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="a and b"):
        InfoNCE()(unit(3), unit(4))


@pytest.mark.parametrize("name", ["infonce", "supcon", "ms"])
def test_every_loss_takes_two_views_and_optional_labels(name):
    a, b = unit(6, seed=20), unit(6, seed=21)
    loss = create_loss(name)
    assert torch.isfinite(loss(a, b)) and torch.isfinite(loss(a, b, torch.tensor([0, 0, 1, 1, 2, 2])))
    if name == "supcon":  # the two-view form is SupCon on both views, each pair sharing its label
        labels = torch.tensor([0, 0, 1, 1, 2, 2])
        assert loss(a, b, labels).item() == pytest.approx(loss.pooled(torch.cat([a, b]), labels.repeat(2)).item())
        assert loss(a, b).item() == pytest.approx(loss.pooled(torch.cat([a, b]), torch.arange(6).repeat(2)).item())
