"""Checkpoints describe themselves, load without Lightning, refuse the wrong backbone and pickle payloads."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from setenc.plumbing.errors import CheckpointError
from setenc.heads.model import create_head
from setenc.encoder import SetEncoder


def _encoder(head="pma", dim=8):
    torch.manual_seed(0)
    return SetEncoder(create_head(head, dim, **({"heads": 2} if head == "pma" else {})),
                      {"name": "fake", "kwargs": {}, "id": "fake:v1"}, dim, training={"catalog": "c:1"})


def _sets(rng, n=5, d=8):
    return [rng.normal(size=(int(rng.integers(1, 5)), d)).astype(np.float32) for _ in range(n)]


def test_save_load_gives_identical_outputs(tmp_path):
    enc = _encoder()
    sets = _sets(np.random.default_rng(0))
    path = enc.save(tmp_path / "best.pt")
    again = SetEncoder.from_pretrained(path)
    np.testing.assert_array_equal(enc.eval().encode_sets(sets), again.encode_sets(sets))
    assert again.backbone_spec["id"] == "fake:v1" and again.training_info == {"catalog": "c:1"}
    assert len(again.checkpoint_sha256) == 64


def test_wrong_backbone_is_refused(tmp_path, fake_backbone):
    enc = SetEncoder.from_pretrained(_encoder(dim=8).save(tmp_path / "a.pt"))
    enc.set_backbone(fake_backbone)  # same id and dim: fine
    fake_backbone.id = "other:v2"
    with pytest.raises(CheckpointError, match="trained on backbone fake:v1"):
        enc.set_backbone(fake_backbone)
    with pytest.raises(CheckpointError, match="16-d"):
        enc.encode_embeddings(torch.zeros(1, 2, 16), torch.ones(1, 2, dtype=torch.bool))


def test_encode_photo_sets_matches_cached_path(tmp_path, fake_backbone):
    from conftest import write_photos

    photos = write_photos(tmp_path / "img", 5)
    enc = SetEncoder.parameter_free(fake_backbone)
    out = enc.encode([photos[:2], photos[2:]])
    vecs = enc.embed_photos(photos)
    np.testing.assert_allclose(out, enc.encode_sets([vecs[:2], vecs[2:]]), atol=1e-6)
    assert out.shape == (2, 8) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="photo set 1 is empty"):
        enc.encode([photos[:1], []])


def test_truncated_and_pickle_checkpoints_are_refused(tmp_path):
    path = _encoder().save(tmp_path / "best.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        SetEncoder.from_pretrained(tmp_path / "cut.pt")

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "setenc-head-v1", "x": Payload()}, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only"):
        SetEncoder.from_pretrained(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not found"):
        SetEncoder.from_pretrained(tmp_path / "missing.pt")


def test_inference_does_not_import_lightning(tmp_path):
    path = _encoder().save(tmp_path / "best.pt")
    code = ("import sys, numpy as np; from setenc.encoder import SetEncoder; "
            f"e = SetEncoder.from_pretrained({str(path)!r}); "
            "print(e.encode_sets([np.ones((2, 8), np.float32)]).shape); "
            "assert 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 8)" in out.stdout


def test_checkpoint_from_before_the_num_heads_rename_loads(tmp_path):
    """PMA's attention-head count was called `heads`; checkpoints that say so still load, same weights."""
    enc = SetEncoder(create_head("pma", 8, dim=8, num_heads=2).eval(), {"name": "fake", "kwargs": {}, "id": "fake:v1"}, 8)
    blob = enc.state()
    blob["head"] = {("heads" if k == "num_heads" else k): v for k, v in blob["head"].items()}
    torch.save(blob, tmp_path / "old.pt")
    old = SetEncoder.from_pretrained(tmp_path / "old.pt")
    assert old.head.config["num_heads"] == 2 and "heads" not in old.head.config
    x, mask = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
    torch.testing.assert_close(old.encode_embeddings(x, mask), enc.encode_embeddings(x, mask))


def test_encode_refuses_a_flat_list_of_photos(tmp_path, fake_backbone):
    from conftest import write_photos

    from setenc.plumbing.errors import SetencError

    photos = write_photos(tmp_path / "img", 2)
    enc = SetEncoder.parameter_free(fake_backbone)
    for flat in ([str(p) for p in photos], photos, str(photos[0])):
        with pytest.raises(SetencError, match=r"list of photo SETS.*encode\(\[\[photo1"):
            enc.encode(flat)
    assert enc.encode([photos]).shape == (1, 8)
