"""A user's first run on their own small catalogue, through the real scripts: every mistake is one line and exit
status 2 before any long work, nothing is silently empty or mislabelled, every bad photo is named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, paired_catalog, script_env
from setenc.catalogs import load_catalog, split_catalog

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return script_env(tmp_path_factory.mktemp("first-run-cache"))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """5 products, 2 articles of 2 photos each; the last article has a corrupt photo beside a good one."""
    path = paired_catalog(tmp_path_factory.mktemp("small"), 10, 2, seed=11)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    (path.parent / "img" / "broken.jpg").write_bytes(b"not a jpeg at all")
    lines[-1]["images"].append("img/broken.jpg")
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def run(script: str, *args, env: dict, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def fold_with_test_groups(catalog: Path, fractions, n_groups: int) -> int:
    """A split seed whose test split holds exactly `n_groups` groups of this catalogue."""
    cat = load_catalog(catalog, check_files=False)
    for seed in range(500):
        test = split_catalog(cat, fractions, "group", seed)["test"]
        if len({a.group for a in test}) == n_groups:
            return seed
    raise AssertionError("no such fold")


@pytest.mark.parametrize("flag, value, words", [
    ("--head", "pmaa", ["unknown head 'pmaa'", "proj"]),
    ("--loss", "triplet", ["unknown loss 'triplet'", "infonce"]),
    ("--backbone", "resnet-9000", ["unknown backbone 'resnet-9000'", "efficientnet-lite0"]),
    ("--split", "[0.5, 0.5]", ["three non-negative fractions"]),
    ("--head_kwargs.hidden", "64", ["head 'proj' has no option hidden"]),
])
def test_train_refuses_bad_names_and_values_before_any_work(small, env, tmp_path, flag, value, words):
    proc = run("train.py", "--catalog", small, "--out", tmp_path, flag, value, env=env)
    one_line_error(proc, *words)
    assert "[embed]" not in proc.stdout and not (Path(env["SETENC_CACHE"]) / "embeddings").exists()


def test_evaluate_refuses_unknown_names_before_embedding(small, env, tmp_path):
    one_line_error(run("evaluate.py", "--catalog", small, "--out", tmp_path, "--matchers", "hungarian", env=env),
                   "unknown matcher 'hungarian'", "recursive")
    one_line_error(run("evaluate.py", "--catalog", small, "--out", tmp_path, "--protocols", "groups", env=env),
                   "unknown protocol")
    assert not (Path(env["SETENC_CACHE"]) / "embeddings").exists()


def test_missing_clip_model_is_one_line_naming_the_flag_before_the_demo_is_built(env, tmp_path):
    proc = run("train.py", "--config", REPO / "configs" / "clip.yaml", "--catalog", "demo",
               "--backbone_kwargs.model", tmp_path / "no-clip-here", "--out", tmp_path, env=env)
    one_line_error(proc, "folder not found", "--backbone_kwargs.model DIR")
    assert not (Path(env["SETENC_CACHE"]) / "demo").exists()


def test_small_catalogue_with_empty_test_split_warns_and_evaluate_explains(small, env, tmp_path):
    fold = fold_with_test_groups(small, (0.7, 0.0, 0.3), 0)
    proc = run("train.py", "--catalog", small, "--out", tmp_path, "--split", "[0.7, 0.0, 0.3]", "--split_seed", fold,
               "--epochs", 2, "--progress", "false", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: the test split (0 articles) supports no retrieval protocol" in proc.stderr
    assert "no held-out test metrics" in proc.stdout
    assert f"skipped: {small.parent / 'img' / 'broken.jpg'}:" in proc.stdout  # the bad photo, named
    for noise in ("GPU available", "Tip", "exists and is not empty", "LeafSpec"):
        assert noise not in proc.stdout + proc.stderr, noise
    ckpt = tmp_path / f"{small.parent.name}-proj-s0" / "best.pt"
    one_line_error(run("evaluate.py", "--checkpoint", ckpt, "--catalog", small, "--out", tmp_path / "rep", env=env),
                   "the test split holds no article", "--split all")
    rep = run("evaluate.py", "--checkpoint", ckpt, "--catalog", small, "--out", tmp_path / "all", "--split", "all",
              env=env)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "INCLUDING the 10 articles the head trained or validated on" in rep.stdout
    assert "skipped: " in rep.stdout and "broken.jpg" in rep.stdout


def test_evaluate_on_two_test_articles_writes_a_report_and_no_map(small, env, tmp_path):
    fold = fold_with_test_groups(small, (0.7, 0.0, 0.3), 1)
    proc = run("train.py", "--catalog", small, "--out", tmp_path, "--split", "[0.7, 0.0, 0.3]", "--split_seed", fold,
               "--epochs", 2, "--progress", "false", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / f"{small.parent.name}-proj-s0" / "best.pt"
    rep = run("evaluate.py", "--checkpoint", ckpt, "--catalog", small, "--out", tmp_path / "rep", env=env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "articles: 2 (test split" in md and "| group | proj |" in md and "- `group`: each query" in md
    assert not (tmp_path / "rep" / "embedding_map.png").exists()
    assert "s=None: no threshold (every match counts)" in md or "defaults" in md
    # a second run with other settings must not overwrite this one
    again = run("train.py", "--catalog", small, "--out", tmp_path, "--split", "[0.7, 0.0, 0.3]", "--split_seed", fold,
                "--epochs", 3, "--progress", "false", env=env)
    one_line_error(again, "holds a run with other settings", "epochs: 2 -> 3", "--run_name")


def test_all_data_checkpoint_on_its_own_catalogue_is_explained(small, env, tmp_path):
    proc = run("train.py", "--catalog", small, "--out", tmp_path, "--split", "[1.0, 0.0, 0.0]", "--epochs", 2,
               "--progress", "false", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / f"{small.parent.name}-proj-s0" / "best.pt"
    one_line_error(run("evaluate.py", "--checkpoint", ckpt, "--catalog", small, "--out", tmp_path / "r", env=env),
                   "holds no article", "split [1.0, 0.0, 0.0]")
    exp = run("export.py", "--checkpoint", ckpt, "--catalog", small, "--out", tmp_path / "exp", env=env)
    assert exp.returncode == 0 and "skipped: " in exp.stdout and "broken.jpg" in exp.stdout, exp.stderr[-2000:]


def test_help_does_not_import_torch():
    code = ("import runpy, sys\nsys.argv = ['train.py', '--help']\n"
            f"try:\n    runpy.run_path({str(REPO / 'scripts' / 'train.py')!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported for --help'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--head_kwargs" in proc.stdout or "--lr" in proc.stdout
