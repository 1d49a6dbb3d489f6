"""Decoding product photos safely, and the aspect-preserving letterbox every backbone sees.

Every way a photo can be unusable (missing, a folder, empty, truncated, not an image, a decompression bomb)
becomes one `ImageError` that names the file, raised here rather than deep inside a DataLoader worker.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from setenc.plumbing.errors import ImageError

MAX_PIXELS = 64_000_000  # default decompression-bomb limit: 8000x8000; no product photo needs more
WHITE = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION = 0x0112  # the EXIF tag


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Decode a photo fully into an RGB image, upright by its EXIF orientation.

    Transparent photos are composited on white (product photos are shot on white); 16-bit and float
    greyscale is scaled to 8 bits; CMYK / palette / greyscale are converted to RGB.

    Args:
        path: the photo file.
        max_pixels: refuse images with more pixels than this (decompression bombs); default 64 MP.
        draft: if set, JPEGs may be decoded at a reduced DCT scale (1/2, 1/4, 1/8) as long as the longer
            side stays >= `draft` -- much faster for large photos that are letterboxed to `draft` anyway.
            Slightly changes pixel values, so use one setting per embedding cache.

    Raises:
        ImageError: naming the file and the reason, for every kind of unusable file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(f)  # we own the file, so the decoded image outlives it
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{path}: {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} "
                    "(a decompression bomb?); shrink the photo or pass a larger max_pixels"
                )
            if draft is not None and img.format == "JPEG":
                scale = draft / max(w, h)
                img.draft("RGB", (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))))
            img.load()  # full decode now, so truncation is caught here
        return _to_rgb(_upright(img))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: photo file not found; fix the path in the catalog or restore the file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not a photo; fix the path in the catalog") from None
    except PermissionError:
        raise ImageError(f"{path}: photo is not readable (permission denied); fix its permissions") from None
    except UnidentifiedImageError:
        size = path.stat().st_size if path.is_file() else 0
        what = "file is empty (0 bytes)" if size == 0 else "not a recognised image format"
        raise ImageError(f"{path}: cannot decode photo: {what}; re-export or remove it from the catalog") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused as a decompression bomb ({e}); shrink the photo") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageError(
            f"{path}: cannot decode photo ({type(e).__name__}: {e}); the file is corrupt or truncated -- "
            "re-download or remove it from the catalog"
        ) from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the photo as stored rather than failing it."""
    try:
        if img.getexif().get(_ORIENTATION, 1) == 1:
            return img
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 -- EXIF parsing can fail in many ways; the pixels are still good
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; alpha composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), img.mode), mode="L").convert("RGB")
    return img.convert("RGB")


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth greyscale -> 0..255.

    "I;16*" is 16-bit by declaration: /257. "I" (32-bit int) is 16-bit if any value exceeds 255, else
    already 8-bit. "F" in [0, 1] is scaled x255, else taken as 0..255.
    """
    a = a.astype(np.float64)
    top = float(a.max()) if a.size else 0.0
    if mode.startswith("I;16") or (mode == "I" and top > 255.0):
        a = a / 257.0 if top <= 65535.0 else a * (255.0 / top)
    elif mode == "F" and top <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def letterbox_tensor(img: Image.Image, size: int, fill: tuple[int, int, int] = WHITE) -> torch.Tensor:
    """Resize the longer side to `size`, centre, pad to size x size -> (3, size, size) uint8.

    Tall and wide products are not distorted. Antialiased bilinear resize in torch: 3-4x faster than
    PIL's on CPUs where Pillow has no SIMD, which keeps decoding from starving the backbone.
    """
    img = img if img.mode == "RGB" else img.convert("RGB")
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (3, h, w), channels-last strides
    if (nw, nh) != (w, h):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    if (nw, nh) == (size, size):
        return x.contiguous()
    out = torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1).repeat(1, size, size)  # (3, size, size)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, top : top + nh, left : left + nw] = x
    return out


def letterbox(img: Image.Image, size: int, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """`letterbox_tensor` as a PIL image, to look at what a backbone sees."""
    return Image.fromarray(letterbox_tensor(img, size, fill).permute(1, 2, 0).numpy())


class ImageTransform:
    """letterbox -> (3, size, size) float32 tensor -> normalise.

    Plain attributes only, so DataLoader worker processes can pickle it.
    """

    def __init__(
        self,
        size: int,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        fill: tuple[int, int, int] = WHITE,
    ):
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.fill = tuple(int(f) for f in fill)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        x = letterbox_tensor(img, self.size, self.fill)  # (3, S, S) uint8
        mean = torch.tensor(self.mean).view(3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(self.std).view(3, 1, 1) * 255.0)
        return x.float().sub_(mean).mul_(inv_std)  # == (x / 255 - mean) / std, in place: no temporaries

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, mean={self.mean}, std={self.std}, fill={self.fill})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageTransform) and vars(self) == vars(other)
