"""Benchmark: int8 quantisation settings of a backbone, by cosine to float32 on real photos and forward speed.

Each candidate (`CANDIDATES`) is quantised through the package's own path (`setenc.photos.backbones.int8.quantise`,
calibrated on the synthetic demo photos as shipped), checked for int16 pair sums that would saturate on x86 CPUs
without VNNI (`saturating_layers`: such a graph's vectors depend on the CPU), and compared with the float32 ONNX
graph on `--photos` real photos of each `--catalogs` catalogue: mean and min cosine of each photo's two vectors.
Forward photos/s of every graph (float32 included) are timed round-robin in the same run, best of `--repeats`, so
their ratios hold under the shared machine's load; the CPU's ISA is printed with them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from setenc.catalogs import load_catalog
from setenc.photos import load_image
from setenc.photos.backbones import BACKBONES, OnnxBackbone, export_onnx
from setenc.photos.backbones.int8 import (QUANTISATION, Quantisation, _calibration_pixels, agreement, cpu_isa,
                                          quantise, saturating_layers)
from setenc.photos.backbones.onnx import _IN, _OUT
from setenc.plumbing.cli import run_main

_PLAIN = dict(pair_scales=False)
CANDIDATES = {
    "u8s8 (old default)": Quantisation(weight_bits=8, **_PLAIN),
    "u8s7 (reduce_range)": Quantisation(weight_bits=7, depthwise_bits=7, **_PLAIN),
    "u8s7, 8-bit depthwise": Quantisation(weight_bits=7, **_PLAIN),
    "u8s8p pair-bounded (default)": Quantisation(),
    "u8s8p float stem": Quantisation(keep_float=("stem",)),
    "u8s8p minmax": Quantisation(method="minmax"),
    "u8s8p entropy": Quantisation(method="entropy"),
    "u8s8p per-tensor": Quantisation(per_channel=False),
    "u8s8p qoperator": Quantisation(qdq=False),
    "u8u8": Quantisation(weights="uint8", weight_bits=8, **_PLAIN),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="efficientnet-lite0", help="a float torch backbone of the registry")
    p.add_argument("--catalogs", nargs="+", default=["../shared/data/grocery", "../shared/data/cars"])
    p.add_argument("--photos", type=int, default=96, help="real photos per catalogue (evenly spaced)")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--speed-photos", type=int, default=128, help="photos per forward timing round")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


def real_pixels(catalog: str, n: int, transform) -> np.ndarray:
    """(n, 3, S, S): `n` evenly spaced photos of a catalogue, through the backbone's preprocessing."""
    paths = sorted(load_catalog(catalog).image_paths)
    picked = paths[:: max(1, len(paths) // n)][:n]
    return torch.stack([transform(load_image(p)) for p in picked]).numpy()


def forward_rate(graph: OnnxBackbone, batch: torch.Tensor, photos: int) -> float:
    """Photos/s of `encode` alone on one pre-made batch."""
    n, start = 0, time.perf_counter()
    while n < photos:
        graph.encode(batch)
        n += len(batch)
    return n / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    spec = BACKBONES.get(args.backbone)()
    fp32 = export_onnx(spec)
    print(f"{args.backbone}: {len(args.candidates)} settings; CPU {cpu_isa()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads; package default {QUANTISATION.tag()}", flush=True)
    real = {Path(c).name: real_pixels(c, args.photos, spec.transform) for c in args.catalogs}
    rows, graphs = [], {"float32": fp32}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.candidates:
            q = CANDIDATES[label]
            path, start = str(Path(tmp) / f"{len(graphs)}.onnx"), time.perf_counter()
            quantise(fp32, path, _calibration_pixels(spec, q), q)
            cos = {name: agreement(fp32, path, px) for name, px in real.items()}
            rows.append((label, q, len(saturating_layers(path)), cos, time.perf_counter() - start))
            graphs[label] = path
            every = np.concatenate(list(cos.values()))
            print(f"  {label} [{q.tag()}]: mean cosine {every.mean():.4f}, min {every.min():.4f}, "
                  f"{rows[-1][2]} saturating layers ({rows[-1][4]:.0f} s)", flush=True)
        batch = torch.from_numpy(next(iter(real.values()))[: args.batch_size])
        runs = {k: OnnxBackbone(k, k, p, spec.transform, _IN, _OUT) for k, p in graphs.items()}
        rates = {k: 0.0 for k in runs}
        for _ in range(args.repeats):  # round-robin: every graph sees the same load
            for k, g in runs.items():
                g.encode(batch)  # warm-up
                rates[k] = max(rates[k], forward_rate(g, batch, args.speed_photos))
    names = list(real)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nCPU {cpu_isa()}; load average {load}; forward photos/s best of {args.repeats}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads\n")
    print("| setting | id tag | saturating layers (x86 w/o VNNI) | "
          + " | ".join(f"{n} mean / min cosine" for n in names)
          + " | all mean / min | forward photos/s | vs float32 |")
    print("|---|---|---|" + "---|" * len(names) + "---|---|---|")
    print(f"| float32 | | 0 | " + " | ".join("1 / 1" for _ in names) + f" | 1 / 1 | {rates['float32']:.1f} | 1.00 |")
    for label, q, risky, cos, _ in rows:
        every, speed = np.concatenate(list(cos.values())), rates[label]
        print(f"| {label} | {q.tag()} | {risky} | "
              + " | ".join(f"{c.mean():.4f} / {c.min():.4f}" for c in cos.values())
              + f" | {every.mean():.4f} / {every.min():.4f} | {speed:.1f} | {speed / rates['float32']:.2f} |")


if __name__ == "__main__":
    run_main(main)
