"""Issue 26, `scripts/evaluate.py` on your own catalogue: held out is decided by what the checkpoint records of its
training articles (ids, photo content) wherever the catalogue lives; a tiny catalogue's grid shows no query as its
own hit and no -inf; the script prints the folder it wrote (default git-ignored); the report says what the methods
are."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, paired_catalog, script_env

FAST = ("--epochs", "2", "--batch_size", "8", "--progress", "false", "--split", "[0.5, 0.0, 0.5]", "--tta", "none")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return script_env(tmp_path_factory.mktemp("edges-eval-cache"))


def run(env, script: str, *args, cwd=REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory) -> tuple[Path, Path]:
    """(the training catalogue, the checkpoint of a run that trained on half of its 24 articles)."""
    pytest.importorskip("pytorch_lightning")
    root = tmp_path_factory.mktemp("edges-eval")
    catalog = paired_catalog(root / "shop", 24, 2, seed=11)
    run(env, "train.py", "--catalog", catalog, "--out", root / "runs", "--run_name", "r", *FAST)
    return catalog, root / "runs" / "r" / "best.pt"


def evaluate(env, checkpoint: Path, catalog: Path, out: Path) -> dict:
    run(env, "evaluate.py", "--checkpoint", checkpoint, "--catalog", catalog, "--out", out, "--no-pictures")
    return json.loads((out / "report.json").read_text())


def test_a_copied_training_catalogue_is_scored_on_its_held_out_part_only(env, trained, tmp_path):
    catalog, ckpt = trained
    trained_on = json.loads((ckpt.parent / "result.json").read_text())["train_articles"]
    home = evaluate(env, ckpt, catalog, tmp_path / "home")
    copy = tmp_path / "elsewhere"  # another folder name: the old check by name saw a catalogue it never trained on
    shutil.copytree(catalog.parent, copy)
    moved = evaluate(env, ckpt, copy / "catalog.jsonl", tmp_path / "moved")
    assert moved["articles"] == home["articles"] == 24 - trained_on
    assert f"test split ({24 - trained_on} of 24 articles held out from training" in moved["split"], moved["split"]
    assert f"{trained_on} overlap the articles the checkpoint(s) trained or validated on ({trained_on} by photo " \
           "content, 0 by id only)" in moved["split"]
    renamed = tmp_path / "renamed"  # new ids, the same photos: still the articles it trained on
    shutil.copytree(catalog.parent, renamed)
    lines = [json.loads(x) for x in (renamed / "catalog.jsonl").read_text().splitlines()]
    (renamed / "catalog.jsonl").write_text("".join(json.dumps({**x, "id": f"new-{x['id']}"}) + "\n" for x in lines))
    assert evaluate(env, ckpt, renamed / "catalog.jsonl", tmp_path / "renamed-rep")["articles"] == 24 - trained_on
    fresh = paired_catalog(tmp_path / "fresh", 24, 2, seed=99)  # other photos, the same ids a0..a23
    report = evaluate(env, ckpt, fresh, tmp_path / "fresh-rep")  # ids may collide: counted apart, never scored
    assert report["articles"] == 24 - trained_on and f"(0 by photo content, {trained_on} by id only)" in report["split"]


def test_report_names_the_learned_head_and_the_matcher_options(env, trained, tmp_path):
    catalog, ckpt = trained
    run(env, "evaluate.py", "--checkpoint", ckpt, "--catalog", catalog, "--out", tmp_path, "--no-pictures")
    md = (tmp_path / "report.md").read_text()
    assert "`proj`: the learned set head of a checkpoint" in md
    assert "`s`: the similarity below which a matched photo pair is not counted; `m`: at most the m best" in md
    assert "`recursive` (a matcher, nothing trained)" in md


def test_evaluate_prints_the_folder_it_wrote_into_a_git_ignored_default(env, tmp_path):
    catalog = paired_catalog(tmp_path / "mine", 6, 2, seed=3)
    proc = run(env, "evaluate.py", "--catalog", catalog, "--protocols", "group", cwd=tmp_path)
    out = tmp_path / "reports" / "local" / "mine"
    assert (out / "report.md").is_file() and "](" in (out / "report.md").read_text()  # the file links its pictures
    assert "wrote reports/local/mine/: report.md, report.json" in proc.stdout, proc.stdout[-2000:]
    assert "![" not in proc.stdout  # no image links on the terminal


def test_default_outputs_are_git_ignored_and_the_committed_reports_are_not():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = lambda path: subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0  # noqa: E731
    assert ignored("reports/local/mine/report.md") and ignored("data/mine/catalog.jsonl")
    assert ignored("exports/demo/manifest.json") and ignored("checkpoints/demo-proj-s0/best.pt")
    assert not ignored("reports/demo/report.md")


def test_a_tiny_catalogue_is_an_anecdote_and_its_grid_shows_no_query_as_its_own_hit(env, tmp_path, monkeypatch):
    catalog = paired_catalog(tmp_path / "two", 2, 2, seed=4)  # one group of two articles: 2 queries, 1 candidate
    grids = []
    import setenc.evaluation.plots as plots

    monkeypatch.setattr(plots, "retrieval_grid", lambda rows, path: grids.append(rows) or Path(path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--catalog", str(catalog), "--out", str(tmp_path / "rep"),
                                      "--protocols", "group"])
    runpy.run_path(str(REPO / "scripts" / "evaluate.py"), run_name="__main__")
    rows = [row for grid in grids for row in grid]
    assert rows, "no retrieval grid drawn"
    for title, _, hits in rows:
        query = title.split(": ", 1)[1]
        assert all(h[0] != query and np.isfinite(h[2]) for h in hits), (title, hits)
    assert "anecdotes" in (tmp_path / "rep" / "report.md").read_text()


def test_an_old_checkpoint_without_the_record_is_judged_as_before_and_says_so(tiny_catalog, fake_backbone):
    from setenc.catalogs import catalog_key, load_catalog, split_catalog
    from setenc.encoder import SetEncoder
    from setenc.evaluation.report import choose_split

    cat = load_catalog(tiny_catalog)
    enc = SetEncoder.parameter_free(fake_backbone)
    enc.training_info = {"catalog": catalog_key(cat), "split": [0.5, 0.25, 0.25], "split_by": "group"}
    test, _, why = choose_split(cat, {"h": enc}, "auto")
    assert test.ids == split_catalog(cat, (0.5, 0.25, 0.25))["test"].ids
    assert "predates the record of its training articles" in why
