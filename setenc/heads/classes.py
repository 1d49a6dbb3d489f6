"""The class block: where a catalogue's groups are classes (articleType, not products), the class probabilities of a
softmax probe are appended to the head's vector.

A contrastive head places an article near articles like it; where every query's relevant articles are "the same
class", a classifier fitted on the training articles adds what the pairs never state outright: which class the
article most likely is. The output is normalise([z, w * normalise(p)]) with z the head's unit vector and p the
probe's K class probabilities, so the cosine of two articles is (z.z' + w^2 p.p') / (1 + w^2): the head's ranking
where the probe is unsure, pulled towards "same predicted class" where it is sure.

The probe reads the article's mean photo vector (the frozen backbone's view of it, what mean pooling ranks by),
not the head's output: a second opinion rather than a restatement of z (measured against a probe on z in
docs/bench_heads.md, round 7). An article without photos (a learned fusion's title-only article) gets the probe's
prior. It is fitted once, after the contrastive training, on the training articles (multinomial logistic
regression, full-batch L-BFGS, L2 penalty |W|^2 / (2 C n), scikit-learn's `C`), so it never changes how the head
trains. The recipe turns it on when groups are classes
(`TrainConfig.classes`; docs/training.md#class-block holds the measurements).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from setenc.heads.parts import Extension
from setenc.heads.sets import masked_mean
from setenc.plumbing.errors import SetencError

WEIGHT = 0.5  # w: the weight x temperature grid of docs/bench_heads.md round 7 chose it
C = 30.0  # inverse L2 strength; held-out probe accuracy is flat over C in 10-1,000 (docs/bench_heads.md round 7)
MAX_ITER = 500  # L-BFGS iterations, well above what 7k articles need to converge


class ClassBlock(Extension):
    """`(B, E)` head vectors -> `(B, E + K)` unit vectors: the head's vector, then `weight` x the class
    probabilities the probe reads from the article's mean photo vector."""

    key = "classes"

    def __init__(self, classes: Sequence[str], dim: int, weight: float = WEIGHT):
        super().__init__()
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise SetencError(f"a class block needs at least 2 distinct classes, got {len(classes)}")
        if not weight > 0:
            raise SetencError(f"class_weight must be > 0, got {weight}")
        self.classes, self.weight = list(classes), float(weight)
        self.extra_dim = len(self.classes)
        # reads the (D,) mean photo vector; fitted by `fit`, never by the contrastive loss
        self.probe = nn.Linear(dim, len(classes)).requires_grad_(False)
        nn.init.zeros_(self.probe.weight)
        nn.init.zeros_(self.probe.bias)

    @classmethod
    def build(cls, in_dim: int, classes: Sequence[str], class_weight: float = WEIGHT) -> "ClassBlock":
        return cls(classes, in_dim, class_weight)

    @property
    def config(self) -> dict:
        return {"classes": list(self.classes), "class_weight": self.weight}

    def forward(self, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z (B, E) the pooled vector; x (B, N, D), mask (B, N) the article's photos as given to the head."""
        return self.append(z, photo_means(x, mask))

    def append(self, z: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """(B, E) head vectors + (B, D) unit mean photo vectors (`photo_means`) -> (B, E + K)."""
        p = F.normalize(self.probe(means).softmax(dim=-1), dim=-1)  # (B, K)
        return F.normalize(torch.cat([z, self.weight * p], dim=-1), dim=-1)  # (B, E + K)

    @torch.no_grad()
    def fit(self, z: torch.Tensor, labels: Sequence[str], c: float = C) -> "ClassBlock":
        """Fit the probe on the training articles' mean photo vectors `z (n, D)` (`photo_means`) and class names."""
        index = {k: i for i, k in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown or len(labels) != len(z):
            raise SetencError(f"class block: {len(z)} vectors, {len(labels)} labels, unknown classes {unknown[:5]}")
        y = torch.tensor([index[k] for k in labels])
        z = z.detach().float()
        w = torch.zeros(len(self.classes), z.shape[1], requires_grad=True)
        b = torch.zeros(len(self.classes), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, tolerance_grad=1e-6, line_search_fn="strong_wolfe")
        penalty = 1.0 / (2.0 * c * len(z))

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(z @ w.T + b, y) + penalty * w.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.probe.weight.copy_(w.detach())
        self.probe.bias.copy_(b.detach())
        return self


def photo_means(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, N) -> (B, D): each set's unit mean photo vector, what the probe reads (zero for no photos)."""
    return F.normalize(masked_mean(x, mask), dim=-1)
