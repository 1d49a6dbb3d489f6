"""Contrastive losses on L2-normalised embeddings (they take vectors, never models; open_clip / PML style).

One call shape for every loss: `loss(a, b, labels=None)` — row i of `a` and row i of `b` are the two views of one
positive pair, and `labels` (optional, (B,)) says which rows belong to the same group, so same-group rows are never
treated as negatives. `InfoNCE` contrasts each view with the other side's rows; `SupConLoss` pools both views into
one batch and treats every same-label item as a positive, for when groups give several positives per anchor;
`MultiSimilarityLoss` pools them the same way but weighs each pair by how hard it is (a fixed similarity threshold,
not a softmax over the batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from setenc.plumbing.errors import SetencError
from setenc.plumbing.registry import Registry


class ContrastiveLoss(nn.Module):
    """Holds the logit scale 1/temperature: fixed (a buffer) or learned as a log, clamped like CLIP's."""

    def __init__(self, temperature: float = 0.07, learnable: bool = False, max_scale: float = 100.0):
        super().__init__()
        if not 0.0 < temperature or not 1.0 <= max_scale:
            raise SetencError(f"{type(self).__name__}: temperature={temperature} must be > 0 "
                              f"and max_scale={max_scale} >= 1")
        if 1.0 / temperature > max_scale:
            raise SetencError(f"{type(self).__name__}: temperature={temperature} is below 1/max_scale="
                              f"{1.0 / max_scale:g}; raise it or raise max_scale")
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> torch.Tensor:
        """1 / temperature, never above max_scale (a clamped scale gets no gradient, as in CLIP)."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.detach())


def _check_labels(labels: torch.Tensor, n: int, name: str) -> None:
    if labels.shape != (n,):
        raise ValueError(f"{name}: labels must have shape ({n},), got {tuple(labels.shape)}")


class PooledViews:
    """The pair call of the losses that see both views as one batch (SupCon, Multi-Similarity): `forward(a, b,
    labels)` stacks them and calls the subclass's `pooled(z, labels)`."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the 2B anchors of both views; row i of `a` and of `b` always share a label.

        Args:
            a: (B, E) embeddings of the first views, L2-normalised.
            b: (B, E) embeddings of the second views, L2-normalised.
            labels: optional (B,) group ids; without them each pair is its own class (`arange(B)`).
        """
        name = type(self).__name__
        if a.dim() != 2 or a.shape != b.shape:
            raise ValueError(f"{name}: a and b must both be (B, E), got {tuple(a.shape)} and {tuple(b.shape)}")
        if labels is None:
            labels = torch.arange(a.shape[0], device=a.device)
        _check_labels(labels, a.shape[0], name)
        return self.pooled(torch.cat([a, b]), torch.cat([labels, labels]))

    def pooled(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class InfoNCE(ContrastiveLoss):
    """Symmetric InfoNCE (the CLIP loss) with in-batch negatives; same-label pairs are not negatives."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the a->b and b->a cross-entropies; row i of `a` is the positive of row i of `b`.

        Args:
            a: (B, E) embeddings of the first views, L2-normalised.
            b: (B, E) embeddings of the second views, L2-normalised.
            labels: optional (B,) group ids; off-diagonal pairs with equal labels leave the denominators.
        """
        if a.dim() != 2 or a.shape != b.shape:
            raise ValueError(f"InfoNCE: a and b must both be (B, E), got {tuple(a.shape)} and {tuple(b.shape)}")
        logits = self.scale * a @ b.T  # (B, B)
        target = torch.arange(a.shape[0], device=a.device)
        if labels is not None:
            _check_labels(labels, a.shape[0], "InfoNCE")
            same = labels[:, None] == labels[None, :]  # (B, B)
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class SupConLoss(PooledViews, ContrastiveLoss):
    """Supervised contrastive loss (Khosla et al. 2020, L_out): every same-label item is a positive."""

    def pooled(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """SupCon on one batch `z (M, E)` with labels `(M,)`; 0 (still differentiable) when no anchor has a positive."""
        if z.dim() != 2:
            raise ValueError(f"SupConLoss: z must be (M, E), got {tuple(z.shape)}")
        _check_labels(labels, z.shape[0], "SupConLoss")
        logits = self.scale * z @ z.T  # (M, M)
        self_pair = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        pos = (labels[:, None] == labels[None, :]) & ~self_pair  # (M, M)
        n_pos = pos.sum(dim=1)  # (M,)
        anchors = n_pos > 0
        if not bool(anchors.any()):
            return logits.sum() * 0.0
        logits, pos, n_pos = logits[anchors], pos[anchors], n_pos[anchors]  # (A, M)
        log_prob = logits - logits.masked_fill(self_pair[anchors], float("-inf")).logsumexp(dim=1, keepdim=True)
        mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1) / n_pos  # (A,)
        return -mean_log_prob_pos.mean()


class MultiSimilarityLoss(PooledViews, nn.Module):
    """Multi-Similarity loss with its pair mining (Wang et al., CVPR 2019), on both views pooled as in SupCon.

    Each anchor keeps the negatives more similar than its hardest positive minus `margin` and the positives less
    similar than its hardest negative plus `margin`, then pays (1/alpha)·log(1 + Σ_pos e^{-alpha(s - base)}) +
    (1/beta)·log(1 + Σ_neg e^{beta(s - base)}); the mean is over every anchor (pytorch-metric-learning's
    MultiSimilarityLoss + MultiSimilarityMiner, defaults alike). Unlike a softmax, `base` is an absolute similarity
    threshold, so trained products are also pushed apart from what they are not in absolute terms, which is what a
    query meets in a gallery that holds every product (docs/bench_heads.md, round 9b).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, margin: float = 0.1):
        super().__init__()
        if not (alpha > 0 and beta > 0 and margin >= 0):
            raise SetencError(f"MultiSimilarityLoss: alpha={alpha} and beta={beta} must be > 0, margin={margin} >= 0")
        self.alpha, self.beta, self.base, self.margin = alpha, beta, base, margin

    def pooled(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss on one batch `z (M, E)` with labels `(M,)`; an anchor with nothing mined adds 0."""
        _check_labels(labels, z.shape[0], "MultiSimilarityLoss")
        s = z @ z.T  # (M, M) cosine similarities
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        neg = ~same
        with torch.no_grad():  # mining picks pairs; the gradient flows through the kept similarities only
            hardest_pos = s.masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)  # (M, 1)
            hardest_neg = s.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)
        pos = pos & (s - self.margin < hardest_neg)
        neg = neg & (s + self.margin > hardest_pos)
        pos_term = _log1p_sum_exp(-self.alpha * (s - self.base), pos) / self.alpha  # (M,)
        neg_term = _log1p_sum_exp(self.beta * (s - self.base), neg) / self.beta
        return (pos_term + neg_term).mean()


def _log1p_sum_exp(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ_j keep_ij · e^{x_ij}) per row, stable for large x (a row with nothing kept gives 0)."""
    x = torch.cat([torch.zeros_like(x[:, :1]), x.masked_fill(~keep, float("-inf"))], dim=1)  # the 1 as e^0
    return x.logsumexp(dim=1)


LOSSES: Registry[nn.Module] = Registry("loss")
LOSSES.register("infonce", InfoNCE)
LOSSES.register("supcon", SupConLoss)
LOSSES.register("ms", MultiSimilarityLoss)


def list_losses() -> list[str]:
    """Names accepted by `create_loss`."""
    return LOSSES.names()


def create_loss(name: str, **kw) -> nn.Module:
    """Build a loss by name, e.g. `create_loss("infonce", temperature=0.05, learnable=True)`."""
    return LOSSES.create(name, **kw)
