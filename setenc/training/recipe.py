"""The training recipe chosen from the catalogue: split, validation, schedule — so `train.py --catalog X` with no
other option is the package's best measured recipe for X.

Every rule below is a measurement over product folds x seeds on the real catalogues (docs/bench_heads.md, "The
default recipe"); the run prints what it chose and why, and any field given on the command line or in a config wins.
Fields left to the recipe are `None` (`backbone`, `split`, `epochs`, `tta`, `classes`) or `"auto"` (`split_by`) in
`TrainConfig`, and the `proj` head's `mean_weight` when `head_kwargs` does not give it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass

from setenc.catalogs import Catalog
from setenc.photos.backbones import BACKBONES
from setenc.training.config import TrainConfig

CLASS_GROUPS = 40  # mean articles per group from which groups are classes (articleType), not products
LARGE = 20_000  # training articles from which a validation split is used (unmeasured: larger than any catalogue here)
PRODUCT_SPLIT = [0.7, 0.0, 0.3]  # whole products held out; no validation: every non-test product trains
ARTICLE_SPLIT = [0.9, 0.0, 0.1]  # groups are classes: held-out articles of known classes
LARGE_SPLIT = [0.8, 0.1, 0.1]
LARGE_EPOCHS = 15  # at most, with early stopping on validation MAP@R
MEAN_WEIGHT = 0.5  # proj's inference blend with mean pooling when whole products are held out (0 when groups are classes)
BACKBONE = "efficientnet-lite0"  # products: the pair measured level on grocery / multiview R@1, far ahead on cars
CLASS_BACKBONE = "efficientnet-lite0+lite2"  # groups are classes: both nets side by side, ~3x Lite0's cost
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


def choose(cfg: TrainConfig, catalog: Catalog) -> tuple[TrainConfig, list[str]]:
    """The config with every field left to the recipe filled in, and one line per choice saying why."""
    s = CatalogStats.of(catalog)
    out, why = dataclasses.replace(cfg), []
    photo_classes = s.groups_are_classes and out.fusion is None  # classes the photos alone must name
    if out.backbone is None:
        out.backbone = CLASS_BACKBONE if photo_classes else BACKBONE
        BACKBONES.check_options(out.backbone, out.backbone_kwargs)
        why.append(f"backbone={out.backbone}: " + (
            "groups are classes, named by the photos alone: EfficientNet-Lite0 and -Lite2 side by side (2560-d) "
            "tell them apart better than Lite0 (fashion44k R@1 0.892 vs 0.874, MAP@R 0.795 vs 0.775, 5 folds x 2 "
            "seeds; docs/bench_heads.md, round 8), at ~3x the embedding cost" if photo_classes else
            "the offline default (1280-d); efficientnet-lite0+lite2 is the measured option for fine-grained "
            "products (cars +0.044 R@1, +0.067 MAP@R, 5 folds x 2 seeds) at ~3x the embedding cost"))
    if out.split_by == "auto":
        classes = s.groups_are_classes
        out.split_by = "article" if classes else "group"
        why.append(f"split_by={out.split_by}: {s.mean_group:.1f} articles per group on average "
                   + (f"(>= {CLASS_GROUPS}: groups are classes, so held-out ARTICLES of known classes are scored)"
                      if classes else f"(< {CLASS_GROUPS}: groups are products, so whole products are held out)"))
    if out.split is None:
        large = s.articles * LARGE_SPLIT[0] >= LARGE
        out.split = list(LARGE_SPLIT if large else ARTICLE_SPLIT if out.split_by == "article" else PRODUCT_SPLIT)
        why.append(f"split={out.split}: ~{s.articles * out.split[0]:.0f} training articles " + (
            f"(>= {LARGE}: a validation split picks the best epoch and stops early)" if large else
            f"(< {LARGE}: no validation split — every non-test article trains, a fixed schedule runs to its end "
            "and its last epoch is kept; measured better than validating on grocery, multiview, cars, fashion44k)"))
    if out.epochs is None:
        if out.split[1] > 0:
            out.epochs = LARGE_EPOCHS
            why.append(f"epochs={out.epochs} at most, early stopping on {out.monitor} (patience {out.patience})")
        else:
            n_train = round(s.articles * out.split[0])
            steps_per_epoch = n_train // out.batch_size if n_train > out.batch_size else 1  # the loader drops the last
            out.epochs = math.ceil(out.steps / steps_per_epoch)
            why.append(f"epochs={out.epochs}: {steps_per_epoch} step(s) an epoch, ~{out.steps} optimiser steps in all")
    if out.tta is None:
        out.tta = TTA
        why.append(f"tta={TTA}: every photo is averaged with its central 75% crop (the product larger in the frame), "
                   "at twice the embedding cost; over the 87.5% crop held-out R@1 +0.017 grocery, +0.006 "
                   "fashion44k, multiview 0.967 vs 0.955, cars equal (docs/bench_heads.md, round 6); "
                   "crop+crop@0.75 is +0.02 on cars at 3x the cost; --tta none saves the cost")
    if out.classes is None:
        out.classes = photo_classes
        why.append(f"classes={str(out.classes).lower()}: " + (
            "groups are classes, so a softmax probe over each article's mean photo vector, fitted on the training "
            "articles, appends its class probabilities to the head's vector (setenc/heads/classes.py; fashion44k R@1 "
            "0.874 vs 0.865, MAP@R 0.775 vs 0.739, 5 folds x 2 seeds)" if out.classes else
            "groups are classes, but a learned fusion's titles already name them (fashion44k fold 0: 0.961 / 0.899 "
            "without the class block, 0.948 / 0.877 with it)" if s.groups_are_classes else
            "groups are products, which a class probe cannot name for products it never saw"))
    if out.head == "proj" and not {"mean_weight", "out_dim"} & set(out.head_kwargs):
        weight = MEAN_WEIGHT if out.split_by == "group" else 0.0
        out.head_kwargs = {**out.head_kwargs, "mean_weight": weight}
        why.append(f"head_kwargs.mean_weight={weight:g}: " + (
            "unseen products are searched, so at inference the learned direction is blended with mean pooling's, "
            "which keeps what the frozen backbone knows about them (better on grocery and cars; multiview 0.957 "
            "vs 0.961 without it, 5 folds x 2 seeds)"
            if weight else "groups are classes the head learns, so its own direction alone (a blend measured worse "
            "on fashion44k)"))
    return out, why
