"""Screen: ways to pool EfficientNet-Lite's last feature map in ONE forward pass, against the image crop they would
replace (two passes), by mean pooling of every article on the whole catalogue (`group` protocol, nothing trained).

    OMP_NUM_THREADS=1 python benchmarks/bench_pooling.py --catalog ../shared/data/grocery

Each photo's (1280, h, w) map is computed once (the net's ONNX export up to the map, onnxruntime, one thread); every
pooling below is read off it. `c<k>` is the central k x k cells (Lite0 at 224 px: a 7 x 7 map, so c5 is the central
75%, as `centre=0.75` pools), `avg(...)` the mean of unit vectors, `sum(...)` of raw means, `gauss` a centred Gaussian
weighting (sigma = a quarter of the side). The cache rows read the shipped backbone's cached plain and `crop@0.75`
vectors (embedded if missing): the photo alone, each photo averaged with its crop, the crop alone. Results:
docs/tta.md#one-pass-centre-pooling.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from setenc.catalogs import load_catalog
from setenc.evaluation.metrics import vector_metrics
from setenc.evaluation.protocols import group_protocol
from setenc.photos import create_backbone, photo_sets
from setenc.photos.backbones.efficientnet import efficientnet_lite
from setenc.photos.embed import decode_photo
from setenc.plumbing.cli import run_main
from setenc.plumbing.paths import cache_dir


class FeatureMap(torch.nn.Module):
    """The net up to its last feature map: (B, 3, S, S) -> (B, 1280, h, w)."""

    def __init__(self, pooled: torch.nn.Module):
        super().__init__()
        self.net = pooled.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


class Photos(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return decode_photo(self.paths[i], self.transform)[0]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def poolings(y: np.ndarray) -> dict[str, np.ndarray]:
    """(B, C, h, w) -> every screened pooling, (B, C) each."""
    h = y.shape[2]

    def centre(k: int) -> np.ndarray:
        o = (h - k) // 2
        return y[:, :, o:o + k, o:o + k].mean(axis=(2, 3))

    k75, k50 = round(h * 0.75), round(h * 0.5) - (h - round(h * 0.5)) % 2  # centred: same parity as h
    g = np.exp(-0.5 * ((np.arange(h) - (h - 1) / 2) / (h / 4)) ** 2)
    weights = np.outer(g, g) / np.outer(g, g).sum()
    full, a, b = y.mean(axis=(2, 3)), centre(k75), centre(k50)
    gem = (np.clip(y, 1e-6, None) ** 3).mean(axis=(2, 3)) ** (1 / 3)
    return {"full": full, f"c{k75}": a, f"c{k50}": b, f"avg(full,c{k75})": unit(full) + unit(a),
            f"avg(full,c{k50})": unit(full) + unit(b), f"avg(full,c{k75},c{k50})": unit(full) + unit(a) + unit(b),
            f"sum(full,c{k75})": full + a, "gauss": (y * weights).sum(axis=(2, 3)),
            "avg(full,gem)": unit(full) + unit(gem)}


def mean_pooling_metrics(sets: list[np.ndarray], catalog) -> dict:
    p = group_protocol(sets, catalog)
    article = lambda s: unit(np.stack([x.mean(0) for x in s]))  # noqa: E731
    return vector_metrics(article(p.queries), article(p.gallery), p.q_labels, p.g_labels, exclude=p.exclude)


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="../shared/data/grocery")
    p.add_argument("--backbone", default="efficientnet-lite0", choices=["efficientnet-lite0", "efficientnet-lite2"])
    args = p.parse_args()
    catalog = load_catalog(args.catalog)
    spec = efficientnet_lite(args.backbone)
    size = spec.transform.size
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fmap.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(FeatureMap(spec.build()).eval(), (torch.randn(2, 3, size, size),), path,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                              opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        paths = catalog.image_paths
        pooled: dict[str, list[np.ndarray]] = {}
        for x in DataLoader(Photos(paths, spec.transform), batch_size=32, num_workers=1, collate_fn=torch.stack):
            for name, v in poolings(session.run(["y"], {"x": x.numpy()})[0]).items():
                pooled.setdefault(name, []).append(unit(v).astype(np.float32))
    row = {path: i for i, path in enumerate(paths)}
    print(f"| {catalog.name}, {args.backbone}, mean pooling | R@1 | MAP@R |\n|---|---|---|")
    for name, parts in pooled.items():
        vectors = np.concatenate(parts)
        m = mean_pooling_metrics([vectors[[row[q] for q in a.images]] for a in catalog.articles], catalog)
        print(f"| one pass: {name} | {m['recall@1']:.3f} | {m['map@r']:.3f} |")
    backbone = create_backbone(args.backbone)
    sets, kept, _, _ = photo_sets(catalog, backbone, cache_dir("embeddings"), progress=False,
                                  tta="crop@0.75:elements", wait_for_lock=600)  # (photo, its crop) rows
    for name, pick in (("tta=none", lambda s: s[0::2]), ("tta=crop@0.75 (2 passes)", lambda s: unit(s[0::2] + s[1::2])),
                       ("the crop alone (1 pass)", lambda s: s[1::2])):
        m = mean_pooling_metrics([pick(s) for s in sets], kept)
        print(f"| cache: {name} | {m['recall@1']:.3f} | {m['map@r']:.3f} |")


if __name__ == "__main__":
    run_main(main)
