"""Benchmark: neighbour expansion settings on trained heads, held-out articles searched among every article.

`python benchmarks/bench_expansion.py RUN_DIR [RUN_DIR ...] --specs none,dba5+qe2,qe2` re-scores each finished run
(a folder with `config.yaml` and `best.pt`, e.g. those `benchmarks/bench_heads.py` or `scripts/train.py` write) on its
own test split in the `group-all` gallery, once per expansion spec (`setenc.search.expansion`), each held-out query
kept out of its own gallery's averaging. Nothing is trained: it screens settings on heads that exist. Prints one line
per run and a table of mean ± std over runs with the run-by-run difference to the first spec.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from setenc.plumbing.cli import run_main


def run_metrics(run: Path, specs: list[str]) -> dict[str, tuple[float, float]]:
    """spec -> (R@1, MAP@R) of one run's held-out articles in the gallery of every article."""
    from setenc.encoder import SetEncoder
    from setenc.evaluation.metrics import vector_metrics
    from setenc.evaluation.protocols import full_gallery_protocols, make_protocols
    from setenc.search.expansion import Expansion
    from setenc.training.config import load_config
    from setenc.training.run import load_training_data

    cfg = load_config(run / "config.yaml")
    enc = SetEncoder.from_pretrained(run / "best.pt")
    data, _, _ = load_training_data(cfg)
    p = next(x for x in make_protocols(*data["test"]) if x.name == "group")
    rest = data["train"][1].with_articles(data["train"][1].articles + data["val"][1].articles)
    p = full_gallery_protocols(p, data["train"][0] + data["val"][0], rest, sizes=("all",))[0]
    q, g = enc.encode_sets(p.queries, views=p.q_views), enc.encode_sets(p.gallery, views=p.g_views)
    out = {}
    for spec in specs:
        m = vector_metrics(q, g, p.q_labels, p.g_labels, exclude=p.exclude, bootstrap=0,
                           expansion=Expansion.parse(spec))
        out[spec] = (m["recall@1"], m["map@r"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run folders (config.yaml + best.pt)")
    p.add_argument("--specs", default="none,dba1+qe1,dba2+qe1,dba3+qe1,dba5,dba5+qe1,dba5+qe2,dba8+qe2,qe2",
                   help="expansion specs, comma-separated; the first is the reference of the differences")
    args = p.parse_args()
    specs = args.specs.split(",")
    per_run = []
    for run in args.runs:
        per_run.append(run_metrics(Path(run), specs))
        print(f"[expansion] {run}: " + "; ".join(f"{s} {r:.3f} / {m:.3f}" for s, (r, m) in per_run[-1].items()),
              flush=True)
    base = np.array([r[specs[0]] for r in per_run])
    print(f"\n| expansion | runs | R@1 | MAP@R | vs {specs[0]} R@1 / MAP@R | R@1 higher / lower | MAP@R higher |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        v = np.array([r[spec] for r in per_run])
        d = v - base
        print(f"| {spec} | {len(v)} | {v[:, 0].mean():.3f} ± {v[:, 0].std():.3f} | {v[:, 1].mean():.3f} ± "
              f"{v[:, 1].std():.3f} | {d[:, 0].mean():+.3f} / {d[:, 1].mean():+.3f} | {int((d[:, 0] > 0).sum())} / "
              f"{int((d[:, 0] < 0).sum())} | {int((d[:, 1] > 0).sum())} |")


if __name__ == "__main__":
    run_main(main)
