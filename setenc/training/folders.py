"""Run folders: refused when they hold other settings, reused when finished, resumed when not, swapped in whole.

Why: a run stopped part-way used to leave its `last.ckpt` beside an older run's `best.pt`, and the same command
again trained silently over a finished run (issue 26). A run now writes into `<run>.unfinished/`, renamed to `<run>/`
only when it ends, so a `best.pt` is always a finished run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import yaml

from setenc.plumbing.errors import SetencError
from setenc.training.config import TrainConfig

VOLATILE = ("progress", "logger", "fast_dev_run", "out", "run_name", "cache", "accelerator", "devices", "strategy",
            "num_nodes")

UNFINISHED = ".unfinished"  # suffix of the folder a run writes into until it ends


def check_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> dict | None:
    """Refuse a run folder that holds a run with other settings; the finished run's result when it has these settings.

    A finished run of the same settings is reused (its `result.json`), never trained over; `--resume` continues it.
    """
    if resume or not (run_dir / "config.yaml").is_file():
        return None
    changed = changed_settings(run_dir, cfg)
    if changed:
        raise SetencError(f"{run_dir} holds a run with other settings ({'; '.join(changed[:4])}); pass --run_name NAME "
                          "for a new folder, or delete that one")
    done = run_dir / "result.json"
    if cfg.fast_dev_run or not (run_dir / "best.pt").is_file() or not done.is_file():
        return None
    return json.loads(done.read_text())


def changed_settings(run_dir: Path, cfg: TrainConfig) -> list[str]:
    """`key: old -> new` for each setting of `cfg` that differs from the run recorded in `run_dir/config.yaml`."""
    old = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    new = dataclasses.asdict(cfg)
    default = dataclasses.asdict(TrainConfig())  # a key newer than the old run's config: its default
    return [f"{k}: {old.get(k, default[k])!r} -> {new[k]!r}" for k in new
            if k not in VOLATILE and old.get(k, default[k]) != new[k]]


def work_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> tuple[Path, bool]:
    """The folder a run writes into until it ends (`<run>.unfinished`), and whether it resumes from its last.ckpt.

    An unfinished run of the same settings is resumed (said so); one of other settings, or one that saved no epoch,
    starts over. `--resume` on a finished run continues a copy of its last.ckpt, swapped in when it ends. A smoke
    test (`fast_dev_run`) writes no checkpoint, so it writes into the run folder itself.
    """
    if cfg.fast_dev_run:
        return run_dir, resume
    work = run_dir.with_name(run_dir.name + UNFINISHED)
    last = work / "last.ckpt"
    if not first_process():  # data-parallel: process 0 has prepared the folder; follow what it left
        return work, resume or (last.is_file() and not changed_settings(work, cfg))
    if work.is_dir():
        same = (work / "config.yaml").is_file() and not changed_settings(work, cfg)
        if last.is_file() and (resume or same):
            if not resume:
                print(f"[train] {work} holds an unfinished run with these settings: resuming it from its last.ckpt "
                      "(delete that folder to start over)")
            return work, True
        why = "that saved no epoch" if same else "with other settings"
        print(f"[train] {work}: an unfinished run {why}; starting over")
        shutil.rmtree(work)
    if resume and (run_dir / "last.ckpt").is_file():  # continue a finished run: a copy trains, swapped in at the end
        work.mkdir(parents=True)
        shutil.copy2(run_dir / "last.ckpt", last)
    return work, resume


def first_process() -> bool:
    """Process 0 of a data-parallel launch (torchrun, SLURM, Lightning's own launcher), or the only process."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def finish_run(work: Path, run_dir: Path) -> None:
    """Swap the finished run in: an older run in `run_dir` is renamed aside, the new one renamed in, the old removed."""
    if work == run_dir:
        return
    old = run_dir.with_name(run_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        os.rename(run_dir, old)
    os.rename(work, run_dir)
    shutil.rmtree(old, ignore_errors=True)
