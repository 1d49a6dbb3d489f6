"""Heads × folds × seeds on one catalogue, beside the parameter-free matchers on exactly the same test articles.

One held-out number is noise (a grocery fold has a few hundred queries of ~20 products), so every method is
run on several product folds (`split_seed`) and, for learned heads, several seeds; the table reports
mean ± std over all runs. A matcher has no seed: it runs once per fold, its `s` / `m` tuned on the fold's
validation articles (the training articles when there is no validation split), never on the test articles.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from setenc.matching.matchers import list_matchers
from setenc.training.config import TrainConfig, load_config


def _top_level_items(text: str) -> list[str]:
    """Split on commas outside [...] / {...}, so a value may be a YAML list: `split=[0.7,0.0,0.3],lr=1e-3`."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def parse_spec(spec: str) -> tuple[str, dict]:
    """`"pma:lr=1e-3,head_kwargs.dim=256"` -> ("pma", {"head": "pma", "lr": 0.001, "head_kwargs.dim": 256}).

    Values are YAML, so lists work too: `"proj:split=[0.7,0.0,0.3]"`.
    """
    name, _, rest = spec.partition(":")
    overrides: dict = {"head": name}
    for item in _top_level_items(rest):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"head spec {spec!r}: {item!r} is not key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def _run_config(config: str | None, overrides: dict, fold: int, seed: int, out: str) -> TrainConfig:
    return load_config(config, {**overrides, "split_seed": fold, "seed": seed, "out": out,
                                "run_name": f"f{fold}-s{seed}", "progress": False, "logger": "none"})


def matcher_rows(cfg: TrainConfig, matchers: Sequence[str], protocol: str = "group") -> list[dict]:
    """Test-split metrics of the parameter-free matchers for the fold `cfg.split_seed`, tuned off the test split."""
    from setenc.evaluation.report import evaluate_sets
    from setenc.evaluation.tuning import tunable_matchers, tune_matchers
    from setenc.training.run import load_training_data

    data, _, _ = load_training_data(cfg)  # applies the recipe: the split the heads of this fold get
    tune_on = data["val"] if len(data["val"][0]) else data["train"]
    tuned = tune_matchers(*tune_on, names=matchers) if tunable_matchers(matchers) else {}
    t0 = time.perf_counter()
    rows, _ = evaluate_sets(*data["test"], {}, matchers, (protocol,), tuned)
    seconds = time.perf_counter() - t0
    return [{**r, "seconds": 0.0, "eval_seconds": round(seconds, 2)} for r in rows]


def head_row(cfg: TrainConfig, protocol: str = "group") -> dict:
    """Train one head (`setenc.training.train`) and return its test metrics and wall-clock seconds."""
    from setenc.training.run import train

    result = train(cfg)
    m = result.get(f"test/{protocol}")
    if m is None:
        raise ValueError(f"{cfg.catalog}: the test split has no {protocol!r} protocol; use more test articles")
    return {"recall@1": m["recall@1"], "map@r": m["map@r"], "queries": m["queries"], "seconds": result["seconds"]}


def run_sweep(config: str | None, heads: Sequence[str], folds: Sequence[int], seeds: Sequence[int],
              matchers: Sequence[str] | None = None, overrides: dict | None = None, protocol: str = "group",
              out: str | None = None, log=print) -> list[dict]:
    """Records `{method, fold, seed, recall@1, map@r, seconds}`: matchers once per fold, heads per fold and seed.

    `matchers=None`: every matcher; one that needs view tags (`ordered`) only where every test article has them.
    """
    records = []
    matchers = list_matchers() if matchers is None else matchers
    out = out or tempfile.mkdtemp(prefix="setenc-sweep-")
    for fold in folds:
        base = _run_config(config, dict(overrides or {}), fold, seeds[0], out)
        for r in matcher_rows(base, matchers, protocol) if matchers else []:
            records.append({"method": r["method"], "fold": fold, "seed": None, "recall@1": r["recall@1"],
                            "map@r": r["map@r"], "queries": r["queries"], "seconds": 0.0})
            log(_line(records[-1]))
        for spec in heads:
            _, head_over = parse_spec(spec)
            for seed in seeds:
                cfg = _run_config(config, {**(overrides or {}), **head_over}, fold, seed,
                                  str(Path(out) / spec.replace(":", "_").replace(",", "_")))
                records.append({"method": spec, "fold": fold, "seed": seed, **head_row(cfg, protocol)})
                log(_line(records[-1]))
    return records


def _line(r: dict) -> str:
    return (f"[sweep] {r['method']:<40} fold {r['fold']} seed {r['seed']}: R@1 {r['recall@1']:.3f} "
            f"MAP@R {r['map@r']:.3f} ({r['queries']} queries, {r['seconds']:.1f} s)")


def summarise(records: list[dict]) -> list[dict]:
    """One row per method, in first-seen order: mean ± std of R@1 and MAP@R over runs, mean training seconds."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        r1, mp = np.array([r["recall@1"] for r in rs]), np.array([r["map@r"] for r in rs])
        rows.append({"method": m, "runs": len(rs), "r1": r1.mean(), "r1_std": r1.std(), "map": mp.mean(),
                     "map_std": mp.std(), "seconds": float(np.mean([r["seconds"] for r in rs]))})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The summary as a markdown table, best MAP@R marked."""
    best = max(rows, key=lambda r: r["map"])["method"] if rows else None
    lines = ["| method | runs | R@1 | MAP@R | train s |", "|---|---|---|---|---|"]
    for r in rows:
        name = f"**{r['method']}**" if r["method"] == best else r["method"]
        lines.append(f"| {name} | {r['runs']} | {r['r1']:.3f} ± {r['r1_std']:.3f} | "
                     f"{r['map']:.3f} ± {r['map_std']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
