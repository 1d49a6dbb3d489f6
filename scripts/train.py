"""Train a set head: `python scripts/train.py` (the embedded demo default) or `--catalog PATH`.

Every config field is a flag (`--lr 3e-4`), dict fields key by key (`--head_kwargs.out_dim 256`);
`--config FILE` loads a YAML config first (see configs/).
"""

import argparse

from setenc.plumbing.cli import run_main


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
    cfg = load_config(default_config(ns.config), parse_overrides(ns, extra))

    from setenc.training.run import summary_lines, train

    result = train(cfg, resume=ns.resume)
    print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    run_main(main)
