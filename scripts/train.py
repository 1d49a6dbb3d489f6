"""Train a set head: `python scripts/train.py` (the embedded demo default) or `--catalog PATH`.

Every config field is a flag (`--lr 3e-4`), dict fields key by key (`--head_kwargs.out_dim 256`);
`--config FILE` loads a YAML config first (see configs/). A run is written into `<out>/<run>.unfinished/` and renamed
to `<out>/<run>/` when it ends: the same command again reuses the finished run, or resumes the unfinished one.
"""

import argparse

from setenc.plumbing.cli import run_main

TRAIN_EXTRA = {"pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities", "torchmetrics"}


def main() -> None:
    from setenc.training.config import DEFAULT_CONFIG, add_config_args, default_config, load_config, parse_overrides

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help=f"YAML config (default: {DEFAULT_CONFIG.name} when present)")
    p.add_argument("--catalog", default=argparse.SUPPRESS, help="manifest (JSONL or folder); default: the demo catalog")
    p.add_argument("--backbone", default=argparse.SUPPRESS, help="backbone name (efficientnet-lite0, clip, ...)")
    p.add_argument("--head", default=argparse.SUPPRESS, help="set head: mean | proj | deepsets | pma")
    p.add_argument("--out", default=argparse.SUPPRESS, help="folder for run folders (default: checkpoints)")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue the run from its last.ckpt")
    add_config_args(p)
    ns, extra = p.parse_known_args()
    try:  # the base install has no Lightning: one line saying which extra, before any other work
        from setenc.training.run import summary_lines, train
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        from setenc.plumbing.errors import SetencError

        install = 'pip install "setenc[train]"'
        raise SetencError(f"training needs the [train] extra ({e.name} is not installed): {install}") from None
    cfg = load_config(default_config(ns.config), parse_overrides(ns, extra))

    result = train(cfg, resume=ns.resume)
    print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    run_main(main)
