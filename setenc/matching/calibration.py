"""Same product or not: a map from a pair's score (set-vector cosine, or a matcher's score) to the probability that
the two articles share a group, fitted on labelled articles the head never trained on.

A cosine of 0.83 means nothing to a user: it depends on the backbone, the head and the catalogue. Fitted on held-out
articles, the map turns it into a probability, and the pairs' precision curve gives the score threshold at which a
stated share of the pairs above it are true matches (`threshold(0.9)`). Two maps are fitted, isotonic regression
and Platt's logistic curve; `crossfit` measures which is better calibrated on products the map did not see.

Base rates: the probability depends on how many unrelated articles a catalogue holds. Where groups are products
(`products=True`), an article has about as many true matches in any catalogue, while its unrelated pairs grow with
the catalogue's size, so for a catalogue of `articles` articles the odds are rescaled by (fitted articles - 1) /
(articles - 1) (same group sizes assumed). Where groups are classes, both grow together and nothing is rescaled.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from setenc.catalogs.manifest import Catalog
from setenc.catalogs.splits import hash_bucket
from setenc.matching.clusters import cluster, pair_counts, score_edges
from setenc.plumbing.errors import SetencError

METHODS = ("isotonic", "platt")
PRECISIONS = (0.8, 0.9, 0.95)  # the pairwise precisions a calibration states thresholds for
MAX_ARTICLES = 4000  # articles a fit scores all pairs of (16M pairs); more are subsampled by id hash
CURVE_POINTS = 2048  # points of the stored precision curve
ECE_BINS = 15


@dataclass
class Calibration:
    """A fitted score -> probability map and the precision curve its thresholds come from (plain values: it is
    stored in checkpoints, which load with weights_only=True)."""

    method: str  # "isotonic" or "platt": the map `probability` applies
    iso_x: list[float]  # isotonic breakpoints: scores ...
    iso_y: list[float]  # ... and their probabilities (interpolated in between)
    platt: tuple[float, float]  # (a, b): p = sigmoid(a * score + b)
    curve_score: list[float]  # descending scores; at each, the pairs scoring >= it:
    curve_tp: list[int]  # ... true matches among them
    curve_fp: list[int]  # ... and unrelated ones
    articles: int  # labelled articles the map was fitted on
    positives: int  # their same-group pairs
    pairs: int  # all their pairs
    products: bool  # groups are products (rescale odds by catalogue size), not classes
    fitted_on: str = ""  # which articles, in words
    crossfit: dict = field(default_factory=dict)  # `crossfit`'s measurement on held-out products, when made

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "Calibration":
        return cls(**{**state, "platt": tuple(state["platt"])})

    def _ratio(self, articles: int | None) -> float:
        """Unrelated pairs per true match, relative to the fitted articles, for a catalogue of `articles`."""
        if articles is None or not self.products or self.articles < 2:
            return 1.0
        return max(articles - 1, 1) / (self.articles - 1)

    def probability(self, scores: np.ndarray | float, articles: int | None = None,
                    method: str | None = None) -> np.ndarray:
        """P(same group) of each score, for a catalogue of `articles` (None: as large as the fitted one)."""
        s = np.asarray(scores, np.float64)
        method = method or self.method
        if method == "isotonic":
            p = np.interp(s, self.iso_x, self.iso_y)
        elif method == "platt":
            p = 1.0 / (1.0 + np.exp(-(self.platt[0] * s + self.platt[1])))
        else:
            raise SetencError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
        r = self._ratio(articles)
        return p if r == 1.0 else p / (p + (1.0 - p) * r)

    def score_for(self, probability: float, articles: int | None = None) -> float:
        """The lowest score whose probability reaches `probability` (+inf when none does): a range search's radius."""
        if not 0.0 < probability <= 1.0:
            raise SetencError(f"probability {probability} must be in (0, 1]")
        lo, hi = -1.0, 1.0
        if self.probability(hi, articles) < probability:
            return float("inf")
        for _ in range(50):  # bisection on the monotone map: exact to ~1e-15 on [-1, 1]
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if self.probability(mid, articles) >= probability else (mid, hi)
        return hi

    def summary(self) -> dict:
        """What a run's result.json and a report show: the map, its articles, thresholds and cross-fitted check."""
        return {"method": self.method, "fitted_on": self.fitted_on, "articles": self.articles,
                "thresholds": self.thresholds(), **self.crossfit}

    def precision_curve(self, articles: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(descending score thresholds, pairwise precision, recall) of the pairs at or above each threshold."""
        tp, fp = np.asarray(self.curve_tp, np.float64), np.asarray(self.curve_fp, np.float64)
        prec = tp / np.maximum(tp + fp * self._ratio(articles), 1e-12)
        return np.asarray(self.curve_score), prec, tp / max(self.positives, 1)

    def threshold(self, precision: float, articles: int | None = None) -> float:
        """The lowest score whose pairs at or above it are at least `precision` true matches (the most recall at
        that precision); +inf when no threshold reaches it."""
        if not 0.0 < precision <= 1.0:
            raise SetencError(f"precision {precision} must be in (0, 1]")
        scores, prec, _ = self.precision_curve(articles)
        ok = np.flatnonzero(prec >= precision)
        return float(scores[ok[-1]]) if len(ok) else float("inf")

    def thresholds(self, articles: int | None = None) -> dict[str, float]:
        """Thresholds of the stated precisions, for reports and checkpoints."""
        return {f"{p:g}": self.threshold(p, articles) for p in PRECISIONS}


def all_pairs(scores: np.ndarray, labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same group) of every pair i < j of an (N, N) score matrix."""
    i, j = np.triu_indices(len(labels), k=1)
    codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1]
    return np.asarray(scores, np.float64)[i, j], codes[i] == codes[j]


