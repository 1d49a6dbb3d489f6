"""Parameter-free set matchers: one score per pair of photo sets, from their photo × photo cosine matrix S.

These are the seed article's baselines, which the learned set heads must beat. One interface for all:
`score(S)` scores one pair (numpy, written to be read: the reference) and `score_batch(S, row_mask, col_mask)`
scores a padded batch of pairs at once (torch, vectorised over the batch; padding never changes a result).
`pairwise_scores` scores query sets against gallery sets in memory-bounded blocks; matchers with `tunable = True`
(`recursive`, `linear`) have the `s` / `m` hyper-parameters that `setenc.evaluation.tuning` picks on validation
data, and `needs_views = True` (`ordered`) marks a matcher that is only meaningful on view-tagged sets.
Scores are in [−1, 1].

View tags (`ordered` only; the others accept and ignore them): per photo a hashable in `score` and an int id in
`score_batch` (B, n); `None` or −1 = no tag.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from setenc.plumbing.errors import SetencError
from setenc.plumbing.registry import Registry
from setenc.heads.sets import check_sets, masked_mean

Views = Sequence[Hashable] | None
Match = tuple[int, int, float]  # (row photo, column photo, similarity)
_EPS = 1e-12  # smallest mean-vector length divided by, as torch.nn.functional.normalize


class Matcher:
    """Scores one pair of photo sets, or a padded batch of pairs, from their cosine matrix."""

    name = ""
    tunable = False  # has `s` / `m` options worth tuning on validation data
    needs_views = False  # only meaningful when every photo has a view tag

    def score(self, S: np.ndarray, row_views: Views = None, col_views: Views = None) -> float:
        """Score of one pair from S (n, m); views: one tag per row / column photo."""
        raise NotImplementedError

    def score_batch(self, S: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor,
                    row_views: torch.Tensor | None = None, col_views: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) scores of padded pairs S (B, n, m) with bool masks (B, n) / (B, m) and int views (−1 = none)."""
        raise NotImplementedError

    def score_sets(self, qx: torch.Tensor, qmask: torch.Tensor, gx: torch.Tensor, gmask: torch.Tensor,
                   q_views: torch.Tensor | None = None, g_views: torch.Tensor | None = None) -> torch.Tensor:
        """(q, g) scores of every query set against every gallery set: one block of `pairwise_scores`."""
        S, rm, cm, rv, cv = _pair_batch(qx, qmask, gx, gmask, q_views, g_views)
        return self.score_batch(S, rm, cm, rv, cv).view(len(qx), len(gx))

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.name}({options})"


class MeanMatcher(Matcher):
    """Cosine of the two mean photo vectors: the parameter-free baseline every set head must beat.

    S alone does not know how long the mean vectors are: for unit photo vectors ⟨ā, b̄⟩ = mean(S), and
    ‖ā‖ = sqrt(mean of the set's own cosine matrix). Pass `row_norm` / `col_norm` (‖ā‖, ‖b̄‖) for the exact
    cosine; without them the score is mean(S), exact only for single photos. `pairwise_scores` has the vectors
    and computes the cosine directly (the same numbers).
    """

    name = "mean"

    def score(self, S: np.ndarray, row_views: Views = None, col_views: Views = None, *,
              row_norm: float = 1.0, col_norm: float = 1.0) -> float:
        norms = max(row_norm, _EPS) * max(col_norm, _EPS)  # as F.normalize: a zero mean vector scores 0, not NaN
        return float(np.clip(_as_pair(S).mean() / norms, -1.0, 1.0))

    def score_batch(self, S, row_mask, col_mask, row_views=None, col_views=None, *,
                    row_norm: torch.Tensor | None = None, col_norm: torch.Tensor | None = None) -> torch.Tensor:
        _, _, valid = _check_batch(S, row_mask, col_mask)  # (B, n, m)
        inner = torch.where(valid, S, 0).sum((1, 2)) / valid.sum((1, 2))  # (B,) ⟨ā, b̄⟩
        if row_norm is not None:
            inner = inner / row_norm.clamp(min=_EPS)
        if col_norm is not None:
            inner = inner / col_norm.clamp(min=_EPS)
        return inner.clamp(-1, 1)

    def score_sets(self, qx, qmask, gx, gmask, q_views=None, g_views=None) -> torch.Tensor:
        qm = torch.nn.functional.normalize(masked_mean(qx, qmask), dim=-1)  # (q, D)
        gm = torch.nn.functional.normalize(masked_mean(gx, gmask), dim=-1)  # (g, D)
        return (qm @ gm.T).clamp(-1, 1)


