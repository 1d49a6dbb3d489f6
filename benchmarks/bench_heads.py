"""Learned set heads vs the parameter-free matchers on one catalogue's held-out articles, over folds and seeds.

    python benchmarks/bench_heads.py --catalog ../shared/data/grocery --folds 0 1 2 3 4 --seeds 0 1

Each head spec is `NAME[:key=value,...]` with TrainConfig keys (`proj:lr=1e-4`, `pma:head_kwargs.dim=256`).
Judged on `group-all` (held-out articles searched among EVERY article of the catalogue) unless `--protocol` says
otherwise; the held-out-only gallery (`group`, rounds 1–8) and `group-x2` are columns beside it. `--split 0.5 0 0.5`
holds out half the products (cars: ~49 of 98 models, as Cars196 does) instead of the recipe's 0.7 / 0 / 0.3.
Prints a markdown table (mean ± std of Recall@1 and MAP@R over folds × seeds, a run's typical 95% interval over its
queries, the other galleries, training seconds) and appends it, with the exact command, to `--out`
(default docs/bench_heads.md).
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

from setenc.plumbing.cli import run_main


def main() -> None:
    from setenc.training.sweep import markdown_table, paired_table, run_sweep, summarise

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a YAML config (configs/clip.yaml ...); default: the recipe's choices")
    p.add_argument("--catalog", default=None, help="manifest or folder; default: the config's, else the demo")
    p.add_argument("--heads", nargs="+", default=["proj", "deepsets", "pma"], help="head specs to train")
    p.add_argument("--matchers", nargs="*", default=None, help="parameter-free baselines (default: every matcher; `ordered` where every test article "
                   "has view tags)")
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2], help="split seeds (held-out product folds)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="training seeds per fold")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--protocol", default="group-all", help="the test protocol judged on: group-all (every article of "
                   "the catalogue in the gallery), group-x2, group (held-out articles only, rounds 1-8), self, single")
    p.add_argument("--split", nargs=3, type=float, default=None, metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions of products (articles where groups are classes); default: the recipe's")
    p.add_argument("--out", default="docs/bench_heads.md", help="markdown file to append the table to ('' = none)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    if args.catalog:
        overrides["catalog"] = args.catalog
    if args.split:
        overrides["split"] = args.split
    t0 = time.perf_counter()
    records = run_sweep(args.config, args.heads, args.folds, args.seeds, args.matchers, overrides, args.protocol)
    table = markdown_table(summarise(records), args.protocol)
    paired = paired_table(records, args.protocol)
    table += f"\nRun by run against `{args.heads[0]}` (same fold and seed):\n\n{paired}" if paired else ""
    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    text = (f"## {args.catalog or args.config or 'demo'} — `{args.protocol}` protocol on held-out articles\n\n"
            f"`{command}` ({time.perf_counter() - t0:.0f} s; folds {args.folds}, seeds {args.seeds})\n\n{table}")
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    run_main(main)
