"""Search an export: `python scripts/search.py DIR photo1.jpg photo2.jpg -k 5 [--rerank chamfer] [--png out.png]`.

Prints rank, article id, score and title (from the export's catalog, or --catalog). `--id ID` searches with an
article of the export (itself left out); `--queries FILE.jsonl` answers many queries in one process and writes one
JSON result a line (to --out, default stdout; format in setenc/search/queries.py). `--rerank NAME` re-scores the top
--candidates set-vector hits with a matcher on their photos (--weight: share of the set-vector score, 1 = set
vector only); `--multivector AGG` searches every photo on its own instead (AGG: max or a matcher name).
`--where KEY=VALUE` keeps only articles whose metadata match (repeat it: keys AND, a repeated key any of its
values; e.g. `--where group=Shoes --where group=Sandals`); with --queries it applies to every line. On an export made
with a fused checkpoint (photos + titles), `--title TEXT` adds a title to the query photos, or is the query alone.
`--views front,side` tags the query photos, one view tag each in order, for an export of a view-aware head (without
it their photos count as "unknown" view; a tag-free head ignores the tags); a --queries line carries `"views"`.
Photo and title queries need the export's encoder: it is rebuilt from the manifest (parameter-free head, or the
recorded checkpoint while it is unchanged); otherwise pass --checkpoint.
"""

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from setenc.plumbing.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="export folder written by scripts/export.py")
    p.add_argument("photos", nargs="*", help="the query article's photos")
    p.add_argument("--id", default=None, help="query with this article of the export instead of photos")
    p.add_argument("--queries", default=None, help="JSONL file of queries (photos / id / vector), one a line")
    p.add_argument("--out", default=None, help="with --queries: write the JSONL results here (default: stdout)")
    p.add_argument("-k", type=int, default=10, help="neighbours to show")
    p.add_argument("--rerank", default=None, help="matcher re-scoring the set-vector candidates (e.g. chamfer)")
    p.add_argument("--candidates", type=int, default=200,
                   help="set-vector hits re-scored with --rerank or the neighbour expansion")
    p.add_argument("--expand", default=None, metavar="SPEC",
                   help="neighbour expansion: dba<k>+qe<k> (e.g. dba5+qe2) or none; default: the export's "
                        "(docs/search.md#neighbour-expansion)")
    p.add_argument("--weight", type=float, default=0.0, help="with --rerank: set-vector share of the score")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only articles with this metadata (repeatable: keys AND, a repeated key OR)")
    p.add_argument("--title", default=None, help="the query's title (an export of a fused checkpoint)")
    p.add_argument("--views", default=None, metavar="TAG,TAG",
                   help="the query photos' view tags, one per photo, comma-separated (a view-aware export)")
    p.add_argument("--multivector", default=None, metavar="AGG", help="multi-vector search, aggregated by AGG")
    p.add_argument("--checkpoint", default=None, help="the head the export was built with (when it moved)")
    p.add_argument("--catalog", default=None, help="manifest for titles and photos (default: the export's catalog)")
    p.add_argument("--png", default=None, help="also draw the query photos and each neighbour's photos here")
    p.add_argument("--explain", action="store_true", help="under each hit: P(same group) (a calibrated checkpoint) "
                   "and the photo pairs behind it; with --png also the top hit's pairs side by side (<png>-pairs.png)")
    args = p.parse_args()
    from setenc.plumbing.errors import SetencError
    from setenc.search.filters import parse_where

    if sum(map(bool, (args.photos or args.title, args.id, args.queries))) != 1:
        raise SetencError("give the query photos and / or --title, --id ID or --queries FILE (exactly one)")
    if args.title is not None and not args.title.strip():
        raise SetencError("--title is empty: give the query's title text")
    if args.multivector and (args.queries or args.rerank or args.where or args.title):
        raise SetencError("--multivector searches photos or --id on its own: drop --queries / --rerank / --where / "
                          "--title")
    views = None if args.views is None else [t.strip() for t in args.views.split(",")]
    if views is not None and (not args.photos or args.multivector or not all(views)):
        raise SetencError("--views tags the query photos, one non-empty tag each (e.g. --views front,side): give it "
                          "with photos, not with --id, --queries (a line's \"views\") or --multivector")
    where = parse_where(args.where)
    if args.explain and (args.queries or not (args.photos or args.id)):
        raise SetencError("--explain needs query photos or --id (the photo pairs are the query's), not --queries or "
                          "a title alone")

    from setenc.catalogs import load_catalog
    from setenc.search.index import SetIndex
    from setenc.encoder import SetEncoder
    from setenc.search.queries import answer, load_query_photo, read_queries

    encoder = SetEncoder.from_pretrained(args.checkpoint) if args.checkpoint else None
    index = SetIndex.load(args.index, encoder, expansion=args.expand)
    index.selector(where)  # a bad --where fails before any photo is embedded
    options = {"rerank": args.rerank, "candidates": args.candidates, "weight": args.weight, "where": where}
    if args.queries:
        queries = read_queries(args.queries, index, rerank=args.rerank is not None)
        with open(args.out, "w") if args.out else nullcontext(sys.stdout) as out:
            for result in answer(index, queries, args.k, **options):
                out.write(json.dumps(result) + "\n")
        if args.out:
            print(f"wrote {len(queries)} results to {args.out}", file=sys.stderr)
        return
    query = [load_query_photo(Path(x), x) for x in args.photos]  # a bad photo: one line about the query photo
    if args.multivector:
        query = index.article_photos(args.id) if args.id else query
        hits = index.search_photos(query, k=args.k + bool(args.id), aggregate=args.multivector)
        hits = [h for h in hits if h[0] != args.id][: args.k]
    elif args.id:
        hits = index.similar(args.id, k=args.k, **options)
    else:
        hits = index.search(query or None, k=args.k, title=args.title, views=views, **options)
    source = args.catalog or index.manifest.get("catalog")
    articles = {a.id: a for a in load_catalog(source)} if source and Path(source).exists() else {}
    titles = {aid: articles[aid].title for aid, _ in hits if aid in articles and articles[aid].title}
    width = max([len("id"), *(len(aid) for aid, _ in hits)])  # long ids stay aligned; no title column when none
    print(f"{'rank':>4}  {'id':<{width}}  {'score':>7}" + ("  title" if titles else ""))
    mine = (args.id or index.photo_vectors(query)) if args.explain else None  # the query side of the photo pairs
    for rank, (aid, score) in enumerate(hits, 1):
        print(f"{rank:>4}  {aid:<{width}}  {score:7.4f}" + (f"  {titles.get(aid, '')}" if titles else ""))
        if args.explain:
            from setenc.matching.explain import describe

            print(f"      {describe(index.pair(mine, aid))}")
    if args.png:
        from setenc.evaluation.plots import retrieval_grid

        rows = [(aid, list(articles[aid].images) if aid in articles else [], score, None,
                 articles[aid].title if aid in articles else None) for aid, score in hits]
        shown = list(articles[args.id].images) if args.id and args.id in articles else args.photos
        title = f"query ({len(shown)} photos) -> top {len(hits)} of {Path(args.index).name}"
        print(f"wrote {retrieval_grid([(title, shown, rows)], args.png)}")
        if args.explain and hits and hits[0][0] in articles:
            from setenc.matching.explain import PhotoPair, describe, pairs_png

            top = index.pair(mine, hits[0][0])
            path = Path(args.png).with_name(Path(args.png).stem + "-pairs.png")
            pairs = [PhotoPair(**p) for p in top["pairs"]]
            print(f"wrote {pairs_png(pairs, shown, list(articles[hits[0][0]].images), path, describe(top))}")


if __name__ == "__main__":
    run_main(main)
