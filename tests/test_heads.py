"""Set heads: shape, unit norm, order and padding invariance, empty sets, config round trip, gradient flow."""

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from setenc.plumbing.errors import SetencError
from setenc.heads.model import create_head, list_heads

D = 8
CONFIGS = {
    "mean": [{}],
    "proj": [{}, {"out_dim": 12, "init": "random"}, {"init": "residual", "dropout": 0.1}],
    "deepsets": [{"hidden": 16}, {"hidden": 16, "out_dim": 6, "pool": "sum"}, {"hidden": 16, "skip": True}],
    "pma": [
        {"heads": 2},
        {"heads": 2, "encoder": "sab", "layers": 2, "seeds": 3, "out_dim": 6},
        {"encoder": "isab", "inducing": 3, "layers": 1, "skip": False},
        {"encoder": "sab", "seeds": 3, "dim": 16, "skip": False, "dropout": 0.1},
    ],
}
CASES = [(name, kw) for name, kws in CONFIGS.items() for kw in kws]
IDS = [f"{name}-{i}" for name, kws in CONFIGS.items() for i in range(len(kws))]


def make_head(name, kw, seed=0):
    torch.manual_seed(seed)
    return create_head(name, D, **kw).eval()


def pad(sets, n, garbage=100.0, seed=1):
    """Naive padding: each (n_i, D) set at the front of an n-row block, the rest random garbage."""
    g = torch.Generator().manual_seed(seed)
    x = garbage * torch.randn(len(sets), n, D, generator=g)
    mask = torch.zeros(len(sets), n, dtype=torch.bool)
    for i, s in enumerate(sets):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return x, mask


def random_sets(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, D, generator=g), dim=-1) for n in sizes]


def run(head, sets, n=None, **kw):
    with torch.no_grad():
        return head(*pad(sets, n or max(len(s) for s in sets), **kw))


