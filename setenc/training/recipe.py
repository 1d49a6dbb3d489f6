"""The training recipe chosen from the catalogue: split, validation, schedule — so `train.py --catalog X` with no
other option is the package's best measured recipe for X.

Every rule below is a measurement over product folds x seeds on the real catalogues (docs/bench_heads.md, "The
default recipe"); the run prints what it chose and why, and any field given on the command line or in a config wins.
Fields left to the recipe are `None` (`backbone`, `split`, `epochs`, `tta`, `classes`, `loss`) or `"auto"` (`split_by`) in
`TrainConfig`, and the `proj` head's `mean_weight` when `head_kwargs` does not give it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass

from setenc.catalogs import Catalog, split_catalog
from setenc.photos.backbones import BACKBONES
from setenc.training.config import TrainConfig
from setenc.training.losses import LOSSES

CLASS_GROUPS = 40  # mean articles per group from which groups are classes (articleType), not products
LARGE = 20_000  # training articles from which a validation split is used (unmeasured: larger than any catalogue here)
PRODUCT_SPLIT = [0.7, 0.0, 0.3]  # whole products held out; no validation: every non-test product trains
ARTICLE_SPLIT = [0.9, 0.0, 0.1]  # groups are classes: held-out articles of known classes
LARGE_SPLIT = [0.8, 0.1, 0.1]
LARGE_EPOCHS = 15  # at most, with early stopping on validation MAP@R
MEAN_WEIGHT = 0.5  # proj's inference blend with mean pooling when products are held out (0 when groups are classes)
BACKBONE = "efficientnet-lite0+lite2-int8"  # two nets side by side, portable int8 (bench_heads.md round 12)
FUSION_BACKBONE = "efficientnet-lite0"  # a learned fusion of titles: the backbone it was measured with (titles.md)
TORCH_BACKBONE = "efficientnet-lite0+lite2"  # --runtime torch: BACKBONE's float twin (int8 runs on onnxruntime only)
PRODUCT_LOSS = "ms"  # whole products held out: Multi-Similarity (docs/bench_heads.md round 10; InfoNCE where classes)
CLASS_LOSS = ("infonce", {"temperature": 0.05})
TTA = "crop@0.75"  # each photo averaged with its central 75% (docs/tta.md): 2x the embedding, best crop measured


@dataclass
class CatalogStats:
    """What the recipe looks at."""

    articles: int
    mean_group: float  # articles per group (an article without a group is a group of its own)

    @classmethod
    def of(cls, catalog: Catalog) -> "CatalogStats":
        groups = Counter(a.group if a.group is not None else f"\0{a.id}" for a in catalog.articles)
        return cls(len(catalog), len(catalog) / max(1, len(groups)))

    @property
    def groups_are_classes(self) -> bool:
        """Many articles a group: groups are classes (articleType), not products."""
        return self.mean_group >= CLASS_GROUPS


def train_articles(catalog: Catalog, cfg: TrainConfig) -> int:
    """The articles the run's split trains on (hashed ids: not the fraction times the count)."""
    return len(split_catalog(catalog, tuple(cfg.split), by=cfg.split_by, seed=cfg.split_seed)["train"])


def scheduled_steps(steps: int, n_train: int, batch_size: int) -> int:
    """The fixed schedule's optimiser steps: `steps` from one full batch of training articles up; below it, in
    proportion to the articles, so each article is drawn as often as in a full batch's schedule and an 8-article
    catalogue trains in seconds rather than `steps` one-step epochs (docs/training.md#split-validation-and-schedule)."""
    return steps if n_train >= batch_size else max(1, math.ceil(steps * n_train / batch_size))


def photo_classes(cfg: TrainConfig, s: CatalogStats) -> bool:
    """Groups are classes that the photos alone must name (no learned fusion of titles)."""
    return s.groups_are_classes and cfg.fusion is None


def choose_photos(cfg: TrainConfig, catalog: Catalog) -> tuple[TrainConfig, list[str]]:
    """The backbone, its options and the photo variants left to the recipe, and why: what `embed.py` fills the
    cache with and `train.py` trains on — this one function decides both."""
    s = CatalogStats.of(catalog)
    out, why = dataclasses.replace(cfg), []
    classes = photo_classes(out, s)
    if out.backbone is None:
        if out.fusion is not None:
            out.backbone, reason = FUSION_BACKBONE, "a learned fusion of titles, measured with this backbone"
        elif out.runtime == "torch":
            out.backbone = TORCH_BACKBONE
            reason = f"runtime=torch: the float twin of {BACKBONE}, whose int8 graph runs on onnxruntime only"
        else:
            out.backbone = BACKBONE
            reason = (("classes named by the photos alone" if classes else "unseen fine-grained products")
                      + " are told apart best by two nets side by side, int8 (portable: the same vectors on every "
                      "CPU) at a little more than Lite0's cost; --backbone efficientnet-lite0 is the fastest")
        BACKBONES.check_options(out.backbone, out.backbone_kwargs)
        why.append(f"backbone={out.backbone}: {reason} (docs/training.md#backbone-and-the-fixed-choices)")
    if out.tta is None:
        out.tta = TTA
        why.append(f"tta={TTA}: each photo averaged with its central 75% crop, two backbone passes a photo "
                   "(docs/training.md#photo-variants; --tta none halves the embedding)")
    return out, why


