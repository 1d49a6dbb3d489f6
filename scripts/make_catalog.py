"""Write a catalog manifest from a photo collection's own layout, or generate the synthetic demo catalog.

    python scripts/make_catalog.py demo --out DIR [--seed 0]
    python scripts/make_catalog.py folder ROOT --out DIR   # ROOT/<article>/<photo> or ROOT/<group>/<article>/<photo>
    python scripts/make_catalog.py sop ROOT --split train --out DIR
    python scripts/make_catalog.py inshop ROOT --out DIR
    python scripts/make_catalog.py abo LISTINGS IMAGES_CSV IMAGES_ROOT --out DIR
    python scripts/make_catalog.py styles ROOT [--group-by articleType baseColour] --out DIR

Writes DIR/catalog.jsonl (photo paths relative to DIR; photos are not copied) and prints a one-line summary.
"""

import argparse
import logging
from pathlib import Path

from setenc.plumbing.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=["demo", "folder", "sop", "inshop", "abo", "styles"])
    p.add_argument("src", nargs="*", help="the collection's root (abo: LISTINGS IMAGES_CSV IMAGES_ROOT)")
    p.add_argument("--out", default=None, help="folder for catalog.jsonl (demo: default the cache folder)")
    p.add_argument("--seed", type=int, default=0, help="demo: random seed")
    p.add_argument("--groups", type=int, default=None, help="demo: number of product families (default: the demo's)")
    p.add_argument("--size", type=int, default=128, help="demo: photo side in pixels")
    p.add_argument("--split", default="train", choices=["train", "test", "all"], help="sop: which list file(s)")
    p.add_argument("--group-by", nargs="+", default=["articleType"], help="styles: column(s) that make the group")
    p.add_argument("--flat", action="store_true", help="folder: no group from the parent folder")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from setenc.catalogs import load_catalog, write_catalog
    from setenc.catalogs import from_abo, from_folder, from_inshop, from_sop, from_styles_csv, make_demo_catalog

    want = {"demo": 0, "abo": 3}.get(args.source, 1)
    if len(args.src) != want:
        p.error(f"{args.source} takes {want} source path(s), got {len(args.src)}")
    if args.out is None and args.source != "demo":
        p.error("--out DIR is required")
    if args.source == "demo":
        groups = {} if args.groups is None else {"n_groups": args.groups}
        path = make_demo_catalog(args.out, seed=args.seed, size=args.size, **groups)
        catalog = load_catalog(path)
    else:
        make = {
            "folder": lambda root: from_folder(root, group_from_parent=not args.flat),
            "sop": lambda root: from_sop(root, split=args.split),
            "inshop": from_inshop,
            "abo": from_abo,
            "styles": lambda root: from_styles_csv(root, group_by=args.group_by),
        }[args.source]
        catalog = make(*args.src)
        path = write_catalog(catalog, Path(args.out) / "catalog.jsonl")
    groups = len({a.group for a in catalog if a.group is not None})
    print(f"{path}: {len(catalog)} articles, {len(catalog.image_paths)} photos, {groups} groups")


if __name__ == "__main__":
    run_main(main)
