"""Photo decoding: every bad file becomes an ImageError naming it; every colour mode becomes correct RGB."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from setenc.plumbing.errors import ImageError
from setenc.photos import ImageTransform, letterbox, load_image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _jpeg_bytes(tmp_path: Path) -> bytes:
    rng = np.random.default_rng(0)
    p = tmp_path / "ok.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p, quality=90)
    return p.read_bytes()


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "truncated", "garbage_jpeg", "text", "bomb"])
def test_bad_inputs_raise_image_error_naming_the_file(tmp_path, kind):
    p = tmp_path / f"{kind}.jpg"
    max_pixels = 64_000_000
    if kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(_jpeg_bytes(tmp_path)[:700])
    elif kind == "garbage_jpeg":
        p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    elif kind == "text":
        p.write_text("this is not a photo\n")
    elif kind == "bomb":
        Image.new("RGB", (40, 30)).save(p)
        max_pixels = 1000
    with pytest.raises(ImageError) as e:
        load_image(p, max_pixels=max_pixels)
    assert str(p) in str(e.value)
    assert e.value.__cause__ is None  # no raw PIL traceback chained under it


def _roundtrip(tmp_path: Path, img: Image.Image, name: str) -> np.ndarray:
    p = tmp_path / name
    img.save(p)
    out = load_image(p)
    assert out.mode == "RGB" and out.size == img.size
    return np.asarray(out).astype(int)


def test_greyscale_and_bilevel(tmp_path):
    g = _roundtrip(tmp_path, Image.new("L", (5, 4), 77), "g.png")
    assert (g == 77).all()
    b = _roundtrip(tmp_path, Image.new("1", (5, 4), 1), "b.png")
    assert (b == 255).all()


def test_cmyk(tmp_path):
    a = _roundtrip(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.tif")  # pure red ink-wise
    assert (a == [255, 0, 0]).all()
    j = _roundtrip(tmp_path, Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "c.jpg")
    assert np.abs(j - [255, 0, 0]).max() < 12


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    a = _roundtrip(tmp_path, img, "a.png")
    assert (a[0, 0] == 255).all()  # fully transparent -> white, not black
    assert (a[0, 1] == [0, 0, 255]).all()
    assert np.abs(a[0, 2] - 127).max() <= 1
    la = _roundtrip(tmp_path, Image.new("LA", (3, 3), (0, 0)), "la.png")
    assert (la == 255).all()


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (3, 2), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    a = _roundtrip(tmp_path, p, "p.png")
    assert (a == [10, 200, 30]).all()
    p.info["transparency"] = 1
    t = _roundtrip(tmp_path, p, "t.png")
    assert (t == 255).all()
    gif = _roundtrip(tmp_path, Image.new("P", (3, 2), 0), "g.gif")
    assert gif.shape == (2, 3, 3)


def test_16_bit_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    a = _roundtrip(tmp_path, Image.fromarray(arr), "i16.png")
    assert a[0, :, 0].tolist() == [0, 128, 255]
    i32 = Image.fromarray(np.array([[0, 257 * 64, 65535]], dtype=np.int32), mode="I")
    b = _roundtrip(tmp_path, i32, "i32.tif")
    assert b[0, :, 1].tolist() == [0, 64, 255]
    dark = _roundtrip(tmp_path, Image.fromarray(np.array([[0, 257, 514]], dtype=np.uint16)), "dark16.png")
    assert dark[0, :, 2].tolist() == [0, 1, 2]  # declared 16-bit: scaled even when every value is small
    f = _roundtrip(tmp_path, Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F"), "f.tif")
    assert f[0, :, 0].tolist() == [0, 128, 255]


def test_one_pixel(tmp_path):
    a = _roundtrip(tmp_path, Image.new("RGB", (1, 1), (9, 8, 7)), "one.png")
    assert a.tolist() == [[[9, 8, 7]]]


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.size == (20, 40)  # width and height swapped
    a = np.asarray(out).astype(int)
    assert a[5, 10, 0] > 200 and a[5, 10, 2] < 50  # the left (red) half is now on top
    assert a[35, 10, 2] > 200 and a[35, 10, 0] < 50


def test_draft_decodes_big_jpegs_at_reduced_scale(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (800, 400), (0, 128, 0)).save(p)
    assert load_image(p).size == (800, 400)
    assert load_image(p, draft=224).size == (400, 200)  # 1/2 keeps the longer side >= 224, 1/4 would not


def test_letterbox_keeps_aspect_ratio():
    out = letterbox(Image.new("RGB", (100, 50), (255, 0, 0)), 64)
    a = np.asarray(out).astype(int)
    assert out.size == (64, 64)
    assert (a[:15] == 255).all() and (a[49:] == 255).all()  # white bands top and bottom
    assert (a[17:47] == [255, 0, 0]).all()  # the red image, 64x32, centred
    tall = np.asarray(letterbox(Image.new("RGB", (10, 40), (0, 0, 0)), 40)).astype(int)
    assert (tall[:, :14] == 255).all() and (tall[:, 26:] == 255).all() and (tall[:, 16:24] == 0).all()
    grey = np.asarray(letterbox(Image.new("L", (2, 1)), 8, fill=(9, 9, 9)))
    assert (grey[0] == 9).all()


@pytest.mark.parametrize("w,h", [(348, 348), (100, 50), (37, 80), (10, 10), (1, 1)])
def test_letterbox_equals_pil_bilinear_resize_and_paste(w, h):
    img = Image.fromarray(np.random.default_rng(w).integers(0, 255, (h, w, 3), dtype=np.uint8))
    s = 64 / max(w, h)
    nw, nh = round(w * s), round(h * s)
    ref = Image.new("RGB", (64, 64), (255, 255, 255))
    ref.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), ((64 - nw) // 2, (64 - nh) // 2))
    diff = np.abs(np.asarray(letterbox(img, 64)).astype(int) - np.asarray(ref).astype(int))
    assert diff.max() <= 1


def test_image_transform_normalises_and_pickles():
    t = ImageTransform(16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    img = Image.new("RGB", (32, 16), (255, 0, 0))
    x = t(img)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[:, 8, 8], torch.tensor([1.0, -1.0, 0.0]))  # red: ((1,0,0) - mean) / std
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 3.0, 1.0]))  # white padding
    t2 = pickle.loads(pickle.dumps(t))
    assert t2 == t and torch.equal(t2(img), x)


@pytest.mark.realdata
def test_real_photos_decode():
    files = sorted((DATA / "grocery" / "images").rglob("*.jpg"))[:3]
    if not files:
        pytest.skip("../shared/data/grocery is absent")
    for f in files:
        assert load_image(f).mode == "RGB"
