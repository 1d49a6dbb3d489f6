"""Pooling heads: a padded batch of photo vectors -> one L2-normalised vector per article, whatever the photo order.

Every head maps `x: (B, N, D)` plus `mask: (B, N)` (True = real photo) to `(B, E)`. Padded slots are zeroed on
entry and every pooling is masked, so padding never leaks into the result. A head is rebuilt from its plain
`config` dict, which is what checkpoints store — never the module. These are the pooling step of an article head
(`setenc.heads.model`: elements -> pooling -> extensions); `create_head` there builds one by name.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from setenc.heads.sets import check_sets, masked_mean, masked_sum
from setenc.plumbing.errors import SetencError
from setenc.plumbing.registry import Registry


def identity_init_(linear: nn.Linear) -> None:
    """Start a linear map as the identity: exact when square, semi-orthogonal (cosine-preserving if widening) else."""
    with torch.no_grad():
        if linear.in_features == linear.out_features:
            linear.weight.copy_(torch.eye(linear.in_features))
        else:
            nn.init.orthogonal_(linear.weight)
        if linear.bias is not None:
            linear.bias.zero_()


def _check_choice(head: str, option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SetencError(f"head {head!r}: {option}={value!r} is not one of {', '.join(choices)}")


def _check_dropout(head: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise SetencError(f"head {head!r}: dropout={p} must be in [0, 1)")


class SetHead(nn.Module):
    """Base of all pooling heads: validates the batch, hides padding, pools, L2-normalises."""

    name: str = ""

    def __init__(self, in_dim: int, out_dim: int, options: dict | None = None):
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise SetencError(f"head {self.name!r}: in_dim={in_dim} and out_dim={out_dim} must be positive")
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self._options = dict(options or {})

    @property
    def config(self) -> dict:
        """Plain constructor arguments; `HEADS.create(**config)` rebuilds the same architecture."""
        return {"name": self.name, "in_dim": self.in_dim, **self._options}

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) -> (B, E) unit vectors."""
        check_sets(x, mask, self.in_dim)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, N, D) padded slots may hold anything
        return F.normalize(self.pool(x, mask), dim=-1)  # (B, E)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, D) with zeroed padding, (B, N) -> (B, E), not yet normalised."""
        raise NotImplementedError


class MeanHead(SetHead):
    """Masked mean of the photo vectors: no parameters, the floor every learned head must beat."""

    name = "mean"

    def __init__(self, in_dim: int):
        super().__init__(in_dim, in_dim)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(x, mask)


class ProjHead(SetHead):
    """A learned linear map of each photo, then the mean; strong on frozen features with few training products.

    `init="identity"` starts exactly at mean pooling (for out_dim >= in_dim); `init="residual"` computes
    x + Wx with W = 0, so weight decay pulls it back towards mean pooling; `init="random"` is PyTorch's default.
    The map is linear, so it is applied to the mean of the photos rather than to every photo: same result.

    `mean_weight` (β) blends, at inference only (eval mode), the learned direction with the frozen backbone's:
    normalise(normalise(Wm) + β·normalise(m)). Training never sees it: the map learns what separates the training
    products, and the blend keeps part of what the backbone knows about products it never saw (measured on held-out
    products in docs/bench_heads.md; the recipe sets it). It needs out_dim == in_dim, and 0 = the map alone.
    """

    name = "proj"

    def __init__(self, in_dim: int, out_dim: int | None = None, init: str = "identity", bias: bool = True,
                 dropout: float = 0.0, mean_weight: float = 0.0):
        out_dim = out_dim or in_dim
        super().__init__(in_dim, out_dim, dict(out_dim=out_dim, init=init, bias=bias, dropout=dropout,
                                               mean_weight=mean_weight))
        if not mean_weight >= 0.0 or (mean_weight and out_dim != in_dim):
            raise SetencError(f"head 'proj': mean_weight={mean_weight} must be >= 0, and > 0 needs out_dim == in_dim "
                              f"({in_dim}, got {out_dim}): the blend adds the mean of the photos to the output")
        self.mean_weight = float(mean_weight)
        _check_choice(self.name, "init", init, ("identity", "residual", "random"))
        _check_dropout(self.name, dropout)
        if init == "residual" and out_dim != in_dim:
            raise SetencError(f"head 'proj': init='residual' needs out_dim == in_dim ({in_dim}), got {out_dim}; "
                              "use init='identity' to change the width")
        self.residual = init == "residual"
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)
        if init == "identity":
            identity_init_(self.proj)
        elif init == "residual":
            nn.init.zeros_(self.proj.weight)
            if bias:
                nn.init.zeros_(self.proj.bias)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = masked_mean(self.drop(x), mask)  # (B, D)
        z = m + self.proj(m) if self.residual else self.proj(m)  # (B, E)
        if self.training or not self.mean_weight:
            return z
        return F.normalize(z, dim=-1) + self.mean_weight * F.normalize(m, dim=-1)  # the inference-time blend


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class GatedSkip(nn.Module):
    """normalise(mean of the photos) + gate * normalise(y), the gate a learned scalar starting at 0.

    An untrained head is then exactly mean pooling (or its cosine-preserving widening) and learns a correction
    at a pace the gate sets, instead of letting a freshly initialised network swamp what the backbone knows.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(()))
        self.proj: nn.Module = nn.Identity()
        if out_dim != in_dim:
            self.proj = nn.Linear(in_dim, out_dim, bias=False)
            identity_init_(self.proj)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (B, N, D) zero-padded photos, mask (B, N), y (B, E) the learned branch
        return F.normalize(self.proj(masked_mean(x, mask)), dim=-1) + self.gate * F.normalize(y, dim=-1)


class DeepSetsHead(SetHead):
    """Deep Sets (Zaheer et al. 2017): rho(pool(phi(photo))), with a masked mean or sum as the pool.

    `skip=True` adds the learned set vector to mean pooling through a zero-initialised gate (`GatedSkip`):
    from scratch on a few dozen products the MLP alone falls far below the mean it should improve on.
    """

    name = "deepsets"

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int | None = None, pool: str = "mean",
                 dropout: float = 0.0, skip: bool = False):
        hidden = hidden or in_dim
        out_dim = out_dim or in_dim
        super().__init__(in_dim, out_dim, dict(hidden=hidden, out_dim=out_dim, pool=pool, dropout=dropout, skip=skip))
        _check_choice(self.name, "pool", pool, ("mean", "sum"))
        _check_dropout(self.name, dropout)
        self.sum = pool == "sum"
        self.phi = nn.Sequential(_mlp(in_dim, hidden, hidden, dropout), nn.GELU())
        self.rho = _mlp(hidden, hidden, out_dim, dropout)
        self.skip = GatedSkip(in_dim, out_dim) if skip else None

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.phi(x)  # (B, N, H); padded rows are phi(0) != 0, so pooling must mask them
        pooled = masked_sum(h, mask) if self.sum else masked_mean(h, mask)  # (B, H)
        y = self.rho(pooled)  # (B, E)
        return y if self.skip is None else self.skip(x, mask, y)


class MAB(nn.Module):
    """Multihead Attention Block (Lee et al. 2019): H = LN(X + Att(X, Y, Y)); out = LN(H + rFF(H))."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.att = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = _mlp(dim, dim, dim, dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, Q, d) queries; y (B, K, d) keys/values; y_mask (B, K) True = real. Every row has a real key
        # (check_sets), so the softmax never sees a fully masked row, the case where attention returns NaN.
        pad = None if y_mask is None else ~y_mask
        h = self.ln1(x + self.att(x, y, y, key_padding_mask=pad, need_weights=False)[0])  # (B, Q, d)
        return self.ln2(h + self.ff(h))