def fit(scores: np.ndarray, same: np.ndarray, articles: int, products: bool, fitted_on: str = "",
        method: str = "isotonic") -> Calibration:
    """Fit both maps and the precision curve on pair scores and their same-group flags."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if not same.any() or same.all():
        raise SetencError(f"calibration needs both same-group and other pairs among its {articles} articles, got "
                          f"{int(same.sum())} of {len(same)} pairs the same group: give a catalogue with groups")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, same)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(scores[:, None], same)
    order = np.argsort(-scores, kind="stable")
    s, tp = scores[order], np.cumsum(same[order])
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # the last pair of each distinct score
    keep = last[np.unique(np.linspace(0, len(last) - 1, min(CURVE_POINTS, len(last))).round().astype(int))]
    return Calibration(method, iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist(),
                       (float(lr.coef_[0, 0]), float(lr.intercept_[0])), s[keep].tolist(), tp[keep].tolist(),
                       (keep + 1 - tp[keep]).tolist(), int(articles), int(same.sum()), len(same), bool(products),
                       fitted_on)


def fit_catalog(vectors: np.ndarray, catalog: Catalog, products: bool, fitted_on: str = "") -> Calibration:
    """`fit_vectors` on a catalogue's article vectors, labelled by group (an article without one: by itself)."""
    labels = [a.group if a.group is not None else f"\0{a.id}" for a in catalog.articles]
    return fit_vectors(vectors, labels, catalog.ids, products, fitted_on)


def fit_heldout(encode, parts: dict, products: bool, what: str) -> Calibration | None:
    """The calibration of a training run: fitted on its validation split, else its test split (articles it never
    trained on; `crossfit` measures the map on halves of them). `parts`: split name -> (photo sets, catalog);
    `encode(sets, catalog)` -> their article vectors. None where neither split has a same-group pair."""
    for name in ("val", "test"):
        sets, cat = parts[name]
        if len(cat) < 2:
            continue
        try:
            return fit_catalog(encode(sets, cat), cat, products, f"{name} split of {what}")
        except SetencError:  # no same-group pair (or only such pairs) among these articles
            continue
    return None


def fit_vectors(vectors: np.ndarray, labels: Sequence[Hashable], ids: Sequence[str], products: bool,
                fitted_on: str = "") -> Calibration:
    """`crossfit` on unit article vectors (cosine scores), then the chosen map fitted on all of them."""
    vectors, labels, ids = _cap(np.asarray(vectors, np.float32), labels, ids)
    S = vectors @ vectors.T
    return fit_scores(S, labels, ids, products, fitted_on)


def fit_scores(S: np.ndarray, labels: Sequence[Hashable], ids: Sequence[str], products: bool,
               fitted_on: str = "") -> Calibration:
    """`crossfit` on an (N, N) score matrix, then the better-calibrated map fitted on every pair."""
    check = crossfit(S, labels, ids, products)
    cal = fit(*all_pairs(S, labels), len(labels), products, fitted_on)
    cal.method = min(METHODS, key=lambda m: check["ece"][m]) if check else "isotonic"
    cal.crossfit = check
    return cal


def crossfit(S: np.ndarray, labels: Sequence[Hashable], ids: Sequence[str], products: bool,
             precisions: Sequence[float] = PRECISIONS) -> dict:
    """Fit on half the groups, measure on the other half and the reverse: each map's expected calibration error,
    and at each stated precision the pairwise precision / recall of the threshold and of its clusters
    (`setenc.matching.clusters`: `cluster_*` average linkage, `components_*` connected components) on the unseen
    half. Means of the two directions; {} when a half has no pair."""
    labels = np.asarray(labels, dtype=object).astype(str)
    key = labels if products else np.asarray(ids, dtype=object).astype(str)
    half = np.array([hash_bucket(k, 7) < 0.5 for k in key])
    runs = []
    for a, b in ((half, ~half), (~half, half)):
        fa, fb = np.flatnonzero(a), np.flatnonzero(b)
        sa, ya = all_pairs(S[np.ix_(fa, fa)], labels[fa])
        sb, yb = all_pairs(S[np.ix_(fb, fb)], labels[fb])
        if not (ya.any() and yb.any() and (~ya).any() and (~yb).any()):
            return {}
        cal = fit(sa, ya, len(fa), products)
        run = {"ece": {m: ece(cal.probability(sb, len(fb), m), yb) for m in METHODS}}
        for p in precisions:
            t = cal.threshold(p, len(fb))
            hit = sb >= t
            tp = int((hit & yb).sum())
            edges = score_edges(S[np.ix_(fb, fb)], t)
            run[f"{p:g}"] = {"threshold": t, "pair_precision": tp / hit.sum() if hit.any() else float("nan"),
                             "pair_recall": tp / int(yb.sum())}
            for method, key in (("average", "cluster"), ("components", "components")):
                groups = cluster(edges, len(fb), t, method).labels
                run[f"{p:g}"].update({f"{key}_{k}": v for k, v in pair_counts(groups, labels[fb]).items()})
        runs.append(run)
    return _mean_dicts(runs)


