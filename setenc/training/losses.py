"""Contrastive losses on L2-normalised embeddings (they take vectors, never models; open_clip / PML style).

One call shape for every loss: `loss(a, b, labels=None)` — row i of `a` and row i of `b` are the two views of one
positive pair, and `labels` (optional, (B,)) says which rows belong to the same group, so same-group rows are never
treated as negatives. `InfoNCE` contrasts each view with the other side's rows; `SupConLoss` pools both views into
one batch and treats every same-label item as a positive, for when groups give several positives per anchor.
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


class SupConLoss(ContrastiveLoss):
    """Supervised contrastive loss (Khosla et al. 2020, L_out): every same-label item is a positive."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the 2B anchors of both views; row i of `a` and of `b` always share a label.

        Args:
            a: (B, E) embeddings of the first views, L2-normalised.
            b: (B, E) embeddings of the second views, L2-normalised.
            labels: optional (B,) group ids; without them each pair is its own class.
        """
        if a.dim() != 2 or a.shape != b.shape:
            raise ValueError(f"SupConLoss: a and b must both be (B, E), got {tuple(a.shape)} and {tuple(b.shape)}")
        if labels is None:
            labels = torch.arange(a.shape[0], device=a.device)
        _check_labels(labels, a.shape[0], "SupConLoss")
        return self.pooled(torch.cat([a, b]), torch.cat([labels, labels]))

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


LOSSES: Registry[ContrastiveLoss] = Registry("loss")
LOSSES.register("infonce", InfoNCE)
LOSSES.register("supcon", SupConLoss)


def list_losses() -> list[str]:
    """Names accepted by `create_loss`."""
    return LOSSES.names()


def create_loss(name: str, **kw) -> ContrastiveLoss:
    """Build a loss by name, e.g. `create_loss("infonce", temperature=0.05, learnable=True)`."""
    return LOSSES.create(name, **kw)
