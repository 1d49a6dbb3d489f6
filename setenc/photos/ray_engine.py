"""Embedding a catalogue's missing photos on a Ray cluster: `scripts/embed.py --engine ray` (the `[scale]` extra).

It plugs into `embed_catalog(..., engine=RayEngine(...))`, so planning is the single-process engine's own: hash every
photo, drop duplicates and what the cache already holds (a rerun sends only what is missing), take the writer lock.
Only then does Ray take over, as one streaming Ray Data pipeline:

    (index, path) rows -> decode tasks (CPU, `decode_photo`) -> embedding actor pool (one backbone per actor,
    a GPU each when the cluster has GPUs; `encode_batch`) -> the driver, which writes each batch (`write_vectors`)

The driver stays the cache's ONE writer: workers never touch the cache, so a vector is either committed whole or
not at all, and a killed run loses at most the batches in flight (the next run resumes). Ray Data streams with
backpressure, so memory is bounded by blocks in flight, not by the catalogue. A decode task whose worker died is
retried and a dead embedding actor is restarted with its batch re-run (Ray Data's defaults for `max_retries`,
`max_restarts`, `max_task_retries`: retry on system failures; a Python exception in the backbone stops the run,
everything written so far stays).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from setenc.plumbing.errors import SetencError
from setenc.photos.backbones import Backbone, create_backbone
from setenc.photos.cache import EmbeddingCache
from setenc.photos.embed import EmbedReport, decode_photo, encode_batch, write_vectors

BLOCK_BATCHES = 2  # input rows per Ray block, in batches: small blocks of decoded pixels keep memory bounded
_USER_ERROR = re.compile(r"setenc\.plumbing\.errors\.\w+: (.+)")  # a SetencError raised on a worker, inside Ray's error


def _ray():
    """Ray, or a one-line error saying how to install it (it is an optional extra, imported on use)."""
    try:
        import ray
        import ray.data  # noqa: F401 -- the Data library, not only Ray Core
    except ImportError:
        raise SetencError('the ray engine needs Ray Data: pip install "setenc[scale]" (or "ray[data]")') from None
    return ray


@dataclass
class BackboneFactory:
    """How each actor builds its own backbone: a picklable recipe, since a loaded model (an ONNX Runtime session)
    cannot travel to another process. `create_backbone(name, runtime, device, **kwargs)`."""

    name: str
    runtime: str = "auto"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, device: str = "cpu") -> Backbone:
        return create_backbone(self.name, runtime=self.runtime, device=device, **self.kwargs)


def _decode(batch: dict[str, np.ndarray], transform) -> dict[str, np.ndarray]:
    """Ray Data task: paths -> pixels; a photo that cannot be decoded gets zeros and its reason in `err`."""
    size = transform.size
    x = np.zeros((len(batch["path"]), 3, size, size), np.float32)
    errs = []
    for k, path in enumerate(batch["path"]):
        t, err = decode_photo(Path(path), transform)
        if t is not None:
            x[k] = t.numpy()
        errs.append(err or "")
    return {"i": batch["i"], "x": x, "err": np.array(errs, dtype=object)}


class _Embedder:
    """Ray Data actor: one backbone for its lifetime, pixels -> vectors (zeros for rows that did not decode)."""

    def __init__(self, factory: BackboneFactory, backbone_id: str, device: str):
        self.backbone = factory(device)
        if self.backbone.id != backbone_id:  # a node with other weights must not write into this cache
            raise SetencError(f"worker built backbone {self.backbone.id}, the cache holds {backbone_id}; "
                              "install the same setenc and weights on every node")
        self.device = device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["err"] == ""
        vec = np.zeros((len(ok), self.backbone.dim), np.float32)
        t = time.perf_counter()
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["x"][ok])).to(self.device)
            vec[ok] = encode_batch(self.backbone, x)
        seconds = np.full(len(ok), (time.perf_counter() - t) / len(ok))  # forward time, spread over the rows
        return {"i": batch["i"], "vec": vec, "err": batch["err"], "seconds": seconds}


class RayEngine:
    """The Ray Data engine for `embed_catalog`: decode tasks, an actor pool of backbones, the driver writes.

    Args:
        factory: builds the backbone inside each actor; it must give the driver's backbone (same `id`).
        workers: embedding actors; default one per GPU, or half the CPUs on a cluster without GPUs.
        address: a running cluster (`ray://host:10001`, `auto`); None = start a local Ray with `num_cpus`
            (or join the Ray this process already started).
        num_cpus: CPUs of the local Ray (default: all of this machine's).
        gpus: put each actor on a GPU; None = when the cluster has GPUs.
        threads: CPU threads of one CPU actor (its Ray CPU reservation).
        actor_memory_gb: memory each actor reserves for its backbone, so Ray places no more actors on a node than
            fit; having other resources than the decode tasks also keeps Ray Data from fusing decoding into the
            actors (decoding stays in CPU tasks beside them).

    Each call starts Ray if this process has not, and shuts down what it started; inside `with engine:` a Ray it
    started stays up until the block ends (a TTA embeds one pass per variant: one start, not one per pass).
    """

    def __init__(self, factory: BackboneFactory, workers: int | None = None, address: str | None = None,
                 num_cpus: int | None = None, gpus: bool | None = None, threads: int = 1,
                 actor_memory_gb: float = 1.0):
        if workers is not None and workers < 1:
            raise SetencError(f"--ray-workers must be at least 1, got {workers}")
        if address and num_cpus:
            raise SetencError("--ray-cpus sizes a local Ray; a cluster at --ray-address has the CPUs its nodes have")
        self.factory, self.workers, self.address = factory, workers, address
        self.num_cpus, self.gpus, self.threads = num_cpus, gpus, threads
        self.actor_memory = int(actor_memory_gb * 2**30)
        self._keep = self._started = False

    def __enter__(self) -> "RayEngine":
        self._keep = True
        return self

    def __exit__(self, *exc) -> None:
        self._keep = False
        if self._started:
            self._started = False
            _ray().shutdown()

    def _start(self, ray) -> bool:
        """Connect to (or start) Ray; True when this call started it, so it is also the one to shut it down."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        return True

    def _pool(self, ray, cpu_only: bool = False) -> tuple[int, dict[str, Any], str]:
        """(actors, their resources, their device) from what the cluster has; CPU actors for a CPU-only (int8)
        backbone, whatever GPUs the cluster has."""
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
        use_gpu = gpus > 0 and not cpu_only if self.gpus is None else self.gpus
        if use_gpu and cpu_only:
            raise SetencError("GPU actors were asked for (gpus=True) but an int8 backbone runs on CPUs only; "
                              "use its float backbone (without -int8) on GPUs")
        if use_gpu:
            if gpus == 0:
                raise SetencError("GPU actors were asked for (gpus=True) but the Ray cluster has no GPU")
            return min(self.workers or gpus, gpus), {"num_gpus": 1, "num_cpus": 1, "memory": self.actor_memory}, "cuda"
        workers = self.workers or max(1, cpus // (2 * self.threads))
        if workers * self.threads >= cpus:
            raise SetencError(f"{workers} embedding actors x {self.threads} threads leave none of the cluster's "
                              f"{cpus} CPUs for decoding; use fewer --ray-workers")
        return workers, {"num_cpus": self.threads, "memory": self.actor_memory}, "cpu"

    def __call__(self, todo: Sequence[tuple[str, Path]], backbone: Backbone, cache: EmbeddingCache,
                 batch_size: int, progress: bool, report: EmbedReport) -> None:
        """Embed the photos `todo` = [(hash, path)] into `cache` (the caller holds the writer lock)."""
        ray = _ray()
        self._started |= self._start(ray)
        try:
            self._embed(ray, todo, backbone, cache, batch_size, progress, report)
        except Exception as e:  # noqa: BLE001 -- Ray wraps a worker's error in its own types
            found = _USER_ERROR.search(str(e))
            if found:  # a user problem on a worker (other weights on a node, ...) stays a one-line error
                raise SetencError(found.group(1)) from None
            raise
        finally:
            if self._started and not self._keep:
                self._started = False
                ray.shutdown()

    def _embed(self, ray, todo, backbone, cache, batch_size, progress, report) -> None:
        workers, resources, device = self._pool(ray, backbone.cpu_only)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver's own bar counts photos written, not Ray's blocks
        rows = [{"i": k, "path": str(p)} for k, (_, p) in enumerate(todo)]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // (BLOCK_BATCHES * batch_size))))
        ds = ds.map_batches(_decode, batch_size=batch_size, fn_kwargs={"transform": backbone.transform},
                            num_cpus=1, batch_format="numpy")
        ds = ds.map_batches(_Embedder, batch_size=batch_size, batch_format="numpy",
                            fn_constructor_args=(self.factory, backbone.id, device),
                            compute=ray.data.ActorPoolStrategy(size=workers), **resources)
        writer = cache.writer()
        bar = tqdm(total=len(todo), desc=f"embedding ({backbone.name}, ray x{workers})", unit="photo",
                   disable=not progress)
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                idx, errs = out["i"], out["err"]
                bad = errs != ""
                for i, err in zip(idx[bad], errs[bad]):
                    report.skipped.append((str(todo[i][1]), str(err)))
                write_vectors(writer, [todo[i] for i in idx[~bad]], out["vec"][~bad], report)
                report.forward_seconds += float(out["seconds"].sum())
                bar.update(len(idx))
        finally:
            writer.close()
            bar.close()
