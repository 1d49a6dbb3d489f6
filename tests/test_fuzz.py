"""Hypothesis: random set sizes, masks, padding and photo orders through every head and every matcher.

Whatever the input: no NaN, the output does not depend on photo order or on what sits in the padding, head
vectors are unit-length and matcher scores are cosines in [-1, 1].
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from setenc.heads.model import create_head, list_heads
from setenc.matching.matchers import create_matcher, list_matchers

D = 8
FUZZ = settings(max_examples=30, deadline=None)


@st.composite
def padded_sets(draw, max_b: int = 4, max_n: int = 6):
    """(x (B, N, D) unit rows, mask (B, N) with >= 1 photo a row, views (B, N) in -1..2, a seed)."""
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    sizes = draw(st.lists(st.integers(1, n), min_size=b, max_size=b))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, n, D, generator=g), dim=-1)
    if draw(st.booleans()):  # near-duplicate photos: the degenerate case for attention and assignment
        x = torch.nn.functional.normalize(x[:, :1] + 1e-6 * torch.randn(b, n, D, generator=g), dim=-1)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate(sizes):
        mask[i, torch.randperm(n, generator=g)[:k]] = True  # real photos anywhere, not only at the front
    views = torch.randint(-1, 3, (b, n), generator=g)
    return x, mask, views, seed


def _shuffle(x, mask, views, seed):
    """Each set's positions permuted, and garbage (large, non-unit) written into the padding."""
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.stack([torch.randperm(x.shape[1], generator=g) for _ in range(len(x))])  # (B, N)
    xs = torch.gather(x, 1, perm[..., None].expand_as(x)).clone()
    ms, vs = torch.gather(mask, 1, perm), torch.gather(views, 1, perm)
    xs[~ms] = 1e3 * torch.randn(int((~ms).sum()), x.shape[2], generator=g)
    return xs, ms, vs


def _head(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_head(name, D).eval()


HEADS = {name: _head(name) for name in list_heads()}


@pytest.mark.parametrize("name", list_heads())
@FUZZ
@given(data=padded_sets())
def test_heads_finite_unit_and_permutation_invariant(name, data):
    x, mask, views, seed = data
    head = HEADS[name]
    with torch.no_grad():
        z = head(x, mask)  # (B, E)
        zs = head(*_shuffle(x, mask, views, seed)[:2])
        one = torch.cat([head(x[i : i + 1], mask[i : i + 1]) for i in range(len(x))])  # no leakage across the batch
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(len(z)), atol=1e-4, rtol=0)
    torch.testing.assert_close(zs, z, atol=1e-4, rtol=0)
    torch.testing.assert_close(one, z, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list_matchers())
@FUZZ
@given(q=padded_sets(max_b=3), g=padded_sets(max_b=3))
def test_matchers_finite_bounded_and_permutation_invariant(name, q, g):
    matcher = create_matcher(name)
    qx, qm, qv, qseed = q
    gx, gm, gv, gseed = g
    scores = matcher.score_sets(qx, qm, gx, gm, qv, gv)  # (Q, G)
    assert scores.shape == (len(qx), len(gx)) and torch.isfinite(scores).all()
    assert (scores.abs() <= 1 + 1e-5).all(), scores
    sq, sg = _shuffle(qx, qm, qv, qseed), _shuffle(gx, gm, gv, gseed)
    shuffled = matcher.score_sets(sq[0], sq[1], sg[0], sg[1], sq[2], sg[2])
    torch.testing.assert_close(shuffled, scores, atol=1e-4, rtol=0)
