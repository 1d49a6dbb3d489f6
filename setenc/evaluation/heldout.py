"""Which articles a checkpoint saw: the record of its training articles (ids and photo content hashes).

Why: judging "held out" by the catalogue's name scored a renamed or copied training catalogue as unseen, so its
numbers were optimistic without a word (issue 26). A checkpoint now records the ids and the photos' content hashes
(`photos.cache.file_hash`, the embedding cache's key) of every article it trained or validated on, so evaluation asks
the articles themselves, wherever the catalogue lives. An article overlaps when one of its photos has the content of
a training photo, or its id is a training id (ids are opaque and may collide: the report counts each cause apart).
`evaluation.report.choose_split` scores the rest (`split_by_record`); a checkpoint without the record is judged as
before, by the catalogue's name and ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from setenc.catalogs import Catalog
from setenc.plumbing.errors import SetencError
from setenc.photos.cache import file_hash

if TYPE_CHECKING:
    from setenc.encoder import SetEncoder

SEEN = "seen"  # the key of the record in a checkpoint's training info

PhotoHashes = Callable[[Sequence[Path]], list]  # paths -> content hash of each (None: unreadable)


def read_hashes(paths: Sequence[Path]) -> list[str | None]:
    """Content hashes read from the files (the embedding cache's `hashes` does the same with a stat cache)."""
    return [file_hash(p) if Path(p).is_file() else None for p in paths]


def seen_record(train: Catalog, val: Catalog, photo_hashes: PhotoHashes = read_hashes) -> dict:
    """What a checkpoint keeps of the articles it trained (`train`) and validated (`val`) on."""
    paths = train.image_paths + val.image_paths
    photos = sorted({h for h in photo_hashes(paths) if h is not None})
    return {"train": sorted(train.ids), "val": sorted(val.ids), "photos": photos}


@dataclass
class Overlap:
    """The articles of a catalogue that some checkpoint saw, and why."""

    ids: set[str]  # every overlapping article
    by_photo: int  # of them, sharing a photo's content with a training article
    by_id: int  # of them, sharing only an id
    val: set[str]  # the overlapping articles a checkpoint validated on (matchers are tuned there)

    def sentence(self) -> str:
        return (f"{len(self.ids)} overlap the articles the checkpoint(s) trained or validated on ({self.by_photo} by "
                f"photo content, {self.by_id} by id only)")


def overlap(catalog: Catalog, records: list[dict], photo_hashes: PhotoHashes = read_hashes) -> Overlap:
    """The articles of `catalog` that any of these records saw."""
    ids = {i for r in records for i in (*r["train"], *r["val"])}
    val = {i for r in records for i in r["val"]}
    photos = {h for r in records for h in r["photos"]}
    paths = catalog.image_paths
    hashes = dict(zip(paths, photo_hashes(paths)))
    by_photo = {a.id for a in catalog.articles if any(hashes.get(p) in photos for p in a.images)}
    by_id = {a.id for a in catalog.articles if a.id in ids} - by_photo
    return Overlap(by_photo | by_id, len(by_photo), len(by_id), (by_photo | by_id) & val)


def final_checkpoint_error(catalog: Catalog, heldout: dict) -> SetencError:
    """Nothing held out because the checkpoint is a `--final` one: say where its recipe was judged."""
    m = heldout["test/group"]
    return SetencError(f"{catalog.name}: this is a final checkpoint trained on every article, so nothing here is held "
                       f"out; its recipe was judged on {heldout['run_dir']}: group R@1 {m['recall@1']:.3f}, MAP@R "
                       f"{m['map@r']:.3f}. Evaluate it on another catalogue, or that run's checkpoint here")


def split_by_record(catalog: Catalog, encoders: dict[str, SetEncoder], split: str,
                    seen: Overlap) -> tuple[Catalog, Catalog | None, str]:
    """`choose_split` for checkpoints that record their training articles: score the articles none of them saw."""
    unrecorded = [n for n, e in encoders.items() if SEEN not in e.training_info]
    old = f"; {', '.join(unrecorded)} predate(s) the record of training articles: not counted" if unrecorded else ""
    if not seen.ids:
        return catalog, None, f"whole catalog (none of its articles is one the checkpoint(s) trained on){old}"
    if split == "all":
        return catalog, None, (f"whole catalog, INCLUDING the {len(seen.ids)} articles the head trained or "
                               f"validated on: its scores are optimistic; use --split test for held-out articles "
                               f"only{old}")
    test = catalog.subset(set(catalog.ids) - seen.ids, name=catalog.name)
    if not len(test):
        heldout = next((e.metrics.get("heldout") for e in encoders.values() if e.metrics.get("heldout")), None)
        if heldout and "test/group" in heldout:
            raise final_checkpoint_error(catalog, heldout)
        fractions = sorted({str(e.training_info.get("split")) for e in encoders.values() if SEEN in e.training_info})
        raise SetencError(f"{catalog.name}: the test split holds no article: every one is an article the head trained "
                          f"or validated on (split {', '.join(fractions)}); evaluate it on another catalogue, or pass "
                          "--split all to score every article (optimistic: the head saw them)")
    tune = seen.val or seen.ids  # never the scored articles
    tune_on = catalog.subset(tune, name=f"{catalog.name}-{'val' if seen.val else 'seen'}")
    return test, tune_on, (f"test split ({len(test)} of {len(catalog)} articles held out from training; the other "
                           f"{seen.sentence()} and are not scored){old}")
