"""Export one vector per article into a FAISS index folder: `python scripts/export.py --checkpoint CKPT --out DIR`.

Without --checkpoint: the parameter-free `--head mean` on `--backbone`; without --catalog: the demo catalog.
`--append` adds only the articles not in the export yet; `--update` re-encodes the articles of --catalog (changed
photos: replaced in place, new ones added, the rest kept); `--delete ID [ID ...]` (or `--delete @ids.txt`, one id a
line) removes articles, needing no encoder. Edits never re-encode the articles they keep. Search with
scripts/search.py.

A fused checkpoint (photos + titles, written by `scripts/evaluate.py --text` as OUT/fused/*.pt) exports fused
article vectors of the catalog's photos and titles (articles without a title get a zero title part); the manifest
records the fusion, and searches may then add or use a title (`search.py --title`). Every export also keeps the
articles' metadata (group and other catalog fields) for `search.py --where`. A view-aware checkpoint (`train.py
--views true`) encodes each article with its photos' catalog `views` tags; query with `search.py --views`.
"""

import argparse
import time

from setenc.plumbing.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="trained head (best.pt or .ckpt); default: parameter-free --head")
    p.add_argument("--catalog", default=None, help="manifest or folder with catalog.jsonl; default: the demo catalog")
    p.add_argument("--out", required=True, help="export folder (replaced atomically)")
    p.add_argument("--index", default=None, help="flat (exact, default) | ivf | ivfpq | hnsw | a FAISS factory string")
    p.add_argument("--shards", type=int, default=1,
                   help="add the vectors in this many parallel shards, merged into one index (IVF kinds)")
    p.add_argument("--float16", action="store_true", help="store vectors.npy and photos.npy as float16")
    p.add_argument("--expand", default="auto", metavar="SPEC",
                   help="neighbour expansion searches use by default: auto (what the checkpoint's training calls for), "
                        "dba<k>+qe<k> (e.g. dba5+qe2) or none (docs/search.md#neighbour-expansion)")
    p.add_argument("--append", action="store_true", help="add only articles not in the export yet")
    p.add_argument("--update", action="store_true", help="re-encode the catalog's articles into the export")
    p.add_argument("--delete", nargs="+", default=None, metavar="ID", help="remove these articles (@FILE: ids)")
    p.add_argument("--head", default="mean", help="parameter-free head when no --checkpoint is given")
    p.add_argument("--backbone", default="efficientnet-lite0", help="backbone when no --checkpoint is given")
    p.add_argument("--model", default=None, help="hub id / local folder for the clip and hf backbones")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--cache", default=None, help="embedding-cache root (default: $SETENC_CACHE/embeddings)")
    args = p.parse_args()

    from setenc.plumbing.errors import SetencError

    if sum(map(bool, (args.append, args.update, args.delete))) > 1:
        raise SetencError("--append, --update and --delete are separate edits: give one")
    if args.delete:
        from setenc.search.export import delete_articles

        ids = [i for x in args.delete for i in (_read_ids(x[1:]) if x.startswith("@") else [x])]
        m = delete_articles(args.out, ids)
        print(f"{args.out}: deleted {len(set(ids))} articles, {m['count']} left")
        return
    if args.shards < 1:
        raise SetencError(f"--shards must be at least 1, got {args.shards}")
    if args.shards > 1 and (args.append or args.update):
        raise SetencError("--shards builds a new index; --append / --update add to the export's existing one")
    if args.update and not args.catalog:
        raise SetencError("--update needs --catalog: the manifest of the changed or new articles")

    from setenc.photos import create_backbone
    from setenc.search.export import export_index
    from setenc.encoder import SetEncoder
    from setenc.plumbing.paths import cache_dir
    from setenc.catalogs import make_demo_catalog

    if args.checkpoint:
        encoder = SetEncoder.from_pretrained(args.checkpoint)
        spec = encoder.backbone_spec
        encoder.set_backbone(create_backbone(spec["name"], runtime=args.runtime, **spec.get("kwargs", {})))
    else:
        kw = {"model": args.model} if args.model else {}
        encoder = SetEncoder.parameter_free(create_backbone(args.backbone, runtime=args.runtime, **kw), args.head)
    start = time.perf_counter()
    m = export_index(encoder, args.catalog or make_demo_catalog(), args.cache or cache_dir("embeddings"), args.out,
                     index=args.index, dtype="float16" if args.float16 else None, append=args.append,
                     checkpoint_path=args.checkpoint, update=args.update, shards=args.shards, expansion=args.expand)
    params = "".join(f" {k}={v}" for k, v in m["index"]["params"].items())
    photos = f", {m['photos']['count']} photo vectors" if m.get("photos") else ", no photo vectors"
    fusion = f" + titles ({m['fusion']['text']}, w={m['fusion']['weight']})" if m.get("fusion") else \
        f" + titles ({encoder.text.id}: a learned fusion, the head reads each article's title)" \
        if getattr(encoder.head, "titles", None) is not None else ""
    keys = f", metadata {', '.join(m['metadata']['keys'])}" if m.get("metadata") and m["metadata"]["keys"] else ""
    print(f"{args.out}: {m['count']} articles ({m['catalog_name']}){photos}, {m['dim']}-d {m['dtype']}, index "
          f"{m['index']['type']}{params}, backbone {m['backbone']['id']}, head {m['head']['name']}{fusion}{keys}, "
          f"searched with expansion {m['expansion']}, "
          f"{time.perf_counter() - start:.1f}s")
    for line in m["skipped_photos"]:
        print(f"  {line}")
    if m["dropped"]:
        more = f" (+{len(m['dropped']) - 10} more, see manifest.json)" if len(m["dropped"]) > 10 else ""
        print(f"  dropped {len(m['dropped'])} articles with no embeddable photo: {', '.join(m['dropped'][:10])}{more}")


def _read_ids(path: str) -> list[str]:
    """Ids from a file, one a line (blank lines ignored)."""
    from setenc.plumbing.errors import SetencError

    try:
        return [line.strip() for line in open(path, encoding="utf-8") if line.strip()]
    except OSError as e:
        raise SetencError(f"{path}: cannot read the ids to delete ({e.strerror})") from None


if __name__ == "__main__":
    run_main(main)
