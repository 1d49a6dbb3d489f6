"""Which articles of a catalogue are the same product:
`python scripts/match.py --checkpoint CK --catalog CAT --out DIR [--precision 0.9]`.

Clusters the catalogue's articles at the checkpoint's score threshold for the stated pairwise precision (its
calibration, fitted on held-out articles when it was trained; rescaled to this catalogue's size where groups are
products), from FAISS candidates (never the N x N matrix), by average linkage (`--method components`: connected
components, which chain look-alikes; docs/matching.md). Writes DIR/clusters.jsonl, one cluster a line:
`{"cluster": n, "ids": [...], "min_probability": p}` (p: P(same group) of the cluster's weakest merge, null for a
single article); where the catalogue has groups also DIR/report.md and report.json: pairwise precision, recall and
F1 against them, and on held-out products the head beside mean pooling and the best matcher, calibrated the same
way. DIR is written whole or not at all (a temp folder swapped in).
"""

import argparse

from setenc.plumbing.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="trained head (best.pt) carrying a calibration")
    p.add_argument("--catalog", required=True, help="manifest or folder with catalog.jsonl")
    p.add_argument("--out", required=True, help="output folder (replaced whole)")
    p.add_argument("--precision", type=float, default=0.9, help="pairwise precision the threshold is chosen for")
    p.add_argument("--method", default="average", help="average (linkage, default) | components")
    p.add_argument("--no-compare", action="store_true", help="skip the held-out comparison with mean pooling and "
                   "the matchers")
    p.add_argument("--cache", default=None, help="embedding-cache root (default: $SETENC_CACHE/embeddings)")
    args = p.parse_args()
    from setenc.catalogs import load_catalog
    from setenc.encoder import SetEncoder
    from setenc.matching.clusters import METHODS
    from setenc.matching.dedup import markdown, match_catalog
    from setenc.plumbing.errors import SetencError
    from setenc.plumbing.paths import cache_dir

    if args.method not in METHODS:
        raise SetencError(f"--method {args.method!r}: use one of {', '.join(METHODS)}")
    if not 0 < args.precision <= 1:
        raise SetencError(f"--precision {args.precision} must be in (0, 1]")
    encoder = SetEncoder.from_pretrained(args.checkpoint)
    report = match_catalog(encoder, load_catalog(args.catalog), args.out, args.precision, args.method,
                           args.cache or cache_dir("embeddings"), compare=not args.no_compare, progress=True)
    print(markdown(report) if "whole_catalogue" in report else
          f"{report['articles']} articles -> {report['clusters']} clusters at cosine {report['threshold']:.4f}"
          + (f"\n{report['caution']}" if report["caution"] else ""))
    print(f"wrote {args.out}/clusters.jsonl" + (" and report.md / report.json" if "whole_catalogue" in report else ""))


if __name__ == "__main__":
    run_main(main)
