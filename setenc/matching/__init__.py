"""Pairwise matching of articles: the seed article's matchers on the photo x photo cosine matrix (`matchers`: mean,
chamfer, recursive, linear, ordered), kept as the baselines every set head must beat; and "same product or not"
(`calibration`: score -> probability and thresholds at stated precisions; `clusters`: de-duplication clusters from
FAISS candidates; `explain`: the photo pairs behind a match)."""