def test_every_head_is_tested():
    assert sorted(CONFIGS) == sorted(list_heads())


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_shape_norm_and_no_nan(name, kw):
    head = make_head(name, kw)
    out = run(head, random_sets([1, 3, 5, 2]), n=7)
    assert out.shape == (4, head.out_dim)
    assert head.out_dim == kw.get("out_dim", D)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_permutation_invariance(name, kw):
    head = make_head(name, kw)
    (s,) = random_sets([6])
    ref = run(head, [s])
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run(head, [s[perm]]), ref, atol=1e-5, rtol=0)
    # padding interleaved with the real photos, not only at the end
    x, mask = pad([s], 10)
    slots = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(head(x[:, slots], mask[:, slots]), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_padding_never_leaks(name, kw):
    head = make_head(name, kw)
    sets = random_sets([3])
    ref = run(head, sets)
    for n, garbage, seed in [(4, 1.0, 1), (9, 1e4, 2), (16, -50.0, 3), (5, float("nan"), 4), (6, float("inf"), 5)]:
        torch.testing.assert_close(run(head, sets, n=n, garbage=garbage, seed=seed), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_mixed_sizes_equal_each_set_alone(name, kw):
    head = make_head(name, kw)
    sets = random_sets([1, 4, 2, 7, 3])
    batch = run(head, sets, n=8)
    for i, s in enumerate(sets):
        torch.testing.assert_close(batch[i], run(head, [s])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_single_photo_sets(name, kw):
    head = make_head(name, kw)
    out = run(head, random_sets([1, 1, 1]), n=1)
    assert out.shape == (3, head.out_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_empty_set_raises(name, kw):
    head = make_head(name, kw)
    x, mask = pad(random_sets([2, 3, 1]), 3)
    mask[1] = False
    with pytest.raises(ValueError, match="empty set at batch index 1"):
        head(x, mask)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_config_round_trip(name, kw):
    head = make_head(name, kw)
    config = json.loads(json.dumps(head.config))  # plain values only
    assert config == head.config and config["name"] == name and config["in_dim"] == D
    torch.manual_seed(123)
    rebuilt = create_head(**config).eval()
    rebuilt.load_state_dict(head.state_dict())
    sets = random_sets([2, 5])
    assert type(rebuilt) is type(head)
    torch.testing.assert_close(run(rebuilt, sets), run(head, sets), atol=0, rtol=0)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_init_is_deterministic(name, kw):
    a, b = make_head(name, kw, seed=7), make_head(name, kw, seed=7)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("name,kw", [c for c in CASES if c[0] != "mean"], ids=[i for i in IDS if i[:4] != "mean"])
def test_gradients_reach_every_parameter(name, kw):
    head = make_head(name, {**kw, "dropout": 0.0}).train()
    before = {k: p.detach().clone() for k, p in head.named_parameters()}
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    x, mask = pad(random_sets([1, 4, 2]), 5, garbage=1e3)
    target = F.normalize(torch.randn(3, head.out_dim, generator=torch.Generator().manual_seed(5)), dim=-1)
    for _ in range(3):  # zero-initialised output layers pass gradient on from the second step
        opt.zero_grad()
        loss = -(head(x, mask) * target).sum()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in head.parameters())
        opt.step()
    unchanged = [k for k, p in head.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged


def test_untrained_heads_start_at_mean_pooling():
    sets = random_sets([1, 4, 3])
    ref = torch.stack([F.normalize(s.mean(0), dim=0) for s in sets])  # hand-computed mean pooling
    for name, kw in [("mean", {}), ("proj", {}), ("proj", {"init": "residual"}), ("pma", {"encoder": "sab"}),
                     ("deepsets", {"hidden": 16, "skip": True})]:
        torch.testing.assert_close(run(make_head(name, kw), sets, n=6), ref, atol=1e-6, rtol=0)
    # a widening identity init preserves cosines between articles, so retrieval starts where mean pooling is
    for name, kw in [("proj", {}), ("pma", {}), ("deepsets", {"skip": True})]:
        wide = run(make_head(name, {"out_dim": 20, **kw}), sets, n=6)
        torch.testing.assert_close(wide @ wide.T, ref @ ref.T, atol=1e-5, rtol=0)


def test_proj_mean_weight_blends_with_mean_pooling_at_inference_only():
    """Naive reference: eval output = normalise(normalise(W m + b) + beta * normalise(m)); train output = W m + b."""
    sets = random_sets([1, 4, 3])
    head = make_head("proj", {"init": "random", "mean_weight": 0.7})
    x, mask = pad(sets, 6)
    with torch.no_grad():
        m = torch.stack([s.mean(0) for s in sets])
        learned = F.normalize(head.pooling.proj(m), dim=-1)
        blended = F.normalize(learned + 0.7 * F.normalize(m, dim=-1), dim=-1)
        torch.testing.assert_close(head.eval()(x, mask), blended, atol=1e-6, rtol=0)
        torch.testing.assert_close(head.train()(x, mask), learned, atol=1e-6, rtol=0)
    plain = make_head("proj", {"init": "random"})
    plain.load_state_dict(head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x, mask), learned, atol=1e-6, rtol=0)  # weight 0: the map alone
    assert create_head(**head.config).pooling.mean_weight == 0.7  # recorded in the config checkpoints store


def test_pma_train_and_eval_paths_agree():
    """nn.MultiheadAttention takes a different (nested-tensor) path in eval mode; results must not differ."""
    head = make_head("pma", {"encoder": "sab", "seeds": 3, "skip": False})
    x, mask = pad(random_sets([1, 4, 2]), 6)
    with torch.no_grad():
        ev = head.eval()(x, mask)
        tr = head.train()(x, mask)
    torch.testing.assert_close(tr, ev, atol=1e-5, rtol=0)


def test_bad_inputs_and_options():
    with pytest.raises(SetencError, match="known: mean"):
        create_head("nope", D)
    with pytest.raises(SetencError, match="no option hidden"):
        create_head("proj", D, hidden=3)
    with pytest.raises(SetencError, match="encoder='transformer'"):
        create_head("pma", D, encoder="transformer")
    with pytest.raises(SetencError, match="divisible"):
        create_head("pma", D, heads=3)
    with pytest.raises(SetencError, match="residual"):
        create_head("proj", D, out_dim=4, init="residual")
    with pytest.raises(SetencError, match="mean_weight"):
        create_head("proj", D, out_dim=4, mean_weight=1.0)
    with pytest.raises(SetencError, match="mean_weight"):
        create_head("proj", D, mean_weight=-1.0)
    head = create_head("mean", D)
    with pytest.raises(ValueError, match="4-d"):
        head(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        head(torch.randn(2, 3, D), torch.ones(2, 3))


PROPERTY_HEADS = {}


def property_head(name, kw):
    key = (name, json.dumps(kw, sort_keys=True))
    if key not in PROPERTY_HEADS:
        PROPERTY_HEADS[key] = make_head(name, kw)
    return PROPERTY_HEADS[key]


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    which=st.sampled_from([("pma", {"encoder": "sab", "seeds": 3, "heads": 2}),
                           ("pma", {"encoder": "isab", "inducing": 2, "skip": False}),
                           ("deepsets", {"pool": "sum"})]),
)
def test_property_order_and_batch_composition(sizes, extra, seed, which):
    head = property_head(*which)
    sets = random_sets(sizes, seed=seed)
    batch = run(head, sets, n=max(sizes) + extra, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for i, s in enumerate(sets):
        shuffled = s[torch.randperm(len(s), generator=g)]
        torch.testing.assert_close(run(head, [shuffled])[0], batch[i], atol=1e-5, rtol=0)
