"""Same product or not, end to end (issue 27): a calibrated checkpoint through scripts/match.py, SetIndex.matches,
the service's /articles/{a}/match/{b}, scripts/search.py --explain, and a training run that fits the calibration."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest

from conftest import REPO, paired_catalog
from setenc.catalogs import load_catalog
from setenc.encoder import SetEncoder
from setenc.matching.calibration import fit_catalog
from setenc.matching.explain import photo_pairs
from setenc.photos import photo_sets
from setenc.search.export import export_index
from setenc.search.index import SetIndex

from test_index import colour_catalog


@pytest.fixture
def calibrated(fake_backbone, tmp_path, monkeypatch):
    """A mean-pooling checkpoint calibrated on a 40-article colour catalogue, saved and loaded back."""
    monkeypatch.setattr("setenc.photos.create_backbone", lambda *a, **kw: fake_backbone)
    cat_path = colour_catalog(tmp_path, 40, groups=8)
    catalog = load_catalog(cat_path)
    encoder = SetEncoder.parameter_free(fake_backbone)
    sets, kept, _, _ = photo_sets(catalog, fake_backbone, tmp_path / "cache", progress=False)
    encoder.calibration = fit_catalog(encoder.encode_sets(sets), kept, products=True, fitted_on="test")
    ckpt = encoder.save(tmp_path / "best.pt")
    loaded = SetEncoder.from_pretrained(ckpt)
    assert loaded.calibration.state() == encoder.calibration.state()
    return loaded, cat_path, ckpt


def run_script(monkeypatch, name: str, *args) -> None:
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(REPO / "scripts" / name), run_name="__main__")


def test_match_script_writes_clusters_and_report(calibrated, tmp_path, monkeypatch, capsys):
    encoder, cat_path, ckpt = calibrated
    out = tmp_path / "dedup"
    out.mkdir()
    (out / "stale.txt").write_text("an older run")
    run_script(monkeypatch, "match.py", "--checkpoint", ckpt, "--catalog", cat_path, "--out", out,
               "--cache", tmp_path / "cache", "--precision", "0.8")
    lines = [json.loads(x) for x in (out / "clusters.jsonl").read_text().splitlines()]
    ids = [i for line in lines for i in line["ids"]]
    assert sorted(ids) == sorted(f"a{i}" for i in range(40))  # every article in exactly one cluster
    assert [x["cluster"] for x in lines] == list(range(len(lines)))
    assert all((x["min_probability"] is None) == (len(x["ids"]) == 1) for x in lines)
    report = json.loads((out / "report.json").read_text())
    whole = report["whole_catalogue"]
    assert 0 <= whole["precision"] <= 1 and 0 <= whole["recall"] <= 1
    assert {"head", "mean pooling"} <= set(report["heldout"]["methods"])
    assert any(k.startswith("best matcher") for k in report["heldout"]["methods"])
    assert "pairwise precision" in (out / "report.md").read_text() and not (out / "stale.txt").exists()
    assert "wrote" in capsys.readouterr().out


def test_match_script_crash_leaves_the_old_folder(calibrated, tmp_path, monkeypatch):
    encoder, cat_path, ckpt = calibrated
    out = tmp_path / "dedup"
    out.mkdir()
    (out / "clusters.jsonl").write_text("old\n")

    def boom(report):
        raise RuntimeError("crash while writing")

    monkeypatch.setattr("setenc.matching.dedup.markdown", boom)
    with pytest.raises(RuntimeError):
        run_script(monkeypatch, "match.py", "--checkpoint", ckpt, "--catalog", cat_path, "--out", out,
                   "--cache", tmp_path / "cache", "--no-compare")
    assert (out / "clusters.jsonl").read_text() == "old\n"
    assert not list(tmp_path.glob(".dedup.tmp-*"))


def test_match_script_refuses_an_uncalibrated_checkpoint(fake_backbone, tmp_path, monkeypatch, capsys):
    ckpt = SetEncoder.parameter_free(fake_backbone).save(tmp_path / "plain.pt")
    with pytest.raises(SystemExit) as e:
        run_script(monkeypatch, "match.py", "--checkpoint", ckpt, "--catalog", colour_catalog(tmp_path, 6),
                   "--out", tmp_path / "o")
    assert e.value.code == 2 and "no calibration" in capsys.readouterr().err


def _export(encoder, cat_path, tmp_path) -> SetIndex:
    export_index(encoder, cat_path, tmp_path / "cache", tmp_path / "idx", progress=False)
    return SetIndex.load(tmp_path / "idx", encoder)


def test_matches_equal_brute_force_and_pair_explains(calibrated, tmp_path):
    encoder, cat_path, _ = calibrated
    index = _export(encoder, cat_path, tmp_path)
    vecs = np.asarray(index.vectors, np.float32)
    cal = encoder.calibration
    for p in (0.3, 0.6, 0.9):
        got = index.matches(vecs[3], min_probability=p)
        probs = cal.probability(vecs @ vecs[3], len(index))
        want = {index.ids[r] for r in np.flatnonzero(probs >= p - 1e-9)}
        assert {i for i, _, _ in got} == want
        assert all(q >= p - 1e-9 for _, q, _ in got) and [s for *_, s in got] == sorted((s for *_, s in got),
                                                                                           reverse=True)
    same = encoder.same(index.article_photos("a0"), index.article_photos("a5"), articles=len(index))
    pair = index.pair("a0", "a5")
    assert pair["probability"] == pytest.approx(same, abs=1e-5)
    want = photo_pairs(index.article_photos("a0"), index.article_photos("a5"))
    assert [(p["a"], p["b"]) for p in pair["pairs"]] == [(p.a, p.b) for p in want]


def test_service_match_endpoint(calibrated, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from setenc.search.service import create_app

    encoder, cat_path, _ = calibrated
    index = _export(encoder, cat_path, tmp_path)
    client = TestClient(create_app(index))
    body = client.get("/articles/a0/match/a5").json()
    assert body["probability"] == pytest.approx(index.pair("a0", "a5")["probability"])
    assert body["pairs"] and {"a", "b", "cosine"} == set(body["pairs"][0])
    chamfer = client.get("/articles/a0/match/a5", params={"how": "chamfer"})
    assert chamfer.status_code == 200
    missing = client.get("/articles/a0/match/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert client.get("/articles/a0/match/a5", params={"how": "best"}).status_code == 400


def test_service_match_takes_ids_with_slashes(fake_backbone, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from setenc.search.service import create_app

    lines = [json.loads(x) for x in colour_catalog(tmp_path, 6).read_text().splitlines()]
    for x in lines:
        x["id"] = f"shop/{x['id']}"
    (tmp_path / "slash.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    index = _export(SetEncoder.parameter_free(fake_backbone), tmp_path / "slash.jsonl", tmp_path)
    body = TestClient(create_app(index)).get("/articles/shop/a0/match/shop/a3").json()
    assert body["a"] == "shop/a0" and body["b"] == "shop/a3" and body["probability"] is None


def test_search_explain_prints_pairs(calibrated, tmp_path, monkeypatch, capsys):
    encoder, cat_path, ckpt = calibrated
    _export(encoder, cat_path, tmp_path)
    run_script(monkeypatch, "search.py", tmp_path / "idx", "--id", "a0", "-k", "2", "--explain", "--checkpoint",
               ckpt, "--png", tmp_path / "grid.png")
    out = capsys.readouterr().out
    assert out.count("P(same)") == 2 and "photo pairs" in out
    assert (tmp_path / "grid-pairs.png").stat().st_size > 0


def test_training_run_records_a_calibration(tmp_path, fake_backbone, monkeypatch):
    pytest.importorskip("pytorch_lightning")
    from setenc.training import run
    from setenc.training.config import load_config

    monkeypatch.setattr(run, "create_backbone", lambda *a, **kw: fake_backbone)
    catalog = paired_catalog(tmp_path / "cat", 40, 2, seed=3)
    cfg = load_config(None, {"catalog": str(catalog), "out": str(tmp_path / "runs"), "run_name": "r", "epochs": 2,
                             "batch_size": 8, "progress": False, "logger": "none", "cache": str(tmp_path / "cache"),
                             "split": [0.5, 0.0, 0.5], "backbone": "efficientnet-lite0", "tta": "none"})
    result = run.train(cfg)
    assert result["calibration"]["fitted_on"].startswith("test split")
    encoder = SetEncoder.from_pretrained(tmp_path / "runs" / "r" / "best.pt")
    assert encoder.calibration is not None and encoder.calibration.products
    assert 0.0 <= encoder.same(np.eye(8, dtype=np.float32)[:2], np.eye(8, dtype=np.float32)[1:3]) <= 1.0


def test_evaluation_report_shows_the_calibration(calibrated, fake_backbone, tmp_path):
    from setenc.evaluation.report import evaluate_catalog

    encoder, cat_path, _ = calibrated
    report = evaluate_catalog(load_catalog(cat_path), fake_backbone, tmp_path / "cache", {"calibrated": encoder},
                              matchers=["mean"], protocols=["group"], out_dir=tmp_path / "eval", progress=False,
                              pictures=False)
    check = report["calibration"]["calibrated"]
    assert 0 <= check["ece_scored"] <= 1 and set(check["thresholds"]) == {"0.8", "0.9", "0.95"}
    assert (tmp_path / "eval" / check["png"]).stat().st_size > 0
    assert "carries a calibration" in (tmp_path / "eval" / "report.md").read_text()
