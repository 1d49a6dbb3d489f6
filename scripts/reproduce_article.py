"""Reproduce the seed article's experiments on the real catalogues: writes report.md, results.json and figures.

`python scripts/reproduce_article.py --out reports/article/`
(1) single images: shoes; (2) ordered multi-image: view with view; (3) generic multi-image: recursive vs linear
matching, every matcher and trained head on held-out sets; (4) titles fused with the photos.
The catalogues default to ../shared/data/ beside the repository; photo vectors come from the embedding cache.
"""

import argparse
import shlex
import sys
from pathlib import Path

from setenc.plumbing.cli import run_main

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports/article", help="report folder")
    p.add_argument("--fashion", default=str(DATA / "fashion44k"), help="fashion44k folder (styles.csv + images/)")
    p.add_argument("--multiview", default=str(DATA / "multiview"), help="multiview catalogue folder")
    p.add_argument("--grocery", default=str(DATA / "grocery"), help="grocery catalogue folder")
    p.add_argument("--checkpoint", nargs="*", default=[], help="trained heads to score in experiment 3")
    p.add_argument("--backbone", default="efficientnet-lite0", help="frozen photo encoder (when no checkpoint)")
    p.add_argument("--cache", default=None, help="embedding-cache root (default: $SETENC_CACHE/embeddings)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()

    import torch

    from setenc_experiments.seed_article import reproduce
    from setenc.photos import create_backbone
    from setenc.plumbing.errors import CatalogError, CheckpointError
    from setenc.encoder import SetEncoder
    from setenc.plumbing.paths import cache_dir

    for flag, folder in (("--fashion", args.fashion), ("--multiview", args.multiview), ("--grocery", args.grocery)):
        if not Path(folder).is_dir():
            raise CatalogError(f"{folder}: catalogue folder not found; give its path with {flag}")
    if args.threads:
        torch.set_num_threads(args.threads)
    encoders = {}
    for path in args.checkpoint:
        enc = SetEncoder.from_pretrained(path)
        encoders[f"{enc.head.name} ({Path(path).parent.name or Path(path).stem})"] = enc
    ids = {e.backbone_spec.get("id") for e in encoders.values()}
    if len(ids) > 1:
        raise CheckpointError(f"the checkpoints were trained on different backbones {sorted(map(str, ids))}; "
                              "reproduce with one backbone at a time")
    backbone = next(iter(encoders.values())).backbone if encoders else create_backbone(args.backbone)
    command = shlex.join(["python", "scripts/reproduce_article.py", *sys.argv[1:]])
    reproduce(args.fashion, args.multiview, args.grocery, args.out, backbone, args.cache or cache_dir("embeddings"),
              encoders, command)
    print(f"report: {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    run_main(main)
