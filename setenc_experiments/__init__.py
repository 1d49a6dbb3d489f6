"""Experiments built on setenc that are not part of the library: the seed article reproduced on real catalogues."""
