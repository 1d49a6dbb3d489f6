"""Heads × folds × seeds on one catalogue, beside the parameter-free matchers on exactly the same test articles.

One held-out number is noise (a grocery fold has a few hundred queries of ~20 products), so every method is
run on several product folds (`split_seed`) and, for learned heads, several seeds; the table reports
mean ± std over all runs. A matcher has no seed: it runs once per fold, its `s` / `m` tuned on the fold's
validation articles (the training articles when there is no validation split), never on the test articles.

Runs are judged on `group-all` by default: the held-out articles query a gallery of EVERY article of the catalogue,
the trained-on ones as distractors, as a user searches (`setenc.evaluation.protocols.full_gallery_protocols`);
the held-out-only gallery (`group`, what rounds 1–8 of docs/bench_heads.md report) stays a column beside it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from setenc.matching.matchers import list_matchers
from setenc.search.expansion import articles_per_group, choose_expansion
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


def _base(protocol: str) -> str:
    """`group-all` -> `group`: the held-out protocol a full-gallery one extends."""
    return protocol.split("-")[0]


def fold_rows(cfg: TrainConfig, encoders: dict, matchers: Sequence[str], protocol: str,
              tune: bool = False) -> list[dict]:
    """Rows of `evaluate_sets` on the fold's test articles: `protocol` and, for `group`, its full galleries (the
    fold's training and validation articles as distractors)."""
    from setenc.evaluation.report import evaluate_sets
    from setenc.evaluation.tuning import tunable_matchers, tune_matchers
    from setenc.training.run import load_training_data, prepare

    cfg = prepare(cfg)[0]  # the recipe's choices: the split the heads of this fold get, and its kind (split_by)
    data, _, _ = load_training_data(cfg)
    tune_on = data["val"] if len(data["val"][0]) else data["train"]
    tuned = tune_matchers(*tune_on, names=matchers) if tune and tunable_matchers(matchers) else {}
    rest = ([*data["train"][0], *data["val"][0]],
            data["train"][1].with_articles(data["train"][1].articles + data["val"][1].articles))
    every = rest[1].with_articles(rest[1].articles + data["test"][1].articles)
    how = choose_expansion(cfg.split_by, articles_per_group(every))  # mean pooling as the fold's heads are searched
    rows, _ = evaluate_sets(*data["test"], encoders, matchers, (_base(protocol),), tuned, rest, how)
    return rows


def matcher_rows(cfg: TrainConfig, matchers: Sequence[str], protocol: str = "group-all") -> list[dict]:
    """Test-split metrics of the parameter-free matchers for the fold `cfg.split_seed`, tuned off the test split."""
    return fold_rows(cfg, {}, matchers, protocol, tune=True)


def head_row(cfg: TrainConfig, protocol: str = "group-all") -> dict:
    """Train one head (`setenc.training.train`); its test metrics on every gallery, and wall-clock seconds."""
    from setenc.encoder import SetEncoder
    from setenc.training.run import train

    result = train(cfg)
    enc = SetEncoder.from_pretrained(Path(result["run_dir"]) / "best.pt")
    rows = fold_rows(cfg, {cfg.head: enc}, [], protocol)
    return {**record(rows, protocol, cfg.catalog), "seconds": result["seconds"]}


def record(rows: list[dict], protocol: str, catalog) -> dict:
    """One method's run: the judged protocol's R@1 / MAP@R (and 95% intervals), every protocol's in `galleries`."""
    by = {r["protocol"]: r for r in rows}
    if protocol not in by:
        raise ValueError(f"{catalog}: the test split supports no {protocol!r} protocol (it has {sorted(by)}); "
                         "use more test articles, or another --protocol")
    m = by[protocol]
    return {"recall@1": m["recall@1"], "map@r": m["map@r"], "queries": m["queries"],
            **{f"{k}_ci": m[f"{k}_ci"] for k in ("recall@1", "map@r") if f"{k}_ci" in m},
            "galleries": {p: {k: r[k] for k in ("recall@1", "map@r", "queries", "gallery")} for p, r in by.items()}}


def run_sweep(config: str | None, heads: Sequence[str], folds: Sequence[int], seeds: Sequence[int],
              matchers: Sequence[str] | None = None, overrides: dict | None = None, protocol: str = "group-all",
              out: str | None = None, log=print) -> list[dict]:
    """Records `{method, fold, seed, recall@1, map@r, seconds, galleries}`: matchers once per fold, heads per fold
    and seed; `protocol` is the one judged (`galleries` holds every gallery's metrics).

    `matchers=None`: every matcher; one that needs view tags (`ordered`) only where every test article has them.
    """
    records = []
    matchers = list_matchers() if matchers is None else matchers
    out = out or tempfile.mkdtemp(prefix="setenc-sweep-")
    for fold in folds:
        base = _run_config(config, dict(overrides or {}), fold, seeds[0], out)
        rows = matcher_rows(base, matchers, protocol) if matchers else []
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            records.append({"method": method, "fold": fold, "seed": None, **record(mine, protocol, base.catalog),
                            "seconds": 0.0})
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
    others = "; ".join(f"{p} {g['recall@1']:.3f} / {g['map@r']:.3f} ({g['gallery']})"
                       for p, g in r.get("galleries", {}).items())
    return (f"[sweep] {r['method']:<40} fold {r['fold']} seed {r['seed']}: R@1 {r['recall@1']:.3f} "
            f"MAP@R {r['map@r']:.3f} ({r['queries']} queries, {r['seconds']:.1f} s)"
            + (f" [{others}]" if others else ""))


