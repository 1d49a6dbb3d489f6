"""A training run end to end: catalog -> photo vectors -> split -> Lightning fit -> self-describing checkpoint.

Writes into `cfg.out/<run>/`: `config.yaml`, `last.ckpt` (to resume), `best.ckpt` (Lightning), `best.pt` (the
inference checkpoint for `SetEncoder.from_pretrained`), `result.json` (held-out metrics), `logs/metrics.csv`.
The run is written into `<run>.unfinished/` and renamed to `<run>/` when it ends, so a `best.pt` is always a finished
run's, and a run stopped part-way never leaves its `last.ckpt` beside an older run's `best.pt`. The same command again
reuses the finished run, or resumes the unfinished one from its `last.ckpt`; never does it train over either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from setenc.catalogs import Catalog, catalog_key, split_catalog
from setenc.plumbing.cli import catalog_arg
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.evaluation.heldout import SEEN, seen_record
from setenc.evaluation.protocols import evaluate_vectors, make_protocols
from setenc.matching.calibration import fit_heldout
from setenc.heads.model import create_head
from setenc.plumbing.paths import cache_dir
from setenc.photos import create_backbone, photo_sets
from setenc.photos.cache import EmbeddingCache
from setenc.photos.tta import TTA, with_tta
from setenc.search.expansion import articles_per_group
from setenc.training import recipe
from setenc.training.config import TrainConfig, save_config
from setenc.training.folders import check_run_dir, finish_run, work_dir
from setenc.training.module import SetDataModule, SetModule, _EpochSeed
from setenc.heads.views import view_vocabulary


def config_backbone(cfg: TrainConfig):
    """The backbone a (recipe-chosen) config names, with its runtime and options."""
    return create_backbone(cfg.backbone, runtime=cfg.runtime, **cfg.backbone_kwargs)


def load_training_data(cfg: TrainConfig, catalog: Catalog | None = None, backbone=None):
    """Catalog -> per-article photo vectors (embedding what the cache lacks), split into train / val / test.

    The demo catalog is always the same one (its own fixed seed), whatever the training seed: matchers and heads
    of every seed see the same articles.
    """
    catalog = catalog or catalog_arg(cfg.catalog)
    cfg, _ = recipe.choose(cfg, catalog)  # a no-op when `prepare` already chose
    backbone = backbone or config_backbone(cfg)
    root = cfg.cache or cache_dir("embeddings")
    sets, kept, dropped, report = photo_sets(catalog, backbone, root, progress=cfg.progress,
                                             wait_for_lock=600.0, tta=cfg.tta)  # runs side by side share the cache
    print(f"[embed] {catalog.name}: {report.summary()}")
    for line in report.skipped_lines():
        print(f"[embed] {line}")
    if dropped:
        print(f"[data] {len(dropped)} article(s) without any embeddable photo left out: {dropped[:5]}")
    by_id = dict(zip(kept.ids, sets))
    parts = split_catalog(kept, tuple(cfg.split), by=cfg.split_by, seed=cfg.split_seed)
    data = {name: ([by_id[i] for i in part.ids], part) for name, part in parts.items()}
    data[SEEN] = seen_record(parts["train"], parts["val"], EmbeddingCache(root, backbone.id, backbone.dim).hashes)
    spec = with_tta({"name": cfg.backbone, "kwargs": dict(cfg.backbone_kwargs), "id": backbone.id}, cfg.tta)
    data["catalog"] = catalog_key(catalog)
    return data, spec, backbone.dim


def _loggers(cfg: TrainConfig, run_dir: Path):
    loggers = []
    if cfg.logger in ("csv", "both"):
        loggers.append(CSVLogger(str(run_dir), name="logs", version=""))
    if cfg.logger in ("wandb", "both"):
        from pytorch_lightning.loggers import WandbLogger

        mode = None if os.environ.get("WANDB_API_KEY") else "offline"
        loggers.append(WandbLogger(project="setenc", save_dir=str(run_dir), offline=mode == "offline",
                                   config=dataclasses.asdict(cfg)))
    return loggers


def prepare(cfg: TrainConfig) -> tuple[TrainConfig, Catalog, list[str]]:
    """The catalog, and the config with every field left to the recipe chosen from it (and why)."""
    catalog = catalog_arg(cfg.catalog)
    cfg, why = recipe.choose(cfg, catalog)
    return cfg, catalog, why


def train(cfg: TrainConfig, resume: bool = False, trainer_options: dict | None = None) -> dict:
    """Embed what is missing, train the head, keep the best checkpoint by `cfg.monitor`, report held-out metrics.

    With `cfg.final`, the held-out run comes first; then the same recipe trains on every article (the epoch count the
    held-out run kept) into `<run>-final/`, whose checkpoint records the held-out metrics it was judged by.
    `trainer_options` are extra `pl.Trainer` arguments that a config cannot spell (a strategy or cluster-environment
    object, e.g. Ray Train's); their `callbacks` are added to the run's. Under data-parallel training every process
    runs this function; only process 0 evaluates and writes, the others return `{"run_dir", "rank"}`.
    """
    backbone = None if cfg.backbone is None else config_backbone(cfg)  # a missing model: before the catalogue is built
    cfg, catalog, why = prepare(cfg)  # the recipe chooses the backbone when the config leaves it open
    backbone = backbone or config_backbone(cfg)
    for line in why:
        print(f"[recipe] {line}")
    check_fusion_titles(cfg, catalog)  # before any embedding, training or run folder
    name = cfg.run_name or default_run_name(cfg, catalog)
    if not cfg.final:
        return _train(dataclasses.replace(cfg, run_name=name), catalog, backbone, resume, trainer_options)
    evaluated = _train(dataclasses.replace(cfg, final=False, run_name=name), catalog, backbone, resume, trainer_options)
    if evaluated.get("rank"):
        return evaluated
    heldout = {k: v for k, v in evaluated.items() if k.startswith("test/")}
    final = dataclasses.replace(cfg, final=False, run_name=f"{name}-final", split=[1.0, 0.0, 0.0],
                                epochs=evaluated["epochs_kept"])
    print(f"[final] every article of {catalog.name} trains for {final.epochs} epochs (the held-out run's); "
          f"its checkpoint records the held-out metrics of {evaluated['run_dir']}")
    result = _train(final, catalog, backbone, False, trainer_options, {"run_dir": evaluated["run_dir"], **heldout})
    return result


def _train(cfg: TrainConfig, catalog: Catalog, backbone, resume: bool, trainer_options: dict | None = None,
           heldout: dict | None = None) -> dict:
    t0 = time.perf_counter()
    final_dir = Path(cfg.out) / cfg.run_name
    finished = check_run_dir(final_dir, cfg, resume)  # before any long work
    if finished is not None:
        print(f"[train] {final_dir} holds a finished run with these settings: reusing it, not training again "
              "(delete that folder, or pass --run_name NAME, to train anew)")
        return finished
    run_dir, resume = work_dir(final_dir, cfg, resume)  # written there; renamed to final_dir when it ends
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data, spec, dim = load_training_data(cfg, catalog, backbone)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # again: a cold cache (ONNX export) draws from the RNG
    train_sets, train_cat = data["train"]
    val_p = next(iter(make_protocols(*data["val"])), None) if data["val"][0] else None
    test_ps = make_protocols(*data["test"]) if data["test"][0] else []
    if val_p is None and cfg.split[1] > 0:
        print(f"[train] the validation split ({len(data['val'][1])} articles) supports no retrieval protocol: "
              "the last epoch is kept", file=sys.stderr)
    elif val_p is None:  # a choice for small catalogues: every product trains, the schedule is fixed
        print(f"[train] no validation split: all {cfg.epochs} epochs run and the last one is kept")
    if not test_ps and heldout is None:
        print(f"[train] WARNING: the test split ({len(data['test'][1])} articles) supports no retrieval protocol, so "
              "nothing held out measures this head; a catalogue needs more groups (or a larger test fraction) "
              "for held-out metrics", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    vocab = training_views(cfg, train_cat)
    text, titles = training_titles(cfg, catalog)
    head_cfg = create_head(cfg.head, dim, views=vocab, titles=text and text.dim, **cfg.head_kwargs).config
    module = SetModule(head_cfg, spec, dim, cfg.loss, cfg.loss_kwargs, cfg.lr, cfg.weight_decay, cfg.epochs)
    module.protocol = val_p
    has_params = any(p.requires_grad for p in module.head.parameters())
    kept, rank = cfg.epochs, 0
    if has_params:
        dm = SetDataModule(cfg, train_sets, train_cat, val_p, vocab, TTA.parse(cfg.tta).per_photo, titles)
        kept, rank = _fit(cfg, module, dm, run_dir, resume, val_p is not None, trainer_options)
    if rank:  # another data-parallel process: process 0 evaluates and writes
        return {"run_dir": str(final_dir), "rank": rank}
    if cfg.fast_dev_run:
        return {"run_dir": str(final_dir)}

    best = module.head.eval()
    training = {"catalog": data["catalog"], "split": list(cfg.split), "split_by": cfg.split_by,
                "split_seed": cfg.split_seed, "epochs": kept, SEEN: data[SEEN],
                "articles_per_group": articles_per_group(catalog)}  # the export's expansion rule reads it
    encoder = SetEncoder(best, spec, dim, training=training, text=text)
    enc = lambda sets, views, ids: encoder.encode_sets(  # noqa: E731
        sets, views=views, titles=None if titles is None else titles(ids))
    if cfg.classes:
        add_class_block(best, train_sets, train_cat)
    result = {"run_dir": str(final_dir), "head": cfg.head, "backbone": spec["id"], "train_articles": len(train_cat),
              "epochs_kept": kept, "seconds": round(time.perf_counter() - t0, 1)}
    rounded = lambda m: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}  # noqa: E731
    for split in ("val", "test"):
        for p in (test_ps if split == "test" else make_protocols(*data[split]) if data[split][0] else []):
            result[f"{split}/{p.name}"] = rounded(evaluate_vectors(enc, p))
            if titles is not None and p.name == "group":  # what a query with one side only finds
                for side, m in one_sided_queries(encoder, p, titles).items():
                    result[f"{split}/{p.name}:{side}"] = rounded(m)
    encoder.metrics = {k: v for k, v in result.items() if "/" in k}
    if heldout is not None:
        encoder.metrics["heldout"] = heldout
        result["heldout"] = heldout
    encoder.calibration = fit_heldout(lambda sets, cat: enc(sets, [a.views for a in cat.articles], cat.ids), data,
                                      cfg.split_by == "group", f"{data['catalog']} (split seed {cfg.split_seed})")
    if encoder.calibration is None and heldout is not None:  # --final holds nothing out: the held-out run's map
        encoder.calibration = SetEncoder.from_pretrained(Path(heldout["run_dir"]) / "best.pt").calibration
    if encoder.calibration is not None:
        result["calibration"] = encoder.calibration.summary()
    encoder.save(run_dir / "best.pt")
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    finish_run(run_dir, final_dir)
    return result


def add_class_block(head, sets, catalog: Catalog) -> None:
    """Fit a class block (`setenc.heads.classes`) on the grouped training articles' mean photo vectors, and attach it."""
    from setenc.heads.classes import ClassBlock, photo_means
    from setenc.heads.sets import pad_sets

    rows = [i for i, a in enumerate(catalog.articles) if a.group is not None]
    labels = [catalog.articles[i].group for i in rows]
    classes = sorted(set(labels))
    if len(classes) < 2:
        print(f"[train] class block skipped: the training articles name {len(classes)} class(es), a probe needs 2")
        return
    head.add(ClassBlock(classes, head.in_dim).fit(photo_means(*pad_sets([sets[i] for i in rows])), labels))
    print(f"[train] class block: a probe over {len(classes)} classes, fitted on {len(rows)} training articles, "
          f"appends their probabilities to each vector ({head.out_dim}-d)")


def check_fusion_titles(cfg: TrainConfig, catalog: Catalog) -> None:
    """A learned fusion on a catalogue without titles: one line before any embedding, training or run folder."""
    if cfg.fusion is None:
        return
    from setenc.evaluation.titles import check_titles

    try:
        check_titles(catalog)
    except SetencError:
        raise SetencError(f"{catalog.name}: no article has a `title`, so a learned fusion has nothing to learn from; "
                          "train without --text / --fusion, or add a \"title\" to the manifest's lines") from None


def default_run_name(cfg: TrainConfig, catalog: Catalog) -> str:
    """`<catalog>-<head>[-<text>-<fusion>]-s<seed>`: a learned fusion never lands in the photos-only run's folder."""
    fusion = f"-{cfg.text}-{cfg.fusion}" if cfg.fusion else ""
    return f"{catalog.name}-{cfg.head}{fusion}-s{cfg.seed}"


def training_views(cfg: TrainConfig, train_cat: Catalog) -> list[str] | None:
    """The view vocabulary of a view-aware head (`cfg.views`): the training articles' tags; None when off."""
    if not cfg.views:
        return None
    vocab = view_vocabulary(a.views for a in train_cat.articles)
    if not vocab:
        raise SetencError(f"{train_cat.name}: --views needs photo `views` tags, and no training article has any; "
                          "train without --views, or tag the photos in the manifest")
    print(f"[train] view-aware head: {len(vocab)} view tags of the training articles (+ unknown)")
    return vocab


def training_titles(cfg: TrainConfig, catalog: Catalog):
    """A learned fusion's title encoder and `ids -> (n, T)` title vectors (cached); (None, None) without one.

    The encoder is fitted label-free on every title of the catalogue, as `scripts/evaluate.py --text` does for late
    fusion, so the two are compared on the same title vectors.
    """
    if cfg.fusion is None:
        return None, None
    from setenc.evaluation.titles import check_titles
    from setenc.titles.encoders import create_text_encoder
    from setenc.titles.vectors import title_vectors

    n = check_titles(catalog)
    text = create_text_encoder(cfg.text, **cfg.text_kwargs).fit([a.title for a in catalog.articles])
    vecs = title_vectors([a.title for a in catalog.articles], text, cfg.cache or cache_dir("embeddings"))
    row = {a.id: i for i, a in enumerate(catalog.articles)}
    print(f"[train] learned fusion: {text.id} title vectors ({text.dim}-d) of {n} titled articles join their sets")
    return text, lambda ids: vecs[[row[i] for i in ids]]


def one_sided_queries(encoder: SetEncoder, p, titles) -> dict[str, dict]:
    """Metrics of photos-only and title-only queries (each query with a title) against the gallery with both."""
    from setenc.evaluation.metrics import vector_metrics

    g = encoder.encode_sets(p.gallery, views=p.g_views, titles=titles(p.g_ids))
    tq = titles(p.q_ids)
    keep = np.flatnonzero(np.abs(tq).sum(1) > 0)
    queries = {"photos": (encoder.encode_sets(p.queries, views=p.q_views, titles=np.zeros_like(tq)),
                          np.arange(len(tq))),
               "title": (encoder.encode_sets([p.queries[i][:0] for i in keep], titles=tq[keep]), keep)}
    out = {}
    for side, (q, rows) in queries.items():
        if len(rows):
            out[side] = vector_metrics(q, g, [p.q_labels[i] for i in rows], p.g_labels,
                                       exclude=None if p.exclude is None else p.exclude[rows])
    return out


def summary_lines(result: dict) -> list[str]:
    """What a user wants from a finished run: where it is, and its held-out numbers (every metric: result.json)."""
    if result.get("rank"):  # another data-parallel process: process 0 reports
        return []
    if "head" not in result:  # a fast_dev_run smoke test: nothing measured
        return [f"[train] {result['run_dir']}: fast_dev_run finished (one batch; no checkpoint, no metrics)"]
    lines = [f"[train] {result['run_dir']}: {result['head']} head on {result['train_articles']} training articles, "
             f"{result['seconds']} s"]
    for key, m in result.items():
        if "/" in key and isinstance(m, dict):
            lines.append(f"  {key:<14} R@1 {m['recall@1']:.3f}  MAP@R {m['map@r']:.3f}  ({n_queries(m['queries'])})")
    for key, m in result.get("heldout", {}).items():
        if isinstance(m, dict):
            lines.append(f"  held-out {key:<14} R@1 {m['recall@1']:.3f}  MAP@R {m['map@r']:.3f}  "
                         f"({n_queries(m['queries'])}, measured on {result['heldout']['run_dir']})")
    if not any(k.startswith("test/") for k in {**result, **result.get("heldout", {})}):
        lines.append("  no held-out test metrics (nothing was held out, or too little to search)")
    lines.append(f"  checkpoint: {Path(result['run_dir']) / 'best.pt'}; every metric: result.json")
    return lines


def n_queries(n: int) -> str:
    """`1 query`, `12 queries`."""
    return f"{n} quer{'y' if n == 1 else 'ies'}"


CHECKPOINTS = 50  # at most this many last.ckpt writes a run (resume restarts from the newest)


def _fit(cfg: TrainConfig, module: SetModule, dm: SetDataModule, run_dir: Path, resume: bool, has_val: bool,
         trainer_options: dict | None = None) -> tuple[int, int]:
    """Fit; load the kept epoch's weights; return (epochs that checkpoint had trained, this process's global rank)."""
    every = max(1, cfg.epochs // CHECKPOINTS)  # a tiny catalogue runs 1,000 one-step epochs: not 1,000 file writes
    ckpt = ModelCheckpoint(dirpath=run_dir, filename="best", monitor=cfg.monitor if has_val else None,
                           mode="max", save_last=True, enable_version_counter=False, every_n_epochs=every)
    callbacks: list[Callback] = [ckpt, _EpochSeed(dm.pairs)]
    if has_val:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode="max", patience=cfg.patience))
    _quiet_lightning()
    options = dict(trainer_options or {})
    callbacks += list(options.pop("callbacks", []))
    trainer = pl.Trainer(**{
        "max_epochs": cfg.epochs, "accelerator": cfg.accelerator, "devices": cfg.devices, "strategy": cfg.strategy,
        "num_nodes": cfg.num_nodes, "deterministic": True, "callbacks": callbacks,
        "logger": _loggers(cfg, run_dir) or False, "enable_progress_bar": cfg.progress, "enable_model_summary": False,
        "fast_dev_run": cfg.fast_dev_run, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
        "limit_val_batches": 1.0 if has_val else 0, **options})
    last = run_dir / "last.ckpt"
    if resume and not last.is_file():
        raise SetencError(f"--resume: no {last} to resume from; start without --resume")
    if resume:
        try:
            torch.load(last, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 — truncated or foreign file: say so instead of a Lightning traceback
            raise CheckpointError(f"--resume: {last} is damaged or not a setenc checkpoint ({type(e).__name__}); "
                                  "delete it to start over, or resume from a copy") from None
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
    if trainer.global_rank or cfg.fast_dev_run or not has_val or not ckpt.best_model_path:
        return trainer.current_epoch, trainer.global_rank  # no validation: the module holds the last epoch (kept)
    blob = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(blob["state_dict"])
    return int(blob["epoch"]) + 1, 0


def _quiet_lightning() -> None:
    """Keep a run's output to what it says about the run: no hardware banners, tips or known-harmless warnings."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*exists and is not empty.*", ".*LeafSpec.*", ".*does not have many workers.*",
                    ".*limit_val_batches.*", ".*is a private attribute.*",
                    ".*sync_dist=True.*"):  # validation metrics: every process computes the same numbers
        warnings.filterwarnings("ignore", message=message)
