"""Embed every photo of a catalog into the cache (incremental, resumable): `python scripts/embed.py --catalog PATH`.

With no other option it embeds exactly what `scripts/train.py --catalog PATH` will need: the recipe's backbone and
photo variants for that catalogue (`setenc.training.recipe.choose_photos`, the one place that decides), read from
the same config. `--backbone` / `--tta` / `--config` choose otherwise.

`--engine ray` embeds on a Ray cluster (`pip install "setenc[scale]"`): a local one by default, `--ray-address` for
a running cluster; same cache, same vectors, the driver is the only writer."""

import argparse
import contextlib

from setenc.plumbing.cli import catalog_arg, run_main
from setenc.plumbing.errors import SetencError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--catalog", default=None,
                   help="manifest (JSONL) or folder with catalog.jsonl; default: the config's, else the demo catalog")
    p.add_argument("--config", default=None, help="YAML training config (default: configs/default.yaml when present)")
    p.add_argument("--backbone", default=None, help="backbone name (see setenc.list_backbones()); default: the "
                   "recipe's for the catalogue, as train.py chooses it")
    p.add_argument("--model", default=None, help="hub id / local folder for the clip and hf backbones")
    p.add_argument("--runtime", default=None, choices=["auto", "torch", "onnx"], help="default: the config's")
    p.add_argument("--out", default=None, help="cache root (default: $SETENC_CACHE/embeddings)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decode worker processes (default: min(4, cores))")
    p.add_argument("--float16", action="store_true", help="store vectors as float16 (new caches only)")
    p.add_argument("--report", default=None, help="write a JSON report (counts, skipped photos and why) here")
    p.add_argument("--tta", default=None, help="also embed photo variants: none | flip | crop@0.75 | flip+crop "
                   "(keyed apart from the photos; docs/tta.md); default: the recipe's, as train.py chooses them")
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

    from setenc.photos import create_backbone, embed_catalog
    from setenc.plumbing.paths import cache_dir
    from setenc.training.config import default_config, load_config
    from setenc.training.recipe import choose_photos

    given = {"catalog": args.catalog, "backbone": args.backbone, "tta": args.tta, "runtime": args.runtime}
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.model:
        overrides["backbone_kwargs.model"] = args.model
    cfg = load_config(default_config(args.config), overrides)  # a typo is a one-line error before any work
    catalog = catalog_arg(cfg.catalog)
    cfg, why = choose_photos(cfg, catalog)
    for line in why:
        print(f"[recipe] {line}")
    kw = dict(cfg.backbone_kwargs)
    backbone = create_backbone(cfg.backbone, runtime=cfg.runtime, **kw)
    engine = None
    if args.engine == "ray":
        from setenc.photos.ray_engine import BackboneFactory, RayEngine

        engine = RayEngine(BackboneFactory(cfg.backbone, cfg.runtime, kw), workers=args.ray_workers,
                           address=args.ray_address, num_cpus=args.ray_cpus)
    with engine or contextlib.nullcontext():  # one Ray for every pass
        report = embed_catalog(catalog, backbone, args.out or cfg.cache or cache_dir("embeddings"),
                               batch_size=args.batch_size, num_workers=args.workers,
                               dtype="float16" if args.float16 else "float32", tta=cfg.tta,
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
