"""Serve an export over HTTP: `python scripts/serve.py --index DIR [--port 8000] [--photo-root DIR]`.

Loads the export and its encoder (backbone included) once, then answers `POST /search`,
`GET /articles/{id}/similar` and `GET /health` (setenc/search/service.py); interactive docs at /docs. Needs the
`[serve]` extra. Paths in /search are read only under --photo-root; without it, clients upload photos.
Both search endpoints take `where=KEY=VALUE` filters (repeatable); /search takes a `title` on an export of a fused
checkpoint (photos + titles).
"""

import argparse

from setenc.plumbing.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="export folder written by scripts/export.py")
    p.add_argument("--checkpoint", default=None, help="the head the export was built with (when it moved)")
    p.add_argument("--expand", default=None, metavar="SPEC",
                   help="neighbour expansion: dba<k>+qe<k> (e.g. dba5+qe2) or none; default: the export's")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--photo-root", default=None, help="folder under which /search may read photo paths")
    p.add_argument("--max-photo-mb", type=float, default=20, help="largest uploaded photo")
    p.add_argument("--max-photos", type=int, default=32, help="most photos in one query set")
    p.add_argument("--vectors-only", action="store_true",
                   help="do not load the encoder: /similar only (photo queries then fail with a message)")
    args = p.parse_args()

    from setenc.encoder import SetEncoder
    from setenc.search.index import SetIndex
    from setenc.search.service import create_app

    encoder = SetEncoder.from_pretrained(args.checkpoint) if args.checkpoint else None
    index = SetIndex.load(args.index, encoder, expansion=args.expand)
    if not args.vectors_only:
        index.encoder.backbone  # noqa: B018 — build encoder and backbone now, not on the first request
    app = create_app(index, args.photo_root, int(args.max_photo_mb * 2**20), args.max_photos)
    import uvicorn

    print(f"serving {args.index} ({len(index)} articles) on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_main(main)
