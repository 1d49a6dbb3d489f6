"""Compare learned heads with the matching baselines on held-out articles: writes report.md, report.json, PNGs.

`python scripts/evaluate.py --checkpoint checkpoints/RUN/best.pt --catalog PATH` writes reports/local/CATALOG/
(git-ignored; --out elsewhere) and prints the table and the folder.
Without --checkpoint: the parameter-free rows alone (mean, chamfer, recursive, linear, ordered).
`--text tfidf` (or clip-text, minilm) adds title-only and photos + title rows, the photo weight tuned off the scored
articles, and writes each fused encoder to OUT/fused/ (docs/titles.md).
"""

import argparse
from pathlib import Path

from setenc.plumbing.cli import catalog_arg, run_main

LOCAL = "reports/local"  # where reports go unless --out says otherwise: git-ignored, never the committed reports/*


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="*", default=[], help="trained heads (best.pt or .ckpt), one row each")
    p.add_argument("--catalog", default=None, help="manifest or folder; default: the demo catalog")
    p.add_argument("--out", default=None, help=f"report folder (default: {LOCAL}/<catalog name>, git-ignored)")
    p.add_argument("--backbone", default=None, help="backbone when no checkpoint names one (default efficientnet-lite0)")
    p.add_argument("--model", default=None, help="hub id / local folder for the clip and hf backbones")
    p.add_argument("--cache", default=None, help="embedding-cache root (default: $SETENC_CACHE/embeddings)")
    p.add_argument("--split", default="auto", choices=["auto", "test", "all"],
                   help="auto: the test split if a checkpoint was trained on this catalog, else every article")
    p.add_argument("--matchers", nargs="*", default=None, help="matcher names (default: every registered matcher)")
    p.add_argument("--protocols", nargs="*", default=None, help="group | self | single (default: all three)")
    p.add_argument("--no-tune", action="store_true", help="do not tune s/m of recursive/linear on validation")
    p.add_argument("--no-pictures", action="store_true")
    p.add_argument("--text", default=None, help="title encoder: tfidf | clip-text | minilm (adds title and fused rows)")
    p.add_argument("--text-model", default=None, help="model folder / cached hub id for clip-text and minilm")
    p.add_argument("--tta", default=None, help="photo variants for every row: none | flip | flip+crop[:elements] "
                   "(docs/tta.md); default: the checkpoints' recorded ones, else none")
    p.add_argument("--expand", default="auto", metavar="SPEC",
                   help="the `+expanded` rows' neighbour expansion: auto (each head's, as its export searches), "
                        "dba<k>+qe<k> or none (no such rows; docs/search.md#neighbour-expansion)")
    args = p.parse_args()

    from setenc.photos import create_backbone
    from setenc.plumbing.errors import CheckpointError
    from setenc.evaluation.protocols import PROTOCOLS
    from setenc.evaluation.report import evaluate_catalog, markdown_report
    from setenc.plumbing.errors import SetencError
    from setenc.matching.matchers import MATCHERS
    from setenc.encoder import SetEncoder
    from setenc.plumbing.paths import cache_dir

    from setenc.titles.encoders import TEXT_ENCODERS
    from setenc.photos.tta import TTA

    if args.tta is not None:
        TTA.parse(args.tta)  # a typo must not cost an embedding run either

    for name in args.matchers or []:  # names first: a typo must not cost a whole embedding run
        MATCHERS.check(name)
    text_options = {"model": args.text_model} if args.text_model else {}
    if args.text is not None:
        TEXT_ENCODERS.check_options(TEXT_ENCODERS.check(args.text), text_options)
    elif args.text_model:
        raise SetencError("--text-model needs --text clip-text or --text minilm")
    unknown = sorted(set(args.protocols or []) - set(PROTOCOLS))
    if unknown:
        raise SetencError(f"unknown protocol(s) {unknown}; known: {', '.join(PROTOCOLS)}")
    catalog = None
    if args.text is not None:  # titles before the backbone and the cache: none is a one-line error, not a wait
        from setenc.evaluation.titles import check_titles

        catalog = catalog_arg(args.catalog)
        check_titles(catalog)
    encoders = {}
    for path in args.checkpoint:
        enc = SetEncoder.from_pretrained(path)
        name = enc.head.name if enc.head.name not in encoders else f"{enc.head.name} ({Path(path).parent.name})"
        encoders[name] = enc
    specs = {e.backbone_spec["id"] for e in encoders.values()}
    if len(specs) > 1:
        raise CheckpointError(f"the checkpoints were trained on different backbones {sorted(specs)}; evaluate them apart")
    if encoders:
        backbone = next(iter(encoders.values())).backbone
    else:
        kw = {"model": args.model} if args.model else {}
        backbone = create_backbone(args.backbone or "efficientnet-lite0", **kw)
    catalog = catalog if catalog is not None else catalog_arg(args.catalog)
    out = Path(args.out or Path(LOCAL) / catalog.name)
    report = evaluate_catalog(catalog, backbone, args.cache or cache_dir("embeddings"), encoders,
                              args.matchers, args.protocols or PROTOCOLS, args.split, not args.no_tune, out,
                              not args.no_pictures, text=args.text, text_options=text_options, tta=args.tta,
                              expansion=args.expand)
    print(markdown_report({k: v for k, v in report.items() if k != "pictures"}))  # image links: in the file
    for line in report["skipped_photos"]:
        print(line)
    for name, enc in encoders.items():
        if args.text and enc.head.titles is not None:
            print(f"{name}: a learned fusion (its head reads each title), so no fused copy of it is written: export "
                  "its checkpoint as it is")
    written = ["report.md", "report.json", *report.get("pictures", []),
               *[f"fused/{Path(p).name}" for p in report.get("text", {}).get("checkpoints", {}).values()]]
    print(f"wrote {out}/: {', '.join(written)}")


if __name__ == "__main__":
    run_main(main)
