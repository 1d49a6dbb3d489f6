"""Where setenc keeps generated data and caches (`$SETENC_CACHE`, else `~/.cache/setenc`), and file digests."""

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache root (or a sub-folder of it), created on demand."""
    root = Path(os.environ.get("SETENC_CACHE") or Path.home() / ".cache" / "setenc").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: pins checkpoints, weights and index files."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