class SAB(nn.Module):
    """Self-attention over the photos: MAB(X, X)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.mab = MAB(dim, num_heads, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mab(x, x, mask)


class ISAB(nn.Module):
    """Induced self-attention, O(N m): m learned points summarise the photos, the photos read them back."""

    def __init__(self, dim: int, num_heads: int, inducing: int, dropout: float):
        super().__init__()
        self.points = nn.Parameter(torch.empty(1, inducing, dim))
        nn.init.xavier_uniform_(self.points)
        self.mab_in = MAB(dim, num_heads, dropout)
        self.mab_out = MAB(dim, num_heads, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.mab_in(self.points.expand(x.shape[0], -1, -1), x, mask)  # (B, m, d)
        return self.mab_out(x, h)  # (B, N, d)


class PMAHead(SetHead):
    """Set Transformer (Lee et al. 2019): optional SAB/ISAB encoder, then Pooling by Multihead Attention.

    k learned seeds attend to the encoded photos; their outputs are concatenated and projected to out_dim.
    With `skip=True` the attention output is added to mean pooling through a zero-initialised gate (`GatedSkip`).
    """

    name = "pma"

    def __init__(self, in_dim: int, out_dim: int | None = None, dim: int | None = None, num_heads: int = 4,
                 seeds: int = 1, encoder: str = "none", layers: int = 2, inducing: int = 16,
                 dropout: float = 0.0, skip: bool = True):
        out_dim = out_dim or in_dim
        dim = dim or in_dim
        super().__init__(in_dim, out_dim, dict(out_dim=out_dim, dim=dim, num_heads=num_heads, seeds=seeds, encoder=encoder,
                                               layers=layers, inducing=inducing, dropout=dropout, skip=skip))
        _check_choice(self.name, "encoder", encoder, ("none", "sab", "isab"))
        _check_dropout(self.name, dropout)
        if num_heads < 1 or dim % num_heads:
            raise SetencError(f"head 'pma': dim={dim} must be divisible by num_heads={num_heads}")
        if seeds < 1 or layers < 0 or inducing < 1:
            raise SetencError(f"head 'pma': seeds={seeds} and inducing={inducing} must be >= 1, layers={layers} >= 0")
        self.inp = nn.Identity() if dim == in_dim else nn.Linear(in_dim, dim)
        n_blocks = 0 if encoder == "none" else layers
        self.blocks = nn.ModuleList(
            SAB(dim, num_heads, dropout) if encoder == "sab" else ISAB(dim, num_heads, inducing, dropout)
            for _ in range(n_blocks))
        self.ff = _mlp(dim, dim, dim, dropout)  # PMA_k(Z) = MAB(S, rFF(Z))
        self.seeds = nn.Parameter(torch.empty(1, seeds, dim))
        nn.init.xavier_uniform_(self.seeds)
        self.pma = MAB(dim, num_heads, dropout)
        self.out = nn.Linear(seeds * dim, out_dim)
        self.skip = GatedSkip(in_dim, out_dim) if skip else None

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pad = ~mask.unsqueeze(-1)  # (B, N, 1)
        z = self.inp(x)  # (B, N, d)
        for block in self.blocks:
            # padded query rows come out as garbage; zero them so nothing downstream can pick it up
            z = block(z, mask).masked_fill(pad, 0.0)
        seeds = self.seeds.expand(x.shape[0], -1, -1)  # (B, k, d)
        pooled = self.pma(seeds, self.ff(z), mask)  # (B, k, d)
        y = self.out(pooled.flatten(1))  # (B, E)
        return y if self.skip is None else self.skip(x, mask, y)


HEADS: Registry[SetHead] = Registry("head", fixed=("in_dim",))
for _cls in (MeanHead, ProjHead, DeepSetsHead, PMAHead):
    HEADS.register(_cls.name, _cls)