def choose(cfg: TrainConfig, catalog: Catalog) -> tuple[TrainConfig, list[str]]:
    """The config with every field left to the recipe filled in, and one line per choice saying why."""
    s = CatalogStats.of(catalog)
    out, why = choose_photos(cfg, catalog)
    if out.split_by == "auto":
        classes = s.groups_are_classes
        out.split_by = "article" if classes else "group"
        why.append(f"split_by={out.split_by}: {s.mean_group:.1f} articles per group on average "
                   + (f"(>= {CLASS_GROUPS}: groups are classes, so held-out ARTICLES of known classes are scored)"
                      if classes else f"(< {CLASS_GROUPS}: groups are products, so whole products are held out)"))
    if out.loss is None:
        products = out.split_by == "group"
        out.loss = PRODUCT_LOSS if products else CLASS_LOSS[0]
        out.loss_kwargs = out.loss_kwargs or ({} if products else dict(CLASS_LOSS[1]))
        LOSSES.check_options(out.loss, out.loss_kwargs)
        why.append(f"loss={out.loss}: " + (
            "unseen products are searched among the trained ones, which Multi-Similarity does not pack together "
            "(docs/training.md#loss)" if products else
            "groups are classes the head learns; InfoNCE, temperature 0.05 (docs/training.md#loss)"))
    if out.split is None:
        large = s.articles * LARGE_SPLIT[0] >= LARGE
        out.split = list(LARGE_SPLIT if large else ARTICLE_SPLIT if out.split_by == "article" else PRODUCT_SPLIT)
        why.append(f"split={out.split}: {train_articles(catalog, out)} training articles " + (
            f"(>= {LARGE}: a validation split picks the best epoch and stops early)" if large else
            f"(< {LARGE}: no validation split — every non-test article trains, a fixed schedule runs to its end "
            "and its last epoch is kept: docs/training.md#split-validation-and-schedule)"))
    if out.epochs is None:
        if out.split[1] > 0:
            out.epochs = LARGE_EPOCHS
            why.append(f"epochs={out.epochs} at most, early stopping on {out.monitor} (patience {out.patience})")
        else:
            n_train = round(s.articles * out.split[0])  # the schedule's estimate, as measured (docs/bench_heads.md)
            steps_per_epoch = n_train // out.batch_size if n_train > out.batch_size else 1  # the loader drops the last
            steps = scheduled_steps(out.steps, n_train, out.batch_size)
            out.epochs = math.ceil(steps / steps_per_epoch)
            n_train = train_articles(catalog, out)  # the steps said are the run's own, from its split's count
            steps_per_epoch = n_train // out.batch_size if n_train > out.batch_size else 1
            why.append(f"epochs={out.epochs}: {steps_per_epoch} step(s) an epoch, {out.epochs * steps_per_epoch} "
                       "optimiser steps in all" + ("" if steps == out.steps else
                                                   f" (fewer training articles than a batch of {out.batch_size}: "
                                                   f"steps={out.steps} scaled down in proportion; "
                                                   "docs/training.md#split-validation-and-schedule)"))
    if out.classes is None:
        unlabelled = out.positives == "unlabelled"
        out.classes = photo_classes(out, s) and not unlabelled
        why.append(f"classes={str(out.classes).lower()}: " + (
            "groups are classes: a class probe's probabilities join each vector (docs/training.md#class-block)"
            if out.classes else "positives=unlabelled: training reads no group (docs/training.md#without-labels)"
            if unlabelled else "a learned fusion's titles already name the classes (docs/training.md#class-block)"
            if s.groups_are_classes else "groups are products: unseen ones have no class to name "
            "(docs/training.md#class-block)"))
    if out.head == "proj" and not {"mean_weight", "out_dim"} & set(out.head_kwargs):
        weight = MEAN_WEIGHT if out.split_by == "group" else 0.0
        out.head_kwargs = {**out.head_kwargs, "mean_weight": weight}
        why.append(f"head_kwargs.mean_weight={weight:g}: " + (
            "unseen products are searched: the head's direction blended with mean pooling's at inference "
            "(docs/training.md#blend-with-mean-pooling)" if weight else
            "groups are classes the head learns: its own direction alone (docs/training.md#blend-with-mean-pooling)"))
    return out, why
