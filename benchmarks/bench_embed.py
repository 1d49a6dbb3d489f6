"""Benchmark: backbone forward-only photos/s vs the whole embedding pipeline over real JPEGs, per backbone.

Forward-only runs `Backbone.encode` on pre-made tensors; the pipeline is `setenc.photos.cache.embed_catalog`
(hash + decode + letterbox + normalise in worker processes + forward + cache write) into a fresh cache.
Their ratio says whether decoding starves the backbone (goal >= 0.9). Forward and pipeline runs alternate
`--repeats` times: photos/s are the best runs (other processes on a shared machine only ever slow a run down),
the ratio is the median of back-to-back pairs. Every table is headed by the CPU's int8-relevant ISA (AVX2 /
AVX-512 / VNNI, from /proc/cpuinfo) and the load average: int8 speed depends on VNNI, and on a shared machine only
ratios within one run compare. CPU ms/photo of each side (process time, all threads) gives
the ratio's ceiling where decode workers and the backbone share saturated cores: fwd / (fwd + decode).
The `clip-b32` rows are a ViT-B/32-shaped CLIP vision tower with random weights (timing only), loaded through
the real `from_pretrained` path.

`--engines local ray:1 ray:2` adds the engine comparison: the same pipeline into a fresh cache with the single-process
engine and with the Ray engine (`setenc.photos.ray_engine`) of N embedding actors, on a local Ray started once
beforehand (its start-up is not counted; the actors' start-up and backbone loading are, as in a real run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from setenc.photos import Backbone, create_backbone
from setenc.catalogs import load_catalog
from setenc.photos import embed_catalog
from setenc.photos import load_image
from setenc.photos.backbones.int8 import cpu_isa

# row label -> (registry name, runtime, slow?); "clip-b32" is the random ViT-B/32-shaped CLIP
CONFIGS = {
    "efficientnet-lite0/torch": ("efficientnet-lite0", "torch", True),
    "efficientnet-lite0/onnx": ("efficientnet-lite0", "onnx", False),
    "efficientnet-lite0-int8/onnx": ("efficientnet-lite0-int8", "onnx", False),
    "efficientnet-lite2/torch": ("efficientnet-lite2", "torch", True),
    "efficientnet-lite2/onnx": ("efficientnet-lite2", "onnx", False),
    "efficientnet-lite2-int8/onnx": ("efficientnet-lite2-int8", "onnx", False),
    "efficientnet-lite0+lite2/onnx": ("efficientnet-lite0+lite2", "onnx", False),
    "efficientnet-lite0+lite2-int8/onnx": ("efficientnet-lite0+lite2-int8", "onnx", False),
    "clip-b32/torch": ("clip", "torch", True),
    "clip-b32/onnx": ("clip", "onnx", True),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="../shared/data/grocery", help="manifest or folder with catalog.jsonl")
    p.add_argument("--limit", type=int, default=640, help="photos per run for the EfficientNet ONNX rows")
    p.add_argument("--slow-limit", type=int, default=128, help="photos per run for the slower torch and CLIP rows")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decode workers (default: embed_catalog's choice)")
    p.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="forward + pipeline rounds per row")
    p.add_argument("--engines", nargs="*", default=[], type=engine_arg,
                   help="engine comparison: local and/or ray:N (N embedding actors), e.g. local ray:1 ray:2")
    return p.parse_args()


def engine_arg(text: str) -> int:
    """`local` -> 0, `ray:N` -> N (embedding actors)."""
    if text == "local":
        return 0
    kind, _, n = text.partition(":")
    if kind != "ray" or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use local or ray:N with N >= 1")
    return int(n)


def random_clip(folder: Path) -> Path:
    """Save a ViT-B/32-shaped CLIP vision tower (random, seeded) and its image processor into `folder`."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig()).save_pretrained(folder)  # defaults = ViT-B/32, 512-d
    CLIPImageProcessor().save_pretrained(folder)
    return folder


