"""Where setenc keeps generated data and caches: `$SETENC_CACHE`, else `~/.cache/setenc`."""

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache root (or a sub-folder of it), created on demand."""
    root = Path(os.environ.get("SETENC_CACHE") or Path.home() / ".cache" / "setenc").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
