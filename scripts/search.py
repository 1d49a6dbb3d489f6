"""Search an export with a set of photos: `python scripts/search.py DIR photo1.jpg photo2.jpg -k 5 [--png out.png]`.

Prints rank, article id, cosine score and title (from the export's catalog, or --catalog). Photo queries need the
export's encoder: it is rebuilt from the manifest (parameter-free head, or the recorded checkpoint while it is
unchanged); otherwise pass --checkpoint.
"""

import argparse
from pathlib import Path

from setenc.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="export folder written by scripts/export.py")
    p.add_argument("photos", nargs="+", help="the query article's photos")
    p.add_argument("-k", type=int, default=10, help="neighbours to show")
    p.add_argument("--checkpoint", default=None, help="the head the export was built with (when it moved)")
    p.add_argument("--catalog", default=None, help="manifest for titles and photos (default: the export's catalog)")
    p.add_argument("--png", default=None, help="also draw the query photos and each neighbour's photos here")
    args = p.parse_args()

    from setenc.catalogs import load_catalog
    from setenc.index import SetIndex
    from setenc.encoder import SetEncoder
    from setenc.evaluation.plots import retrieval_grid

    encoder = SetEncoder.from_pretrained(args.checkpoint) if args.checkpoint else None
    index = SetIndex.load(args.index, encoder)
    hits = index.search([Path(x) for x in args.photos], k=args.k)
    source = args.catalog or index.manifest.get("catalog")
    articles = {a.id: a for a in load_catalog(source)} if source and Path(source).exists() else {}
    print(f"{'rank':>4}  {'id':<24} {'score':>7}  title")
    for rank, (aid, score) in enumerate(hits, 1):
        title = articles[aid].title if aid in articles and articles[aid].title else ""
        print(f"{rank:>4}  {aid:<24} {score:7.4f}  {title}")
    if args.png:
        rows = [(aid, list(articles[aid].images) if aid in articles else [], score, None,
                 articles[aid].title if aid in articles else None) for aid, score in hits]
        title = f"query ({len(args.photos)} photos) -> top {len(hits)} of {Path(args.index).name}"
        print(f"wrote {retrieval_grid([(title, args.photos, rows)], args.png)}")


if __name__ == "__main__":
    run_main(main)
