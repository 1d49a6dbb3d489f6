"""Where setenc keeps generated data and caches (`$SETENC_CACHE`, else `~/.cache/setenc`), and file digests.

Built backbone graphs (ONNX exports, int8 quantisations: the same bytes for every catalogue and user) go to
`$SETENC_GRAPHS` when set, else the cache's `onnx/`: one shared folder builds each graph once for many caches."""

import functools
import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache root (or a sub-folder of it), created on demand."""
    root = Path(os.environ.get("SETENC_CACHE") or Path.home() / ".cache" / "setenc").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def graphs_dir() -> Path:
    """Where built backbone graphs are kept (`$SETENC_GRAPHS`, else `<cache>/onnx`), created on demand."""
    if os.environ.get("SETENC_GRAPHS"):
        path = Path(os.environ["SETENC_GRAPHS"]).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return cache_dir("onnx")


def absolute(path: str | os.PathLike) -> Path:
    """The one rule for user paths: absolute, with `.` and `..` collapsed, symlinks NOT followed.

    A catalogue under a symlinked folder keeps the paths the user wrote, whichever loader or adapter read it.
    """
    return Path(os.path.abspath(os.fspath(path)))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: pins checkpoints, weights and index files.

    Memoised per (path, size, mtime), because weight files are large and read by every backbone creation.
    """
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
