"""setenc: one vector per article (a set of product photos)."""

__version__ = "0.1.0"
