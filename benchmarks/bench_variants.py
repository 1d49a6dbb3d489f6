"""Benchmark: the embedding rate of photo-variant schemes against plain float Lite0 (no variants), in one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_variants.py --catalog ../shared/data/grocery --limit 320 --repeats 3

Each scheme (`backbone[:key=value,...]` then `/tta`) embeds the same real photos into a fresh cache through
`setenc.photos.embed_catalog` (hash, decode, forward, write: what `train.py` pays on a cold cache). Schemes alternate
within each repeat, so a busy machine slows all of them alike; photos/s is each scheme's best repeat (other
processes only ever slow a run down), and `x plain` is its rate over the first scheme's. The table is headed by the
CPU's int8-relevant ISA and the load average (docs/tta.md#one-pass-centre-pooling).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import yaml

from setenc.catalogs import load_catalog
from setenc.photos import create_backbone, embed_catalog
from setenc.photos.backbones.int8 import cpu_isa
from setenc.plumbing.cli import run_main

SCHEMES = ["efficientnet-lite0/none", "efficientnet-lite0/crop@0.75", "efficientnet-lite0:centre=0.75/none"]


def parse_scheme(scheme: str) -> tuple[str, dict, str]:
    """`name[:key=value,...]/tta` -> (backbone name, its options, tta spec)."""
    backbone, _, tta = scheme.partition("/")
    name, _, options = backbone.partition(":")
    kw = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in options.split(",") if item)}
    return name, kw, tta or "none"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="../shared/data/grocery", help="manifest or folder with catalog.jsonl")
    p.add_argument("--schemes", nargs="+", default=SCHEMES, help="backbone[:key=value,...]/tta; the first is 1x")
    p.add_argument("--limit", type=int, default=320, help="photos per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="decode worker processes (default: embed_catalog's)")
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    paths = load_catalog(args.catalog).image_paths[: args.limit]
    backbones = {s: (create_backbone(name, **kw), tta) for s in args.schemes for name, kw, tta in [parse_scheme(s)]}
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for scheme, (backbone, tta) in backbones.items():
            with tempfile.TemporaryDirectory() as cache:
                t = time.perf_counter()
                report = embed_catalog(paths, backbone, cache, num_workers=args.workers, progress=False, tta=tta)
                rate = report.unique / (time.perf_counter() - t)
            best[scheme] = max(best.get(scheme, 0.0), rate)
    plain = best[args.schemes[0]]
    print(f"CPU: {cpu_isa()}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {len(paths)} photos of "
          f"{args.catalog}, best of {args.repeats}\n\n| scheme | photos/s | x plain |\n|---|---:|---:|")
    for scheme, rate in best.items():
        print(f"| `{scheme}` | {rate:.1f} | {rate / plain:.2f} |")


if __name__ == "__main__":
    run_main(main)