def ece(prob: np.ndarray, same: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the pair-weighted mean |mean probability - share of true matches| over equal-width
    probability bins."""
    prob, same = np.asarray(prob, np.float64), np.asarray(same, np.float64)
    which = np.minimum((prob * bins).astype(int), bins - 1)
    n = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, prob, bins) - np.bincount(which, same, bins))
    return float(gap.sum() / max(n.sum(), 1))


def reliability_png(cal: Calibration, scores: np.ndarray, same: np.ndarray, path: str | os.PathLike,
                    articles: int | None = None, title: str = "") -> Path:
    """A reliability diagram of both maps on pairs (held-out ones: the map did not see them)."""
    from setenc.evaluation.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfect")
    for m, colour in zip(METHODS, ("#1f77b4", "#d62728")):
        p = cal.probability(scores, articles, m)
        which = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
        n = np.bincount(which, minlength=ECE_BINS)
        used = n > 0
        x = np.bincount(which, p, ECE_BINS)[used] / n[used]
        y = np.bincount(which, same.astype(float), ECE_BINS)[used] / n[used]
        ax.plot(x, y, marker="o", color=colour, label=f"{m} (ECE {ece(p, same):.3f})")
    ax.set(xlabel="predicted P(same group)", ylabel="share of same-group pairs", xlim=(0, 1), ylim=(0, 1),
           title=title or "reliability")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def _cap(vectors: np.ndarray, labels: Sequence[Hashable], ids: Sequence[str]):
    """At most MAX_ARTICLES articles, chosen by id hash (deterministic), so a fit's pair matrix stays bounded."""
    if len(ids) <= MAX_ARTICLES:
        return vectors, list(labels), list(ids)
    keep = np.argsort([hash_bucket(str(i), 11) for i in ids])[:MAX_ARTICLES]
    keep.sort()
    return vectors[keep], [labels[k] for k in keep], [ids[k] for k in keep]


def _mean_dicts(runs: list[dict]) -> dict:
    """Element-wise mean of nested dicts of numbers."""
    out = {}
    for k, v in runs[0].items():
        out[k] = _mean_dicts([r[k] for r in runs]) if isinstance(v, dict) else float(np.mean([r[k] for r in runs]))
    return out


def check_catalog(cal: Calibration, vectors: np.ndarray, catalog: Catalog,
                  png: str | os.PathLike | None = None) -> dict:
    """A checkpoint's calibration on scored articles, for an evaluation report: its summary, the expected calibration
    error of its map on these articles' pairs (in-sample where they are the articles it was fitted on: the
    cross-fitted errors in the summary are the held-out ones), and a reliability diagram at `png`."""
    labels = [a.group if a.group is not None else f"\0{a.id}" for a in catalog.articles]
    vectors, labels, _ = _cap(np.asarray(vectors, np.float32), labels, catalog.ids)
    s, same = all_pairs(vectors @ vectors.T, labels)
    out = {**cal.summary(), "scored_articles": len(labels), "ece_scored": ece(cal.probability(s, len(labels)), same)}
    if png is not None:
        out["png"] = reliability_png(cal, s, same, png, len(labels), f"{catalog.name}: {len(labels)} articles").name
    return out


def report_lines(checks: dict[str, dict]) -> list[str]:
    """Markdown lines of `check_catalog` results, one a calibrated head."""
    lines = []
    for name, c in checks.items():
        held = c.get("ece", {})
        cross = f"; cross-fitted on held-out products: isotonic {held['isotonic']:.4f}, Platt {held['platt']:.4f}" \
            if held else ""
        thresholds = " / ".join(f"{t:.3f}" for t in c["thresholds"].values())
        lines.append(f"- `{name}` carries a calibration ({c['method']}, fitted on the {c['fitted_on']}): expected "
                     f"calibration error {c['ece_scored']:.4f} on these {c['scored_articles']} articles' pairs{cross}; "
                     f"cosine thresholds for pairwise precision {' / '.join(c['thresholds'])}: {thresholds}"
                     + (f" (reliability diagram: {c['png']})" if c.get("png") else ""))
    return lines