class ChamferMatcher(Matcher):
    """Symmetrised mean of row maxima: every photo is scored by its best counterpart on the other side."""

    name = "chamfer"

    def score(self, S: np.ndarray, row_views: Views = None, col_views: Views = None) -> float:
        S = _as_pair(S)
        return float(0.5 * (S.max(axis=1).mean() + S.max(axis=0).mean()))

    def score_batch(self, S, row_mask, col_mask, row_views=None, col_views=None) -> torch.Tensor:
        row_mask, col_mask, valid = _check_batch(S, row_mask, col_mask)
        work = S.masked_fill(~valid, -torch.inf)  # (B, n, m)
        rows = torch.where(row_mask, work.amax(2), 0).sum(1) / row_mask.sum(1)  # (B,)
        cols = torch.where(col_mask, work.amax(1), 0).sum(1) / col_mask.sum(1)  # (B,)
        return 0.5 * (rows + cols)


class OneToOneMatcher(Matcher):
    """Pairs photos one-to-one and averages the matched similarities; `s` and `m` choose which matches count.

    The matches, best first, are cut to the first `m` and to those with similarity ≥ `s`. When none counts, the
    score is the best matched similarity: it is below `s`, and every pair that has a counted match scores ≥ `s`,
    so the score stays monotone in the evidence.
    """

    tunable = True

    def __init__(self, s: float | None = None, m: int | None = None):
        if s is not None and not -1.0 <= s <= 1.0:
            raise SetencError(f"matcher {self.name!r}: threshold s={s} must be a cosine in [-1, 1] or None")
        if m is not None and (int(m) != m or m < 1):
            raise SetencError(f"matcher {self.name!r}: m={m} must be a positive number of matches or None")
        self.s = s
        self.m = None if m is None else int(m)

    def describe(self) -> str:
        """The options in words, for reports: `s` and `m` of None mean no threshold and no limit."""
        s = "no threshold (every match counts)" if self.s is None else f"matches below {self.s:g} not counted"
        m = "all matches" if self.m is None else f"at most the {self.m} best match{'es' if self.m > 1 else ''}"
        return f"s={self.s}: {s}; m={self.m}: {m}"

    def pairs(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All one-to-one matches of S (n, m), best first, as (rows, cols, similarities)."""
        raise NotImplementedError

    def matched_batch(self, S: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor) -> torch.Tensor:
        """(B, K) matched similarities of each pair, best first, NaN past the last match; K ≤ min(n, m)."""
        raise NotImplementedError

    def match(self, S: np.ndarray, row_views: Views = None, col_views: Views = None) -> list[Match]:
        """The matches that count towards the score, best first (empty when none reaches `s`)."""
        rows, cols, sims = self.pairs(_as_pair(S))
        return [(int(i), int(j), float(v)) for i, j, v in zip(rows[:self.m], cols[:self.m], sims[:self.m])
                if self.s is None or v >= self.s]

    def score(self, S: np.ndarray, row_views: Views = None, col_views: Views = None) -> float:
        S = _as_pair(S)
        counted = [v for _, _, v in self.match(S)]
        return float(np.mean(counted)) if counted else float(self.pairs(S)[2][0])

    def score_batch(self, S, row_mask, col_mask, row_views=None, col_views=None) -> torch.Tensor:
        row_mask, col_mask, _ = _check_batch(S, row_mask, col_mask)
        return self.reduce(self.matched_batch(S, row_mask, col_mask))

    def reduce(self, sims: torch.Tensor) -> torch.Tensor:
        """(B,) scores from (B, K) matched similarities (best first, NaN-padded): the s / m rule, vectorised."""
        counted = ~sims.isnan()  # (B, K)
        if self.m is not None:
            counted &= torch.arange(sims.shape[1], device=sims.device) < self.m
        if self.s is not None:
            counted &= sims >= self.s
        n = counted.sum(1)
        mean = torch.where(counted, sims, 0).sum(1) / n.clamp(min=1)
        return torch.where(n > 0, mean, sims[:, 0])

    def matched_sets(self, qx: torch.Tensor, qmask: torch.Tensor, gx: torch.Tensor, gmask: torch.Tensor,
                     chunk: int = 4096) -> torch.Tensor:
        """(Q, G, K) matched similarities of every query set against every gallery set, NaN past the last match.

        The matches do not depend on `s` or `m`, so a grid over them re-reduces this once-computed tensor.
        """
        qmask, gmask = check_sets(qx, qmask.bool(), what="query sets"), check_sets(gx, gmask.bool(), what="gallery sets")
        sims = qx.new_full((len(qx), len(gx), min(qx.shape[1], gx.shape[1])), torch.nan)  # (Q, G, K)
        for qs, gs in _blocks(len(qx), len(gx), chunk):
            S, rm, cm, _, _ = _pair_batch(qx[qs], qmask[qs], gx[gs], gmask[gs])
            sims[qs, gs] = self.matched_batch(S, rm, cm).view(len(qx[qs]), len(gx[gs]), -1)
        return sims


class RecursiveMatcher(OneToOneMatcher):
    """The seed article's greedy: take the highest S[i, j], remove row i and column j, repeat.

    Ties go to the first entry in row-major order, in both forms. The batched form runs the greedy steps for all
    pairs at once (argmax over the flattened masked matrices), so it loops over steps, never over pairs.
    """

    name = "recursive"

    def pairs(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        S = S.copy()
        rows, cols, sims = [], [], []
        for _ in range(min(*S.shape, self.m or S.size)):
            i, j = np.unravel_index(np.argmax(S), S.shape)
            rows.append(i)
            cols.append(j)
            sims.append(S[i, j])
            S[i, :] = -np.inf
            S[:, j] = -np.inf
        return np.array(rows, dtype=int), np.array(cols, dtype=int), np.array(sims)

    def matched_batch(self, S, row_mask, col_mask) -> torch.Tensor:
        B, n_row, n_col = S.shape
        work = S.masked_fill(~(row_mask[:, :, None] & col_mask[:, None, :]), -torch.inf)  # (B, n, m)
        batch = torch.arange(B, device=S.device)
        sims = S.new_full((B, min(n_row, n_col, self.m or n_row * n_col)), torch.nan)  # (B, K)
        for step in range(sims.shape[1]):
            flat = work.view(B, n_row * n_col)
            idx = flat.argmax(1)  # (B,) first maximum, as np.argmax
            best = flat.gather(1, idx[:, None])[:, 0]
            sims[:, step] = torch.where(best > -torch.inf, best, torch.nan)  # −inf: rows or columns ran out
            work[batch, idx // n_col, :] = -torch.inf
            work[batch, :, idx % n_col] = -torch.inf
        return sims


class LinearMatcher(OneToOneMatcher):
    """Hungarian assignment maximising the total similarity (rectangular S included), via scipy.

    `m` keeps the m best pairs of the optimal assignment. The batched form loops over pairs: the assignment
    has no vectorised form, but on small sets scipy's C solver makes that loop cheap.
    """

    name = "linear"

    def pairs(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, cols = linear_sum_assignment(S, maximize=True)
        sims = S[rows, cols]
        order = np.argsort(-sims, kind="stable")
        return rows[order], cols[order], sims[order]

    def matched_batch(self, S, row_mask, col_mask) -> torch.Tensor:
        S_np, rm, cm = S.detach().cpu().numpy(), row_mask.cpu().numpy(), col_mask.cpu().numpy()
        out = np.full((len(S_np), min(S_np.shape[1:])), np.nan, dtype=S_np.dtype)  # (B, K)
        for b, (s, r, c) in enumerate(zip(S_np, rm, cm)):
            s = s[r][:, c]
            rows, cols = linear_sum_assignment(s, maximize=True)
            out[b, :len(rows)] = s[rows, cols]
        out = -np.sort(-out, axis=1)[:, :self.m]  # best first (NaN sorts last), as `pairs`
        return torch.from_numpy(np.ascontiguousarray(out)).to(S.device)


class OrderedMatcher(Matcher):
    """Only same-view photos are compared: the mean, over the view tags both sets share, of each tag's best S.

    A tag repeated within a set (two "front" photos) counts once, by its best pair, so no view weighs double.
    Sets that share no tag (or are untagged) fall back to mean(S), the unordered average: the matcher then has
    no view evidence, and on untagged catalogues it reduces to the inner product of the mean vectors.
    """

    name = "ordered"
    needs_views = True

    def score(self, S: np.ndarray, row_views: Views = None, col_views: Views = None) -> float:
        S = _as_pair(S)
        rv, cv = _tags(row_views, S.shape[0]), _tags(col_views, S.shape[1])
        shared = (set(rv) & set(cv)) - {None}
        best = [S[np.ix_([t == r for r in rv], [t == c for c in cv])].max() for t in shared]
        return float(np.mean(best)) if best else float(S.mean())

    def score_batch(self, S, row_mask, col_mask, row_views=None, col_views=None) -> torch.Tensor:
        row_mask, col_mask, valid = _check_batch(S, row_mask, col_mask)  # valid: (B, n, m)
        fallback = torch.where(valid, S, 0).sum((1, 2)) / valid.sum((1, 2))  # (B,)
        if row_views is None or col_views is None:
            return fallback
        rv = row_views.masked_fill(~row_mask, -1)  # (B, n)
        cv = col_views.masked_fill(~col_mask, -1)  # (B, m)
        tags = torch.unique(torch.cat([rv.flatten(), cv.flatten()]))
        tags = tags[tags >= 0]  # (T,)
        same = (rv[:, :, None, None] == tags) & (cv[:, None, :, None] == tags)  # (B, n, m, T)
        best = S[..., None].masked_fill(~same, -torch.inf).amax((1, 2))  # (B, T)
        shared = same.any(2).any(1)  # (B, T)
        n_shared = shared.sum(1)
        ordered = torch.where(shared, best, 0).sum(1) / n_shared.clamp(min=1)
        return torch.where(n_shared > 0, ordered, fallback)


MATCHERS: Registry[Matcher] = Registry("matcher")
for _cls in (MeanMatcher, ChamferMatcher, RecursiveMatcher, LinearMatcher, OrderedMatcher):
    MATCHERS.register(_cls.name, _cls)


def list_matchers() -> list[str]:
    """Names accepted by `create_matcher`, in report order."""
    return MATCHERS.names()


def unordered_matchers() -> list[str]:
    """The matchers that need no view tags: the baselines every catalogue is compared with."""
    return [n for n in MATCHERS.names() if not MATCHERS.get(n).needs_views]


def create_matcher(name: str, **kw) -> Matcher:
    """A matcher by name; `recursive` and `linear` take `s` (threshold) and `m` (most matches counted)."""
    return MATCHERS.create(name, **kw)


def pairwise_scores(matcher: Matcher | str, qx: torch.Tensor, qmask: torch.Tensor, gx: torch.Tensor,
                    gmask: torch.Tensor, q_views: torch.Tensor | None = None, g_views: torch.Tensor | None = None,
                    chunk: int = 4096) -> torch.Tensor:
    """Scores of every query set against every gallery set, in blocks of at most `chunk` pairs.

    Args:
        matcher: a `Matcher` or its name.
        qx, qmask: (Q, N, D) L2-normalised photo vectors and (Q, N) bool mask of the query sets.
        gx, gmask: (G, M, D) and (G, M), the gallery sets.
        q_views, g_views: optional (Q, N) / (G, M) int view tags (−1 = none), for `ordered`.
        chunk: pairs scored at once; memory grows as chunk · N · M.

    Returns:
        (Q, G) scores, on the device and in the dtype of `qx`.
    """
    matcher = create_matcher(matcher) if isinstance(matcher, str) else matcher
    qmask, gmask = check_sets(qx, qmask.bool(), what="query sets"), check_sets(gx, gmask.bool(), what="gallery sets")
    out = qx.new_empty(len(qx), len(gx))
    for qs, gs in _blocks(len(qx), len(gx), chunk):
        out[qs, gs] = matcher.score_sets(qx[qs], qmask[qs], gx[gs], gmask[gs],
                                         None if q_views is None else q_views[qs],
                                         None if g_views is None else g_views[gs])
    return out


def _as_pair(S: np.ndarray) -> np.ndarray:
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or 0 in S.shape:
        raise SetencError(f"a similarity matrix must be (n, m) with n, m >= 1, got shape {S.shape}; "
                          "drop articles without photos before matching")
    return S


def _check_batch(S: torch.Tensor, row_mask: torch.Tensor,
                 col_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bool row and column masks and the (B, n, m) mask of real entries, after checking shapes and emptiness."""
    if S.ndim != 3 or tuple(row_mask.shape) != tuple(S.shape[:2]) or tuple(col_mask.shape) != (len(S), S.shape[2]):
        raise ValueError(f"S {tuple(S.shape)} must be (B, n, m) with row_mask (B, n) and col_mask (B, m), "
                         f"got {tuple(row_mask.shape)} and {tuple(col_mask.shape)}")
    row_mask, col_mask = row_mask.bool(), col_mask.bool()
    empty = ~(row_mask.any(1) & col_mask.any(1))
    if empty.any():
        raise SetencError(f"pairs {empty.nonzero()[:, 0].tolist()[:10]} have an empty set (all-False mask row); "
                          "drop articles without photos before matching")
    return row_mask, col_mask, row_mask[:, :, None] & col_mask[:, None, :]


def _blocks(n_q: int, n_g: int, chunk: int):
    """(query slice, gallery slice) blocks of at most `chunk` pairs covering the Q × G grid."""
    g_step = max(1, min(n_g, chunk))
    q_step = max(1, chunk // g_step)
    for a in range(0, n_q, q_step):
        for b in range(0, n_g, g_step):
            yield slice(a, a + q_step), slice(b, b + g_step)


def _pair_batch(qx, qmask, gx, gmask, q_views=None, g_views=None):
    """Every (query, gallery) pair of a block as one padded batch: S (q·g, N, M), masks, views."""
    (q, n, _), (g, m, _) = qx.shape, gx.shape
    S = torch.einsum("qnd,gmd->qgnm", qx, gx).clamp(-1, 1).reshape(q * g, n, m)  # unit vectors: cosine
    rm = qmask[:, None, :].expand(q, g, n).reshape(q * g, n)
    cm = gmask[None, :, :].expand(q, g, m).reshape(q * g, m)
    rv = None if q_views is None else q_views[:, None, :].expand(q, g, n).reshape(q * g, n)
    cv = None if g_views is None else g_views[None, :, :].expand(q, g, m).reshape(q * g, m)
    return S, rm, cm, rv, cv


def _tags(views: Views, n: int) -> list:
    """Per photo its view tag, `None` for untagged (None or −1)."""
    if views is None:
        return [None] * n
    views = views.tolist() if isinstance(views, (torch.Tensor, np.ndarray)) else list(views)
    if len(views) != n:
        raise SetencError(f"{len(views)} view tags for {n} photos; give one tag per photo (None or -1 = no tag)")
    return [None if v is None or (isinstance(v, (int, np.integer)) and v == -1) else v for v in views]
