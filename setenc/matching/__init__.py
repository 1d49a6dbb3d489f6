"""Pairwise matching of two photo sets on their photo x photo cosine matrix: the seed article's matchers
(`matchers`: mean, chamfer, recursive, linear, ordered), kept as the baselines every set head must beat."""
