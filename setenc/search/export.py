"""Writing exports and editing them: `export_index` (full, `append`, `update`) and `delete_articles`.

Catalogue edits never re-encode what did not change. Deleting and updating rebuild the FAISS index from the stored
vectors (`ann.refill`: same kind, same training, rows re-added in order) rather than calling FAISS `remove_ids`:
row number = position in ids.json keeps holding (IVF's removal leaves gaps in the labels, HNSW has none at all),
re-adding is cheap next to encoding, and the result equals a full export of the edited catalogue for flat and
HNSW indexes. A trained index (IVF, PQ) keeps its training, as with `append`: re-export once the catalogue has
changed several-fold. Every edit is written by the same crash-safe swap as an export (`store.write_export`), so
the manifest's checksums always describe the files beside it.

An export also keeps each article's filterable metadata (`setenc.search.filters`: `where=` needs no catalogue later), and
an encoder with a title fusion (a checkpoint of `scripts/evaluate.py --text`) exports fused vectors of the
catalogue's photos and titles (`SetEncoder.encode_articles`), recorded in the manifest's `fusion`. A view-aware
head (`setenc.heads.views`) encodes each article with its photos' `views` tags, as it was trained and evaluated.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from setenc import __version__
from setenc.search.ann import build_index, refill
from setenc.catalogs import Catalog, load_catalog
from setenc.encoder import SetEncoder
from setenc.search.expansion import Expansion, resolve
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.search.filters import Metadata
from setenc.plumbing.paths import file_sha256
from setenc.photos import photo_sets
from setenc.photos.tta import spec_tta
from setenc.search.store import FORMAT, Export, PhotoStore, locked, read_export, write_export


def export_index(
    encoder: SetEncoder,
    catalog: Catalog | str | os.PathLike,
    cache_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    index: str | None = None,
    dtype: str | None = None,
    append: bool = False,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    update: bool = False,
    shards: int = 1,
    expansion: str | Expansion | None = "auto",
) -> dict:
    """Encode the articles of `catalog` and write the export folder `out_dir` atomically.

    Args:
        encoder: the set encoder (its backbone embeds the photos missing from the cache).
        catalog: a catalog, or the path of its manifest (then recorded, so `search.py` can show titles and photos).
        cache_root: the photo-embedding cache root.
        index: "flat" (default), "ivf", "ivfpq", "hnsw" or a FAISS factory string; with `append` / `update`, the
            export's own.
        dtype: "float32" (default) or "float16" for vectors.npy and photos.npy; the index holds the same values.
        append: add only the articles not in the export yet; existing rows, their order and the index stay
            (a trained index keeps its training: re-export once the catalogue has grown several-fold).
        update: re-encode every article of `catalog` (changed photos): rows of known ids are replaced in place,
            new ids added at the end, the others kept; an updated article left with no photo is removed.
        checkpoint_path: the encoder's checkpoint file, recorded so photo queries can rebuild the encoder;
            default: `encoder.checkpoint_path` when set.
        expansion: the neighbour expansion searches of this export use by default (`setenc.search.expansion`):
            "auto" (what the checkpoint's kind and this catalogue's articles per group call for: `expansion_for`;
            with `append` / `update`, the export's own), a spec such as "dba5+qe2", or "none"; recorded in the
            manifest, and a search may still ask for another.

    Returns:
        the manifest written. Articles with no embeddable photo are listed in `manifest["dropped"]`.
    """
    out = Path(out_dir)
    catalog_path = None
    expansion = Expansion.parse(expansion) if expansion != "auto" else expansion  # a bad spec: before any work
    if not isinstance(catalog, Catalog):
        catalog_path = str(Path(catalog).resolve())
        catalog = load_catalog(catalog)
    with locked(out):
        old = None
        if (append or update) and out.exists():
            old = read_export(out)
            check_encoder(old.manifest, encoder, out)
        if expansion == "auto":  # an edit lists only the changes: the export keeps the expansion it was written with
            expansion = Expansion.parse(old.manifest.get("expansion", "none")) if old is not None \
                else resolve(expansion, encoder, catalog)
        kind = _agree("index type", index, old and old.manifest["index"]["type"], "flat")
        dtype = _agree("dtype", dtype, old and old.manifest["dtype"], "float32")
        if dtype not in ("float32", "float16"):
            raise SetencError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        known = set(old.ids) if old and not update else set()
        todo = catalog.subset([i for i in catalog.ids if i not in known])
        vecs, photos, metadata, ids, dropped, skipped = encode_catalog(encoder, todo, cache_root, dtype, progress)
        if old is None:
            if not ids:
                raise SetencError(f"catalog {catalog.name}: no article has an embeddable photo "
                                  f"({len(dropped)} dropped); nothing to export")
            faiss_index, params = build_index(vecs, kind, shards=shards)
            new = Export(faiss_index, ids, {}, vecs.astype(dtype), photos, metadata)
        else:
            new = _merge(old, ids, vecs, photos, metadata, dropped)
            params = old.manifest["index"]["params"]
            dropped = sorted((set(old.manifest["dropped"]) - set(new.ids)) | set(dropped))
        source = (catalog_path, catalog.name)
        if old is not None and (update or not catalog_path):  # an update lists only the changes: keep the full one
            source = (old.manifest.get("catalog"), old.manifest.get("catalog_name", catalog.name))
        new.manifest = _manifest(encoder, len(new.ids), vecs.shape[1], kind, params, dtype, dropped,
                                 checkpoint_path or getattr(encoder, "checkpoint_path", None), *source)
        new.manifest["expansion"] = expansion.name if expansion else "none"
        manifest = write_export(out, new)
    return {**manifest, "skipped_photos": skipped}


def delete_articles(out_dir: str | os.PathLike, ids: Sequence[str]) -> dict:
    """Remove articles `ids` from an export (no encoder needed); unknown ids are an error naming them."""
    out = Path(out_dir)
    with locked(out):
        old = read_export(out)
        unknown = sorted(set(ids) - set(old.ids))
        if unknown:
            raise SetencError(f"{out}: {len(unknown)} id(s) to delete are not in the export: "
                              f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
        gone = set(ids)
        keep = [r for r, i in enumerate(old.ids) if i not in gone]
        if not keep:
            raise SetencError(f"{out}: deleting {len(gone)} id(s) would leave the export empty; remove the folder")
        vectors = np.asarray(old.vectors[keep])
        new = Export(refill(old.index, vectors), [old.ids[r] for r in keep],
                     {**old.manifest, "count": len(keep), "created": _now()}, vectors,
                     old.photos.select(keep) if old.photos is not None else None,
                     old.metadata.select(keep) if old.metadata is not None else None)
        return write_export(out, new)


def _merge(old: Export, ids: list[str], vecs: np.ndarray, photos: PhotoStore, metadata: Metadata,
           dropped: list[str]) -> Export:
    """`old` with the rows of `ids` replaced in place, new ids appended and `dropped` ids removed.

    Pure additions keep the old index and add to it (as `append` always did); anything else refills it.
    An old export without metadata stays without (its old rows' metadata is unknown): re-export to filter it."""
    dtype = old.vectors.dtype
    row = {i: r for r, i in enumerate(old.ids)}
    by_id = {i: j for j, i in enumerate(ids)}
    keep = [r for r, i in enumerate(old.ids) if i not in set(dropped)]
    fresh = [j for j, i in enumerate(ids) if i not in row]
    all_vecs = np.array(old.vectors, np.float32)  # a writable copy of the memory-mapped rows
    replaced = [(row[i], j) for j, i in enumerate(ids) if i in row]
    for r, j in replaced:
        all_vecs[r] = vecs[j]
    out_ids = [old.ids[r] for r in keep] + [ids[j] for j in fresh]
    out_vecs = np.concatenate([all_vecs[keep], vecs[fresh]]).astype(dtype)
    out_photos = None
    if old.photos is not None:
        by_row = {r: j for r, j in replaced}
        sets = [photos.set(by_row[r]) if r in by_row else old.photos.set(r) for r in keep]
        out_photos = PhotoStore.from_sets(sets + photos.sets(fresh), photos.dim, dtype)
    out_meta = None
    if old.metadata is not None:
        both = old.metadata.concat(metadata, len(old.ids), len(ids))  # old rows, then the encoded ones
        out_meta = both.select([len(old.ids) + by_id[old.ids[r]] if old.ids[r] in by_id else r for r in keep]
                               + [len(old.ids) + j for j in fresh])
    if replaced or len(keep) < len(old.ids):
        index = refill(old.index, out_vecs)
    else:
        index = old.index
        if fresh:
            index.add(np.ascontiguousarray(vecs[fresh], np.float32))
    return Export(index, out_ids, {}, out_vecs, out_photos, out_meta)


def _agree(what: str, asked: str | None, existing: str | None, default: str) -> str:
    """The setting to use: the existing export's when appending / updating (a different explicit one is refused)."""
    if existing is None:
        return asked or default
    if asked is not None and asked != existing:
        raise SetencError(f"cannot append / update with {what} {asked!r} an export built with {existing!r}; "
                          f"drop the option or re-export without append / update")
    return existing


def encode_catalog(encoder: SetEncoder, catalog: Catalog, cache_root, dtype: str = "float32", progress: bool = False
                   ) -> tuple[np.ndarray, PhotoStore, Metadata, list[str], list[str], list[str]]:
    """(N, E) float32 article vectors (rounded through `dtype`; fused with the titles when the encoder has a
    fusion), their photo vectors, metadata, ids, dropped ids and skipped-photo lines: what an export holds, for
    callers that need it in memory (de-duplication, benchmarks) rather than in a folder.

    A view-aware head gets each article's photo tags, as trained and evaluated (a tag-free head ignores them)."""
    empty = (np.zeros((0, encoder.out_dim), np.float32), PhotoStore.from_sets([], encoder.dim, dtype), Metadata({}))
    if len(catalog) == 0:
        return *empty, [], [], []
    sets, kept, dropped, report = photo_sets(catalog, encoder.backbone, cache_root, progress=progress, tta=encoder.tta)
    skipped = report.skipped_lines()
    if not sets:
        return *empty, [], dropped, skipped
    titles = [a.title for a in kept] if takes_titles(encoder) else None  # cached beside the photo vectors
    vecs = encoder.encode_articles(sets, titles, cache_root, views=_kept_views(kept, report.skipped))
    vecs = vecs.astype(dtype).astype(np.float32)  # (N, E) the values vectors.npy holds
    bad = ~np.isfinite(vecs).all(1)
    if bad.any():
        raise SetencError(f"article {kept.ids[int(np.argmax(bad))]!r}: its vector holds NaN/inf; "
                          "check its photos and the checkpoint")
    return vecs, PhotoStore.from_sets(sets, encoder.dim, dtype), Metadata.from_articles(kept), kept.ids, dropped, skipped


def _kept_views(kept: Catalog, skipped: Sequence[tuple[str, str]]) -> list[tuple[str, ...] | None]:
    """Per kept article the view tags of its photos that were embedded, in set order (one tag per photo: a TTA in
    `elements` mode repeats them itself, `views.view_ids`); a photo missing from the cache for any other reason
    leaves the rows unmatched, so that set's photos count as unknown rather than shifted onto the wrong tags."""
    gone = {p for p, _ in skipped}
    return [None if a.views is None else tuple(t for p, t in zip(a.images, a.views) if str(p) not in gone)
            for a in kept]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _manifest(encoder: SetEncoder, count: int, dim: int, kind: str, params: dict, dtype: str, dropped: list[str],
              checkpoint_path, catalog_path: str | None, catalog_name: str) -> dict:
    sha = getattr(encoder, "checkpoint_sha256", None)
    return {
        "format": FORMAT,
        "setenc_version": __version__,
        "created": _now(),
        "backbone": dict(encoder.backbone_spec),
        "photo_dim": encoder.dim,
        "head": {"name": encoder.head.name, "config": encoder.head.config},
        "fusion": fusion_record(encoder),
        "checkpoint": {"path": str(Path(checkpoint_path).resolve()) if checkpoint_path and sha else None,
                       "sha256": sha},
        "dim": dim,
        "count": count,
        "index": {"type": kind, "params": params},
        "dtype": dtype,
        "catalog": catalog_path,
        "catalog_name": catalog_name,
        "dropped": list(dropped),
    }


def takes_titles(encoder: SetEncoder) -> bool:
    """Whether the encoder's article vectors use titles: a late fusion, or a head trained with titles as a set
    element (learned fusion: its head config records the title size)."""
    return encoder.fusion is not None or getattr(encoder.head, "titles", None) is not None


def fusion_record(encoder: SetEncoder) -> dict | None:
    """What the manifest records of an encoder's title fusion: photo weight, title encoder id and dims."""
    f = encoder.fusion
    return None if f is None else {"weight": f.weight, "text": f.text_id, "text_dim": f.text.dim}


def _describe_fusion(record: dict | None) -> str:
    return "photos only" if record is None else f"photos + titles ({record['text']}, w={record['weight']})"


def check_encoder(manifest: dict, encoder: SetEncoder, where: str | os.PathLike = "index") -> None:
    """Refuse an encoder that is not the one the export was built with: its vectors would not be comparable."""
    spec, head = manifest["backbone"], manifest["head"]
    have, want = fusion_record(encoder), manifest.get("fusion")
    if (have is None) != (want is None) or (have and (have["weight"], have["text"]) != (want["weight"], want["text"])):
        raise CheckpointError(f"{where}: the encoder encodes {_describe_fusion(have)} but this index was exported "
                              f"with {_describe_fusion(want)}; use the checkpoint it was exported with, or re-export")
    problems = []
    if encoder.backbone_spec.get("id") != spec.get("id") or encoder.dim != manifest["photo_dim"]:
        problems.append(f"backbone {encoder.backbone_spec.get('id')} ({encoder.dim}-d photos) instead of "
                        f"{spec.get('id')} ({manifest['photo_dim']}-d)")
    if encoder.tta != spec_tta(spec):  # the same head on other photo variants gives other vectors
        problems.append(f"photo variants (tta) {encoder.tta} instead of {spec_tta(spec)}")
    if encoder.head.config != head["config"] or encoder.out_dim != manifest["dim"]:
        problems.append(f"head {encoder.head.config} instead of {head['config']}")
    sha, want = getattr(encoder, "checkpoint_sha256", None), manifest["checkpoint"]["sha256"]
    if sha and want and sha != want:
        problems.append(f"checkpoint sha256 {sha[:12]}… instead of {want[:12]}…")
    if problems:
        raise CheckpointError(f"{where}: the encoder differs from the one this index was exported with: "
                              f"{'; '.join(problems)}. Use that encoder, or re-export the index with this one")


def encoder_from_manifest(manifest: dict) -> SetEncoder:
    """Rebuild the export's encoder: a parameter-free head from its config, else the recorded checkpoint."""
    from setenc.heads.model import create_head

    ckpt = manifest["checkpoint"]
    if ckpt["sha256"] is None and manifest.get("fusion"):
        raise CheckpointError("this index holds photos + titles, but no checkpoint was recorded to rebuild its "
                              "encoder; pass encoder= (scripts: --checkpoint), or query by vector")
    if ckpt["sha256"] is None:
        enc = SetEncoder(create_head(**manifest["head"]["config"]).eval(), manifest["backbone"], manifest["photo_dim"])
        enc.checkpoint_sha256 = None
        return enc
    path = ckpt["path"]
    if path is None or not Path(path).is_file() or file_sha256(path) != ckpt["sha256"]:
        raise CheckpointError(f"photo queries need the checkpoint this index was exported with "
                              f"({path or 'path not recorded'}, sha256 {ckpt['sha256'][:12]}…), which is missing or "
                              "changed; pass encoder=SetEncoder.from_pretrained(...) (scripts: --checkpoint), "
                              "or query by vector")
    return SetEncoder.from_pretrained(path)