@contextlib.contextmanager
def _onnx_cache(folder: Path | None):
    """Export the throw-away random CLIP into `folder`, not into the user's cache."""
    old = os.environ.get("SETENC_CACHE")
    if folder is not None:
        os.environ["SETENC_CACHE"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SETENC_CACHE", None)
        else:
            os.environ["SETENC_CACHE"] = old


def forward_rate(backbone: Backbone, batch: torch.Tensor, photos: int) -> tuple[float, float]:
    """(photos/s, CPU ms per photo summed over threads) of `encode` alone, on one pre-made batch."""
    backbone.encode(batch)  # warm-up
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while n < photos:
        backbone.encode(batch)
        n += len(batch)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e3 / n


def decode_cpu_ms(transform, paths: list[Path]) -> float:
    """CPU ms per photo of a decode worker's job (load_image + transform), single-threaded like a worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.process_time()
    for p in paths:
        transform(load_image(p))
    torch.set_num_threads(threads)
    return (time.process_time() - start) * 1e3 / len(paths)


def pipeline_rate(backbone: Backbone, paths: list[Path], batch_size: int, workers: int | None,
                  engine=None) -> tuple[float, float]:
    """(photos/s, backbone-busy fraction) of a whole `embed_catalog` run into a fresh cache."""
    with tempfile.TemporaryDirectory() as root:
        report = embed_catalog(paths, backbone, root, batch_size=batch_size, num_workers=workers, progress=False,
                               engine=engine)
    assert report.embedded == len(paths), report.summary()
    return report.embedded / report.seconds, report.busy


def bench_row(backbone: Backbone, paths: list[Path], args: argparse.Namespace) -> dict:
    """Forward-only and pipeline runs alternating `args.repeats` times, plus the CPU cost of each side."""
    batch = torch.stack([backbone.transform(load_image(p)) for p in paths[: args.batch_size]])
    fwd, pipe, ratios = [], [], []
    for _ in range(args.repeats):
        fwd.append(forward_rate(backbone, batch, len(paths)))
        pipe.append(pipeline_rate(backbone, paths, args.batch_size, args.workers))
        ratios.append(pipe[-1][0] / fwd[-1][0])  # paired: measured back to back under the same load
    fwd_cpu = min(c for _, c in fwd)
    dec_cpu = decode_cpu_ms(backbone.transform, paths[: 4 * args.batch_size])
    return {
        "forward": max(r for r, _ in fwd),
        "pipeline": max(r for r, _ in pipe),
        "ratio": statistics.median(ratios),
        "busy": max(pipe)[1],
        "decode_ms": dec_cpu,
        "forward_ms": fwd_cpu,
        "ceiling": fwd_cpu / (fwd_cpu + dec_cpu),  # the ratio when decode and forward share saturated cores
    }


def engine_rows(name: str, runtime: str, kw: dict, backbone: Backbone, paths: list[Path],
                args: argparse.Namespace) -> list[tuple[str, float]]:
    """(engine, best photos/s over `args.repeats`) of the whole pipeline per engine of `args.engines`."""
    from setenc.photos.ray_engine import BackboneFactory, RayEngine

    rows = []
    for actors in args.engines:
        engine = RayEngine(BackboneFactory(name, runtime, kw), workers=actors) if actors else None
        rates = [pipeline_rate(backbone, paths, args.batch_size, args.workers, engine)[0] for _ in range(args.repeats)]
        rows.append((f"ray, {actors} actor{'s' * (actors > 1)}" if actors else "local (single process)", max(rates)))
    return rows


@contextlib.contextmanager
def _local_ray(actors: list[int]):
    """One local Ray for every Ray row: logical CPUs for the actors plus at least one for the decode tasks."""
    if not any(actors):
        yield
        return
    import ray

    ray.init(num_cpus=max(os.cpu_count() or 1, max(actors) + 1), include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def machine() -> str:
    """The line heading every table: CPU ISA, cores and load (figures hold for this CPU kind and load only)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"CPU {cpu_isa()}; {os.cpu_count()} cores, {torch.get_num_threads()} threads; load average {load}"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers_logging.disable_progress_bar()
    all_paths = load_catalog(args.catalog).image_paths
    print(f"{len(all_paths)} photos in {args.catalog}; {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, workers {args.workers if args.workers is not None else 'default'}, "
          f"{args.repeats} repeats\n{machine()}\n")
    rows, engines = [], []
    with tempfile.TemporaryDirectory() as tmp, _local_ray(args.engines):
        clip_dir = random_clip(Path(tmp) / "clip-b32") if any(c.startswith("clip") for c in args.configs) else None
        for label in args.configs:
            name, runtime, slow = CONFIGS[label]
            kw = {"model": clip_dir} if name == "clip" else {}
            with warnings.catch_warnings(), _onnx_cache(Path(tmp) if name == "clip" else None):
                warnings.simplefilter("ignore")
                backbone = create_backbone(name, runtime=runtime, **kw)
            paths = all_paths[: args.slow_limit if slow else args.limit]
            row = bench_row(backbone, paths, args)
            rows.append((label, backbone.dim, len(paths), row))
            print(f"  {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
            if args.engines:
                with _onnx_cache(Path(tmp) if name == "clip" else None):
                    found = engine_rows(name, runtime, kw, backbone, paths, args)
                engines += [(label, len(paths), e, r) for e, r in found]
                print("  " + ", ".join(f"{e} {r:.1f} photos/s" for e, r in found), flush=True)
            del backbone

    print(f"\n{machine()}\n")
    print("| backbone / runtime | dim | photos | forward photos/s | pipeline photos/s | pipeline / forward "
          "| backbone busy | decode CPU ms/photo | forward CPU ms/photo | CPU-bound ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, dim, n, r in rows:
        print(f"| {label} | {dim} | {n} | {r['forward']:.1f} | {r['pipeline']:.1f} | {r['ratio']:.2f} "
              f"| {r['busy']:.0%} | {r['decode_ms']:.1f} | {r['forward_ms']:.1f} | {r['ceiling']:.2f} |")
    if engines:
        local = {label: r for label, _, e, r in engines if e.startswith("local")}
        print(f"\n{machine()}\n")
        print("| backbone / runtime | engine | photos | pipeline photos/s | vs local |")
        print("|---|---|---|---|---|")
        for label, n, e, r in engines:
            vs = f"{r / local[label]:.2f}" if label in local else ""
            print(f"| {label} | {e} | {n} | {r:.1f} | {vs} |")


if __name__ == "__main__":
    main()
