"""Issue 26, run folders through `scripts/train.py`: a learned fusion without titles fails before any work, the
default run name tells fusion runs apart, the same command reuses a finished run (or resumes an unfinished one), a
run stopped part-way leaves the finished run beside it whole, the recipe's training-article count is the run's, and
the base install (no Lightning) says which extra to install."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, paired_catalog, script_env

pytest.importorskip("pytorch_lightning")

FAST = ("--epochs", "2", "--batch_size", "8", "--progress", "false", "--split", "[0.5, 0.0, 0.5]", "--tta", "none")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return script_env(tmp_path_factory.mktemp("edges-cache"))


@pytest.fixture(scope="module")
def titled(tmp_path_factory) -> Path:
    """24 articles of 2 tiny photos in 12 groups, each with a title naming its group."""
    path = paired_catalog(tmp_path_factory.mktemp("titled"), 24, 2, seed=7)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**x, "title": f"product {x['group']}"}) + "\n" for x in lines))
    return path


def run(env, script: str, *args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_learned_fusion_without_titles_fails_before_any_work(env, tmp_path):
    catalog = paired_catalog(tmp_path / "cat", 8, 2, seed=1)  # no titles
    proc = run(env, "train.py", "--catalog", catalog, "--out", tmp_path / "runs", "--text", "tfidf", "--fusion",
               "learned", *FAST, ok=False)
    assert proc.returncode == 2 and "train without --text / --fusion" in proc.stderr, proc.stderr
    assert "evaluate it" not in proc.stderr and "[embed]" not in proc.stdout  # the right verb, nothing embedded
    assert not (tmp_path / "runs").exists()  # no half-written run folder refuses the next try


def test_fusion_gets_its_own_folder_and_the_same_command_reuses_a_finished_run(env, titled, tmp_path):
    photos = run(env, "train.py", "--catalog", titled, "--out", tmp_path, *FAST)
    folder = tmp_path / f"{titled.parent.name}-proj-s0"
    best = (folder / "best.pt").read_bytes()
    assert not list(tmp_path.glob("*.unfinished")) and "reusing" not in photos.stdout
    fused = run(env, "train.py", "--catalog", titled, "--out", tmp_path, "--text", "tfidf", "--fusion", "learned",
                *FAST)  # after the photos-only run: a folder of its own, not refused as "other settings"
    fusion_run = tmp_path / f"{titled.parent.name}-proj-tfidf-learned-s0"
    assert (fusion_run / "best.pt").is_file(), fused.stdout
    again = run(env, "train.py", "--catalog", titled, "--out", tmp_path, *FAST)
    assert "holds a finished run with these settings: reusing it" in again.stdout, again.stdout
    assert (folder / "best.pt").read_bytes() == best  # not trained again
    out = run(env, "export.py", "--checkpoint", fusion_run / "best.pt", "--catalog", titled, "--out",
              tmp_path / "export").stdout
    assert "+ titles (tfidf" in out and "learned fusion" in out, out
    ev = run(env, "evaluate.py", "--checkpoint", fusion_run / "best.pt", "--catalog", titled, "--text", "tfidf",
             "--out", tmp_path / "report").stdout
    assert "a learned fusion" in ev and "export its checkpoint as it is" in ev, ev[-2000:]


def test_recipe_counts_the_training_articles_the_run_uses(env, titled, tmp_path):
    proc = run(env, "train.py", "--catalog", titled, "--out", tmp_path, "--run_name", "r", "--progress", "false",
               "--tta", "none", "--epochs", "2")
    said = next(line for line in proc.stdout.splitlines() if line.startswith("[recipe] split="))
    used = json.loads((tmp_path / "r" / "result.json").read_text())["train_articles"]
    assert f": {used} training articles" in said and "~" not in said.split("training articles")[0], said


def last_epoch(ckpt: Path) -> int:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    except Exception:  # noqa: BLE001 -- not there yet
        return -1


@pytest.mark.slow  # ~1 min: a run killed part-way, then the same command
def test_a_run_stopped_part_way_leaves_the_finished_one_whole_and_the_same_command_resumes_it(env, titled, tmp_path):
    args = ["--catalog", titled, "--out", tmp_path, "--run_name", "r", *FAST]
    run(env, "train.py", *args)
    finished = {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.*") if p.is_file()}
    longer = [*args, "--epochs", "400", "--resume"]  # continue the finished run, killed part-way
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *map(str, longer)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "r.unfinished"
    deadline = time.time() + 600
    while last_epoch(work / "last.ckpt") < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 5 <= last_epoch(work / "last.ckpt") < 399
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.*") if p.is_file()} == finished
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "--catalog", str(titled), "--out",
                             str(tmp_path), "--run_name", "v", *FAST[2:], "--epochs", "400"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while last_epoch(tmp_path / "v.unfinished" / "last.ckpt") < 5 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "v" / "best.pt").exists()  # best.pt only once a run has finished
    resumed = run(env, "train.py", "--catalog", titled, "--out", tmp_path, "--run_name", "v", *FAST[2:],
                  "--epochs", "400")
    assert "holds an unfinished run with these settings: resuming it" in resumed.stdout, resumed.stdout
    assert (tmp_path / "v" / "best.pt").is_file() and not (tmp_path / "v.unfinished").exists()


def test_base_install_without_lightning_says_which_extra(env):
    code = ("import sys, runpy; sys.modules['pytorch_lightning'] = None; "
            f"sys.argv = [{str(REPO / 'scripts' / 'train.py')!r}, '--epochs', '1']; "
            f"runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        'error: training needs the [train] extra (pytorch_lightning is not installed): pip install "setenc[train]"'
    ], proc.stderr


def test_one_query_is_one_query():
    from setenc.training.run import summary_lines

    m = {"recall@1": 1.0, "map@r": 1.0}
    lines = "\n".join(summary_lines({"run_dir": "r", "head": "proj", "train_articles": 8, "seconds": 1.0,
                                     "test/group": {**m, "queries": 1}, "test/self": {**m, "queries": 2}}))
    assert "(1 query)" in lines and "(2 queries)" in lines and "(1 queries)" not in lines
