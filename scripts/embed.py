"""Embed every photo of a catalog into the cache (incremental, resumable): `python scripts/embed.py --catalog PATH`.

`--engine ray` embeds on a Ray cluster (`pip install "setenc[scale]"`): a local one by default, `--ray-address` for
a running cluster; same cache, same vectors, the driver is the only writer."""

import argparse
import contextlib

from setenc.plumbing.cli import catalog_arg, run_main
from setenc.plumbing.errors import SetencError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--catalog", default=None, help="manifest (JSONL) or folder with catalog.jsonl; default: the demo catalog")
    p.add_argument("--backbone", default="efficientnet-lite0", help="backbone name (see setenc.list_backbones())")
    p.add_argument("--model", default=None, help="hub id / local folder for the clip and hf backbones")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--out", default=None, help="cache root (default: $SETENC_CACHE/embeddings)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decode worker processes (default: min(4, cores))")
    p.add_argument("--float16", action="store_true", help="store vectors as float16 (new caches only)")
    p.add_argument("--report", default=None, help="write a JSON report (counts, skipped photos and why) here")
    p.add_argument("--tta", default="none", help="also embed photo variants: none | flip | crop | flip+crop "
                   "(keyed apart from the photos; docs/tta.md)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process and its decode workers (default); ray: Ray Data tasks + actor pool")
    p.add_argument("--ray-address", default=None, help="a running Ray cluster (e.g. auto, ray://head:10001); "
                   "default: start a local Ray")
    p.add_argument("--ray-workers", type=int, default=None,
                   help="embedding actors (default: one per GPU, else half the CPUs)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    args = p.parse_args()
    ray_flags = [f for f, v in (("--ray-address", args.ray_address), ("--ray-workers", args.ray_workers),
                                ("--ray-cpus", args.ray_cpus)) if v is not None]
    if ray_flags and args.engine != "ray":
        raise SetencError(f"{', '.join(ray_flags)} only apply with --engine ray")

    from setenc.photos import create_backbone
    from setenc.photos import embed_catalog
    from setenc.plumbing.paths import cache_dir

    from setenc.photos.tta import TTA

    tta = TTA.parse(args.tta)  # a typo is a one-line error before any work
    catalog = catalog_arg(args.catalog)
    kw = {"model": args.model} if args.model else {}
    backbone = create_backbone(args.backbone, runtime=args.runtime, **kw)
    engine = None
    if args.engine == "ray":
        from setenc.photos.ray_engine import BackboneFactory, RayEngine

        engine = RayEngine(BackboneFactory(args.backbone, args.runtime, kw), workers=args.ray_workers,
                           address=args.ray_address, num_cpus=args.ray_cpus)
    with engine or contextlib.nullcontext():  # one Ray for every pass
        report = embed_catalog(catalog, backbone, args.out or cache_dir("embeddings"), batch_size=args.batch_size,
                               num_workers=args.workers, dtype="float16" if args.float16 else "float32", tta=tta,
                               engine=engine)
    print(f"{catalog.name}: {report.summary()}")
    for path, reason in report.skipped[:20]:
        print(f"  skipped: {reason}")
    if len(report.skipped) > 20:
        print(f"  ... and {len(report.skipped) - 20} more (see --report)")
    if args.report:
        report.write(args.report)


if __name__ == "__main__":
    run_main(main)
