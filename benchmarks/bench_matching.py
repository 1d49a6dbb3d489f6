"""Benchmark: each matcher's batched form against a plain per-pair Python loop over the same cosine matrices.

Random unit photo vectors: query sets against a gallery of sets of 1..max-size photos. Prints pairs/s of the
loop (`score` per pair), of the batched form (`score_batch` on the padded matrices), of `pairwise_scores` from the
vectors, the speed-up batched / loop, and the largest score difference between the forms (must be ~0).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from setenc.matching.matchers import create_matcher, list_matchers, pairwise_scores


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=1, help="number of query sets")
    p.add_argument("--query-size", type=int, default=4, help="photos per query set")
    p.add_argument("--gallery", type=int, default=2000, help="number of gallery sets")
    p.add_argument("--max-size", type=int, default=8, help="gallery sets have 1..max-size photos")
    p.add_argument("--dim", type=int, default=512, help="photo vector dimension")
    p.add_argument("--tags", type=int, default=4, help="distinct view tags (for `ordered`)")
    p.add_argument("--matchers", nargs="+", default=list_matchers(), choices=list_matchers())
    p.add_argument("--threads", type=int, default=1, help="torch threads (the loop is single-threaded)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def random_sets(rng: np.random.Generator, count: int, sizes: np.ndarray, dim: int, tags: int):
    """Padded (count, max(sizes), dim) unit vectors, mask and view tags (−1 = none)."""
    n = int(sizes.max())
    x = rng.standard_normal((count, n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    mask = np.arange(n)[None, :] < sizes[:, None]
    views = np.where(mask, rng.integers(-1, tags, (count, n)), -1)
    return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(views)


def timed(fn, repeat: int = 3):
    """(result, best seconds of `repeat` runs)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    qx, qm, qv = random_sets(rng, args.queries, np.full(args.queries, args.query_size), args.dim, args.tags)
    gx, gm, gv = random_sets(rng, args.gallery, rng.integers(1, args.max_size + 1, args.gallery), args.dim, args.tags)
    Q, G = len(qx), len(gx)
    S = torch.einsum("qnd,gmd->qgnm", qx, gx).reshape(Q * G, qx.shape[1], gx.shape[1])  # (Q·G, N, M)
    rm = qm[:, None].expand(Q, G, -1).reshape(Q * G, -1)
    cm = gm[None].expand(Q, G, -1).reshape(Q * G, -1)
    rv = qv[:, None].expand(Q, G, -1).reshape(Q * G, -1)
    cv = gv[None].expand(Q, G, -1).reshape(Q * G, -1)
    # the loop's inputs: each pair's own (n, m) matrix and tags, cut out beforehand (not timed)
    pairs = [(S[b][rm[b]][:, cm[b]].numpy(), rv[b][rm[b]].tolist(), cv[b][cm[b]].tolist()) for b in range(Q * G)]
    q_norm = torch.stack([x[m].mean(0) for x, m in zip(qx, qm)]).norm(dim=1)  # (Q,) lengths of the mean vectors
    g_norm = torch.stack([x[m].mean(0) for x, m in zip(gx, gm)]).norm(dim=1)  # (G,)
    row_norm, col_norm = q_norm.repeat_interleave(G), g_norm.repeat(Q)  # (Q·G,) in the order of S
    print(f"{Q} query sets of {args.query_size} x {G} gallery sets of 1..{args.max_size} photos, D={args.dim}, "
          f"{Q * G} pairs, torch threads {args.threads}")
    print(f"{'matcher':<10} {'loop pairs/s':>13} {'batched pairs/s':>16} {'speed-up':>9} "
          f"{'pairwise_scores pairs/s':>24} {'max |diff|':>11}")
    for name in args.matchers:
        matcher = create_matcher(name)
        if name == "mean":  # S alone lacks the lengths of the mean vectors: give them to both forms
            loop = lambda: [matcher.score(s, row_norm=a, col_norm=b)
                            for (s, _, _), a, b in zip(pairs, row_norm.tolist(), col_norm.tolist())]
            batched = lambda: matcher.score_batch(S, rm, cm, row_norm=row_norm, col_norm=col_norm)
        else:
            loop = lambda: [matcher.score(s, a, b) for s, a, b in pairs]
            batched = lambda: matcher.score_batch(S, rm, cm, rv, cv)
        want, t_loop = timed(loop)
        got, t_batch = timed(batched)
        full, t_full = timed(lambda: pairwise_scores(matcher, qx, qm, gx, gm, qv, gv))
        diff = max(np.abs(got.numpy() - np.array(want)).max(), np.abs(full.flatten().numpy() - np.array(want)).max())
        print(f"{name:<10} {Q * G / t_loop:>13,.0f} {Q * G / t_batch:>16,.0f} {t_loop / t_batch:>8.1f}x "
              f"{Q * G / t_full:>24,.0f} {diff:>11.1e}")
        if diff > 1e-5:
            raise SystemExit(f"{name}: batched and per-pair scores differ by {diff:.2e}")


if __name__ == "__main__":
    main()