def summarise(records: list[dict]) -> list[dict]:
    """One row per method, in first-seen order: mean ± std of R@1 and MAP@R over runs, the mean half-width of one
    run's 95% interval (`*_ci`), every other gallery's mean R@1 / MAP@R and size, mean training seconds."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        r1, mp = np.array([r["recall@1"] for r in rs]), np.array([r["map@r"] for r in rs])
        row = {"method": m, "runs": len(rs), "r1": r1.mean(), "r1_std": r1.std(), "map": mp.mean(),
               "map_std": mp.std(), "seconds": float(np.mean([r["seconds"] for r in rs]))}
        for key, name in (("recall@1_ci", "r1_ci"), ("map@r_ci", "map_ci")):
            if all(key in r for r in rs):
                row[name] = float(np.mean([(r[key][1] - r[key][0]) / 2 for r in rs]))
        galleries = [r.get("galleries", {}) for r in rs]
        for p in dict.fromkeys(p for g in galleries for p in g):
            got = [g[p] for g in galleries if p in g]
            row.setdefault("galleries", {})[p] = {k: float(np.mean([x[k] for x in got]))
                                                  for k in ("recall@1", "map@r", "gallery")}
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], protocol: str | None = None) -> str:
    """The summary as a markdown table, best MAP@R marked: mean ± std over runs of the judged protocol, a run's
    typical 95% interval (± half-width, the query sample's noise), then every other gallery's means."""
    best = max(rows, key=lambda r: r["map"])["method"] if rows else None
    ci = any("r1_ci" in r for r in rows)
    others = [p for p in dict.fromkeys(p for r in rows for p in r.get("galleries", {})) if p != protocol]
    size = lambda p: np.mean([r["galleries"][p]["gallery"] for r in rows if p in r.get("galleries", {})])  # noqa: E731
    head = ["method", "runs", "R@1", "MAP@R"] + (["one run's 95% CI (R@1 / MAP@R)"] if ci else []) \
        + [f"{p} ({size(p):.0f}) R@1 / MAP@R" for p in others] + ["train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r['method']}**" if r["method"] == best else r["method"]
        cells = [name, str(r["runs"]), f"{r['r1']:.3f} ± {r['r1_std']:.3f}", f"{r['map']:.3f} ± {r['map_std']:.3f}"]
        if ci:
            cells.append(f"±{r['r1_ci']:.3f} / ±{r['map_ci']:.3f}" if "r1_ci" in r else "")
        for p in others:
            g = r.get("galleries", {}).get(p)
            cells.append(f"{g['recall@1']:.3f} / {g['map@r']:.3f}" if g else "")
        lines.append("| " + " | ".join(cells + [f"{r['seconds']:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def paired_table(records: list[dict], protocol: str) -> str:
    """Each head against the first one, run by run (same fold and seed): the mean difference of R@1 / MAP@R on the
    judged protocol and on `group`, and in how many runs it is higher — a difference the spread over folds hides."""
    heads = list(dict.fromkeys(r["method"] for r in records if r["seed"] is not None))  # matchers have no seed
    if len(heads) < 2:
        return ""
    run = {(r["method"], r["fold"], r["seed"]): r for r in records}
    lines = [f"| {heads[0]} → | runs | {protocol} R@1 / MAP@R | higher in | group R@1 / MAP@R | higher in |",
             "|---|---|---|---|---|---|"]
    for other in heads[1:]:
        keys = [(f, s) for (m, f, s) in run if m == heads[0] and (other, f, s) in run]
        cells = []
        for gallery in (None, "group"):
            d = np.array([[_metric(run[(other, *k)], gallery, x) - _metric(run[(heads[0], *k)], gallery, x)
                           for x in ("recall@1", "map@r")] for k in keys])
            cells += [f"{d[:, 0].mean():+.3f} / {d[:, 1].mean():+.3f}",
                      f"{int((d[:, 0] > 0).sum())}, {int((d[:, 1] > 0).sum())}"]
        lines.append(f"| {other} | {len(keys)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metric(record: dict, gallery: str | None, key: str) -> float:
    return record[key] if gallery is None else record.get("galleries", {}).get(gallery, {}).get(key, float("nan"))

