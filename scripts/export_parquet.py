"""Write an export's article vectors as Parquet (embedding-reader / clip-retrieval convention):
`python scripts/export_parquet.py --index exports/demo --out exports/demo-parquet`.

Columns: id, embedding (list<float32>), n_photos, and the catalogue's fields (the export's recorded catalogue, or
--catalog). Needs pyarrow: `pip install "setenc[scale]"`.
"""

import argparse

from setenc.plumbing.cli import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="export folder written by scripts/export.py")
    p.add_argument("--out", required=True, help="new folder for the part-NNNNN.parquet files")
    p.add_argument("--catalog", default=None, help="manifest for the metadata columns (default: the recorded one)")
    p.add_argument("--rows-per-file", type=int, default=100_000, help="articles per Parquet file")
    args = p.parse_args()

    from setenc.search.parquet import export_parquet

    out = export_parquet(args.index, args.out, args.catalog, args.rows_per_file)
    print(f"[parquet] {out['rows']} articles x {out['dim']} in {len(out['files'])} file(s) under {out['out']}; "
          f"columns: {', '.join(out['columns'])}" + ("" if out["catalog"] else " (no catalogue: no metadata)"))


if __name__ == "__main__":
    run_main(main)
