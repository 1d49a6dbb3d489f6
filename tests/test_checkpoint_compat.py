"""Checkpoints written before the package move (main a1e04ea, `tests/data/legacy/make_legacy.py`) load and encode
exactly as they did: a user's `best.pt` outlives any reorganisation of the code."""

from pathlib import Path

import numpy as np
import pytest

from setenc.encoder import SetEncoder

LEGACY = Path(__file__).parent / "data" / "legacy"


@pytest.mark.parametrize("name", ["proj-classes", "pma-views", "deepsets-titles"])
def test_legacy_checkpoint_encodes_identically(name):
    want = np.load(LEGACY / "expected.npz")
    sets = [want[f"set{i}"] for i in range(4)]
    enc = SetEncoder.from_pretrained(LEGACY / f"{name}.pt")
    kw = {}
    if name == "pma-views":
        kw["views"] = [str(v).split(",") for v in want["views"]]
    if name == "deepsets-titles":
        kw["titles"] = want["titles"]
    np.testing.assert_allclose(enc.encode_sets(sets, **kw), want[name], atol=1e-6)
    assert enc.head.out_dim == want[name].shape[1]
