"""Self-describing checkpoints and inference: `SetEncoder.from_pretrained(path).encode(list_of_photo_sets)`.

A checkpoint holds the head's constructor config, its weights, the backbone's name / kwargs / id and the
photo-embedding dim — never an `nn.Module`, never backbone weights — and loads with `weights_only=True`,
so a file carrying a pickle payload is refused. Lightning `.ckpt` files written by `setenc.training` load too.
A checkpoint may also carry a title fusion (`setenc.titles.fusion.Fusion`: the tuned photo weight and the title encoder's
spec); `encode_articles(sets, titles)` then gives fused vectors, the ones an index of photos + titles holds.
A learned fusion (a head trained with titles as a set element, `heads.create_head(..., titles=T)`) records its title
encoder's spec instead, and `encode_articles(sets, titles)` feeds the titles to the head: same entry point.
This module does not import Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.titles.fusion import Fusion
from setenc.heads.model import ArticleHead, create_head
from setenc.photos import load_image
from setenc.photos.tta import TTA, embed_views, spec_tta
from setenc.plumbing.paths import file_sha256
from setenc.heads.sets import pad_ids, pad_sets
from setenc.heads.views import sets_view_ids

FORMAT = "setenc-head-v1"


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — truncated zip, pickle payload, not a checkpoint at all
        raise CheckpointError(
            f"{path}: cannot be loaded as a setenc checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "It is truncated, not a checkpoint, or carries objects other than tensors and plain values "
            "(refused: checkpoints load with weights_only=True)"
        ) from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not a setenc checkpoint (top level is {type(blob).__name__})")
    if blob.get("format") == FORMAT:
        return blob
    hp = blob.get("hyper_parameters", {})
    if "head" in hp and "state_dict" in blob:  # a Lightning checkpoint of setenc.training.module.SetModule
        sd = {k[len("head."):]: v for k, v in blob["state_dict"].items() if k.startswith("head.")}
        return {"format": FORMAT, "head": hp["head"], "state_dict": sd, "backbone": hp["backbone"], "dim": hp["dim"]}
    raise CheckpointError(f"{path}: not a setenc checkpoint (no head config inside)")


class SetEncoder(torch.nn.Module):
    """A trained set head plus the description of the frozen backbone it was trained on.

    Args:
        head: the set head.
        backbone: `{"name", "kwargs", "id"}` of the backbone whose photo vectors the head takes.
        dim: photo-vector size the head expects.
    """

    def __init__(self, head: ArticleHead, backbone: dict, dim: int, metrics: dict | None = None,
                 training: dict | None = None, fusion: Fusion | None = None, text=None):
        """`text`: a learned fusion's title encoder (a `TextEncoder`, or its spec from a checkpoint)."""
        super().__init__()
        if (head.titles is None) != (text is None):
            raise CheckpointError("a head that fuses titles needs its title encoder, and only such a head takes one")
        if head.titles is not None and fusion is not None:
            raise SetencError("this head fuses titles itself (learned fusion): it takes no late fusion on top")
        self._text = text
        self.head, self.backbone_spec, self.dim, self.metrics = head, dict(backbone), int(dim), dict(metrics or {})
        self.training_info = dict(training or {})  # catalog + split it was trained on: evaluation holds them out
        self.fusion = fusion  # photos + titles late fusion, None = photos only
        self.calibration = None  # score -> P(same group) of these vectors (setenc.matching.calibration); not fused
        self._backbone = None

    # -- persistence ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": FORMAT, "head": self.head.config, "state_dict": self.head.state_dict(),
                "backbone": self.backbone_spec, "dim": self.dim, "metrics": self.metrics,
                "training": self.training_info, **({"fusion": self.fusion.state()} if self.fusion else {}),
                **({"text": self._text if isinstance(self._text, dict) else self._text.spec()} if self._text else {}),
                **({"calibration": self.calibration.state()} if self.calibration else {})}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a crash leaves the previous file intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, backbone=None) -> "SetEncoder":
        """Load a checkpoint (ours or a Lightning one); `backbone`, if given, must be the one it was trained on."""
        path = Path(path)
        blob = _read(path)
        try:
            head = create_head(**blob["head"])
            head.load_state_dict(blob["state_dict"])
        except (KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: head weights do not fit its config ({str(e).splitlines()[0][:200]})") from None
        fusion = Fusion.from_state(blob["fusion"]) if blob.get("fusion") else None
        enc = cls(head.eval(), blob["backbone"], blob["dim"], blob.get("metrics"), blob.get("training"), fusion,
                  blob.get("text"))
        enc.checkpoint_sha256 = file_sha256(path)
        enc.checkpoint_path = str(path.resolve())  # an export records it, so its index can rebuild this encoder
        if blob.get("calibration"):
            from setenc.matching.calibration import Calibration

            enc.calibration = Calibration.from_state(blob["calibration"])
        if backbone is not None:
            enc.set_backbone(backbone)
        return enc

    @classmethod
    def parameter_free(cls, backbone, head: str = "mean") -> "SetEncoder":
        """An encoder with no trained weights (mean pooling): the baseline, and export without a checkpoint."""
        spec = {"name": backbone.name, "kwargs": dict(getattr(backbone, "kwargs", {})), "id": backbone.id}
        enc = cls(create_head(head, backbone.dim).eval(), spec, backbone.dim)
        enc.checkpoint_sha256 = enc.checkpoint_path = None
        enc._backbone = backbone
        return enc

    # -- backbone ------------------------------------------------------------------------------------
    def set_backbone(self, backbone) -> None:
        """Attach a backbone instance; refuse one that is not the backbone the head was trained on."""
        want = self.backbone_spec.get("id")
        if backbone.dim != self.dim or (want is not None and backbone.id != want):
            raise CheckpointError(
                f"checkpoint was trained on backbone {want} ({self.dim}-d), got {backbone.id} ({backbone.dim}-d): "
                "photo vectors from another backbone are meaningless to this head"
            )
        self._backbone = backbone

    @property
    def backbone(self):
        """The frozen photo encoder, created on first use from the checkpoint's description."""
        if self._backbone is None:
            from setenc.photos import create_backbone

            self.set_backbone(create_backbone(self.backbone_spec["name"], **self.backbone_spec.get("kwargs", {})))
        return self._backbone

    @property
    def tta(self) -> TTA:
        """The photo variants the head's vectors were made with (in the backbone spec): photos here get them too."""
        return spec_tta(self.backbone_spec)

    # -- encoding ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_embeddings(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor | None = None,
                          titles: torch.Tensor | None = None) -> torch.Tensor:
        """Cached photo vectors `x (B, N, D)` + `mask (B, N)` (+ view ids `(B, N)`, title vectors `(B, T)`) -> one
        unit vector per set."""
        if x.shape[-1] != self.dim:
            raise CheckpointError(f"photo vectors are {x.shape[-1]}-d, this head takes {self.dim}-d")
        return self.head(x, mask, views, titles)

    def encode_sets(self, sets: Sequence[np.ndarray], batch_size: int = 256,
                    views: Sequence[Sequence[str] | None] | None = None,
                    titles: np.ndarray | None = None) -> np.ndarray:
        """Per-set `(n_i, D)` photo vectors -> `(len(sets), E)` float32.

        `views`: per set its photos' view tags (or None); a view-aware head maps them to its vocabulary (unseen
        tags: unknown), a tag-free head ignores them. `titles`: `(len(sets), T)` title vectors for a learned
        fusion (zero rows: no title; a `(0, D)` set is then a title-only article).
        """
        ids = None if self.head.views is None else sets_view_ids(sets, views, self.head.views, self.tta.per_photo)
        out = []
        for i in range(0, len(sets), batch_size):
            x, mask = pad_sets(sets[i : i + batch_size], empty_ok=titles is not None)
            v = None if ids is None else pad_ids(ids[i : i + batch_size])
            t = None if titles is None else torch.as_tensor(np.asarray(titles[i : i + batch_size], np.float32))
            out.append(self.encode_embeddings(x, mask, v, t).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.head.out_dim), np.float32)

    @torch.inference_mode()
    def embed_photos(self, photos: Sequence[str | os.PathLike | Image.Image]) -> np.ndarray:
        """Photo paths or PIL images -> `(n, D)` backbone vectors (no cache); `(n * views, D)` with `elements` TTA."""
        images = [p if isinstance(p, Image.Image) else load_image(p) for p in photos]
        return embed_views(self.backbone, images, self.tta)

    def encode(self, photo_sets: Sequence[Sequence[str | os.PathLike | Image.Image]], batch_size: int = 256,
               views: Sequence[Sequence[str] | None] | None = None) -> np.ndarray:
        """A list of photo sets (paths or PIL images) -> `(len(photo_sets), E)` unit vectors (`views`: as
        `encode_sets`)."""
        if isinstance(photo_sets, (str, os.PathLike, Image.Image)) or any(
                isinstance(s, (str, os.PathLike, Image.Image)) for s in photo_sets):
            raise SetencError("encode takes a list of photo SETS (one list of photos per article), got photos: "
                              "wrap one article's photos as encode([[photo1, photo2]])")
        for k, s in enumerate(photo_sets):
            if len(s) == 0:
                raise ValueError(f"photo set {k} is empty: an article needs at least one photo")
        flat = [p for s in photo_sets for p in s]
        vecs = self.embed_photos(flat)
        bounds = np.cumsum([0] + [len(s) * self.tta.per_photo for s in photo_sets])
        return self.encode_sets([vecs[a:b] for a, b in zip(bounds[:-1], bounds[1:])], batch_size, views)

    def same(self, a, b, articles: int | None = None) -> float:
        """P(articles a and b are the same group), from their set vectors' cosine through the checkpoint's
        calibration (`setenc.matching.calibration`); a, b: photo sets or (n, D) photo vectors; `articles`: the
        size of the catalogue the pair is drawn from (None: the calibration's own)."""
        if self.calibration is None:
            raise SetencError("this checkpoint carries no calibration (trained before issue 27, or without held-out "
                              "groups): retrain it with scripts/train.py to get probabilities")
        v = self.encode_articles([a, b])
        return float(self.calibration.probability(float(v[0] @ v[1]), articles))

    # -- photos + titles -----------------------------------------------------------------------------
    def with_fusion(self, fusion: Fusion | None) -> "SetEncoder":
        """The same head and backbone with this title fusion (None: photos only); `save` records it."""
        enc = SetEncoder(self.head, self.backbone_spec, self.dim, self.metrics, self.training_info, fusion, self._text)
        enc._backbone = self._backbone
        enc.checkpoint_sha256 = getattr(self, "checkpoint_sha256", None)
        enc.checkpoint_path = getattr(self, "checkpoint_path", None)
        return enc

    @property
    def text(self):
        """The title encoder: a late fusion's, or a learned fusion's (built from its spec on first use); else None."""
        if self.fusion is not None:
            return self.fusion.text
        if isinstance(self._text, dict):
            from setenc.titles.encoders import text_encoder_from_spec

            self._text = text_encoder_from_spec(self._text)
        return self._text

    @property
    def out_dim(self) -> int:
        """Size of the vectors `encode_articles` returns: the head's, plus the title part with a fusion."""
        return self.head.out_dim + (self.fusion.text.dim if self.fusion else 0)

    def encode_articles(self, sets: Sequence[np.ndarray | Sequence[str | os.PathLike | Image.Image] | None],
                        titles: Sequence[str | None] | None = None, cache_root: str | os.PathLike | None = None,
                        batch_size: int = 256, views: Sequence[Sequence[str] | None] | None = None) -> np.ndarray:
        """Articles (or queries) -> `(N, out_dim)`: what an index of this encoder holds and what searches it.

        Without a fusion: the set vectors (`titles` must be None). With one: `[√w·set, √(1−w)·title]`, where an
        article's missing side is zeros — a set of `None` (a title-only query), a title of `None` / "" or
        `titles=None` (photos only) — so such a query ranks by the side it has. With a learned fusion the head
        takes the title as one more set element: the same three cases, one set vector.
        Args:
            sets: per article `(n_i, D)` cached photo vectors, a list of photos (paths / PIL images), or None.
            cache_root: cache title vectors there (`setenc.titles.vectors`); None encodes them directly.
            views: per article its photos' view tags, for a view-aware head (`encode_sets`).
        """
        learned = self.head.titles is not None
        if self.fusion is None and not learned and titles is not None:
            raise SetencError("this encoder has no title fusion (its checkpoint records none): encode photos only, "
                              "or use a checkpoint written by scripts/evaluate.py --text")
        if titles is not None and len(titles) != len(sets):
            raise SetencError(f"{len(sets)} articles but {len(titles)} titles: give one title (or None) per article")
        have = [i for i, s in enumerate(sets) if s is not None]
        if self.fusion is None and not learned and len(have) < len(sets):
            raise SetencError("an article without photos needs a title fusion: this encoder is photos only")
        arrays = [sets[i] if isinstance(sets[i], np.ndarray) else self.embed_photos(list(sets[i])) for i in have]
        for i, a in zip(have, arrays):
            if len(a) == 0:
                raise SetencError(f"article {i} has an empty photo set: give None for a title-only query")
        if self.fusion is None and not learned:
            return self.encode_sets(arrays, batch_size, views) if have else np.zeros((0, self.out_dim), np.float32)
        text = self.text
        if titles is None:
            t = np.zeros((len(sets), text.dim), np.float32)
        elif cache_root is not None:
            from setenc.titles.vectors import title_vectors

            t = title_vectors(titles, text, cache_root)
        else:
            t = text.encode(titles)
        empty = sorted(set(range(len(sets))) - set(have) - set(np.flatnonzero(np.abs(t).sum(1) > 0).tolist()))
        if empty:
            raise SetencError(f"article {empty[0]} has neither photos nor a title: nothing to encode")
        if learned:  # photos and title are one set: a missing side is simply not an element
            full = [np.zeros((0, self.dim), np.float32)] * len(sets)
            for i, a in zip(have, arrays):
                full[i] = a
            return self.encode_sets(full, batch_size, views, t)
        vecs = np.zeros((len(sets), self.head.out_dim), np.float32)
        if have:
            vecs[have] = self.encode_sets(arrays, batch_size, [views[i] for i in have] if views else None)
        return self.fusion.combine(vecs, t)
