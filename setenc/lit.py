"""Lightning glue — the only module that imports Lightning: the training module, the data module, `train(cfg)`.

The backbone is frozen and out of the loop: photos are embedded once into the cache, and training runs on
the cached vectors, so an epoch over thousands of articles takes seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Sampler

from .catalog import Catalog, catalog_key, load_catalog, split_catalog
from .config import TrainConfig, save_config
from .data import PairDataset, collate_pairs, pad_sets
from .embed import EmbeddingCache, article_embeddings, embed_catalog
from .errors import CheckpointError, SetencError
from .heads import create_head
from .losses import create_loss
from .metrics import retrieval_metrics
from .model import SetEncoder
from .paths import cache_dir
from .protocols import Protocol, evaluate_vectors, make_protocols


class SetModule(pl.LightningModule):
    """A set head trained with a contrastive loss on positive pairs of sets.

    Hyper-parameters are plain dicts (head config, backbone description), never modules, so the
    checkpoint loads with `weights_only=True` and `SetEncoder.from_pretrained` reads it without Lightning.
    """

    def __init__(self, head: dict, backbone: dict, dim: int, loss: str = "infonce", loss_kwargs: dict | None = None,
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30):
        super().__init__()
        self.save_hyperparameters()
        self.head = create_head(**head)
        self.loss = create_loss(loss, **(loss_kwargs or {}))
        self._val: list[torch.Tensor] = []
        self.protocol: Protocol | None = None

    def training_step(self, batch, batch_idx):
        xa, ma, xb, mb, labels = batch
        za, zb = self.head(xa, ma), self.head(xb, mb)  # (B, E) each
        if self.hparams.loss == "supcon":
            loss = self.loss(torch.cat([za, zb]), torch.cat([labels, labels]))
        else:
            loss = self.loss(za, zb, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        x, mask = batch
        self._val.append(self.head(x, mask).detach().cpu())

    def on_validation_epoch_end(self):
        if self.protocol is None or not self._val:
            return
        z = torch.cat(self._val).numpy()
        self._val.clear()
        nq = len(self.protocol.queries)
        if len(z) != nq + len(self.protocol.gallery):  # a truncated sanity / fast_dev_run pass
            return
        m = retrieval_metrics(z[:nq] @ z[nq:].T, self.protocol.q_labels, self.protocol.g_labels,
                              ignore=self.protocol.ignore)
        self.log_dict({"val/recall@1": m["recall@1"], "val/map@r": m["map@r"]}, prog_bar=True)

    def configure_optimizers(self):
        groups = [{"params": list(self.head.parameters())},
                  {"params": list(self.loss.parameters()), "weight_decay": 0.0}]  # never decay the temperature
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


class EpochShuffle(Sampler[int]):
    """A fresh order each epoch from (seed, epoch) alone, so a run resumed at epoch k sees the same batches."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class _EpochSeed(Callback):
    """Tell the pair dataset the epoch so its sampling is fresh each epoch and reproducible."""

    def __init__(self, dataset: PairDataset):
        self.dataset = dataset

    def on_train_epoch_start(self, trainer, pl_module):
        self.dataset.set_epoch(trainer.current_epoch)


class SetDataModule(pl.LightningDataModule):
    """Training pairs from the train split; validation = one retrieval protocol on the val split."""

    def __init__(self, cfg: TrainConfig, train_sets, train_cat: Catalog, val_protocol: Protocol | None):
        super().__init__()
        self.cfg = cfg
        self.pairs = PairDataset(train_sets, train_cat, cfg.positives, cfg.max_photos, cfg.photo_dropout,
                                 cfg.subset_prob, cfg.seed, cfg.cross_session)
        self.val_protocol = val_protocol

    def train_dataloader(self):
        return DataLoader(self.pairs, batch_size=min(self.cfg.batch_size, len(self.pairs)),
                          sampler=EpochShuffle(len(self.pairs), self.cfg.seed),
                          drop_last=len(self.pairs) > self.cfg.batch_size, collate_fn=collate_pairs)

    def val_dataloader(self):
        p = self.val_protocol
        sets = (p.queries + p.gallery) if p is not None else []
        chunks = [pad_sets(sets[i : i + 512]) for i in range(0, len(sets), 512)]
        return DataLoader(chunks, batch_size=None)


def load_training_data(cfg: TrainConfig):
    """Catalog -> embedded (cache) -> per-article vectors, split into train / val / test."""
    from .backbones import create_backbone
    from .cli import catalog_arg

    catalog = catalog_arg(cfg.catalog, seed=cfg.seed) if cfg.catalog is None else load_catalog(cfg.catalog)
    backbone = create_backbone(cfg.backbone, runtime=cfg.runtime, **cfg.backbone_kwargs)
    root = cfg.cache or cache_dir("embeddings")
    report = embed_catalog(catalog, backbone, root, progress=cfg.progress, wait_for_lock=600.0)  # runs side by side
    print(f"[embed] {catalog.name}: {report.summary()}")
    cache = EmbeddingCache(root, backbone.id, backbone.dim)
    parts = split_catalog(catalog, tuple(cfg.split), by=cfg.split_by, seed=cfg.split_seed)
    data = {}
    for name, part in parts.items():
        sets, kept, dropped = article_embeddings(part, cache)
        if dropped:
            print(f"[data] {name}: {len(dropped)} article(s) without any embeddable photo left out: {dropped[:5]}")
        data[name] = (sets, kept)
    spec = {"name": cfg.backbone, "kwargs": dict(cfg.backbone_kwargs), "id": backbone.id}
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


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Embed what is missing, train the head, keep the best checkpoint by `cfg.monitor`, report held-out metrics.

    Writes into `cfg.out/<run>/`: `config.yaml`, `last.ckpt` (to resume), `best.ckpt` (Lightning),
    `best.pt` (the inference checkpoint for `SetEncoder.from_pretrained`), `result.json`, `logs/metrics.csv`.
    """
    t0 = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data, spec, dim = load_training_data(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # again: a cold cache (ONNX export) draws from the RNG
    train_sets, train_cat = data["train"]
    val_p = next(iter(make_protocols(*data["val"])), None) if data["val"][0] else None
    if val_p is None and cfg.split[1] > 0:
        warnings.warn("the validation split supports no retrieval protocol: the last epoch is kept")
    elif val_p is None:  # a choice for small catalogues: every product trains, the schedule is fixed
        print(f"[train] no validation split: all {cfg.epochs} epochs run and the last one is kept")
    name = cfg.run_name or f"{train_cat.name.rsplit('-', 1)[0]}-{cfg.head}-s{cfg.seed}"
    run_dir = Path(cfg.out) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    head_cfg = create_head(cfg.head, dim, **cfg.head_kwargs).config
    module = SetModule(head_cfg, spec, dim, cfg.loss, cfg.loss_kwargs, cfg.lr, cfg.weight_decay, cfg.epochs)
    module.protocol = val_p
    has_params = any(p.requires_grad for p in module.head.parameters())
    if has_params:
        _fit(cfg, module, SetDataModule(cfg, train_sets, train_cat, val_p), run_dir, resume, val_p is not None)
    if cfg.fast_dev_run:
        return {"run_dir": str(run_dir)}

    best = module.head.eval()
    training = {"catalog": data["catalog"], "split": list(cfg.split), "split_by": cfg.split_by,
                "split_seed": cfg.split_seed}
    encoder = SetEncoder(best, spec, dim, training=training)
    enc = lambda sets: encoder.encode_sets(sets)  # noqa: E731
    result = {"run_dir": str(run_dir), "head": cfg.head, "backbone": spec["id"], "train_articles": len(train_cat),
              "seconds": round(time.perf_counter() - t0, 1)}
    for split in ("val", "test"):
        for p in make_protocols(*data[split]) if data[split][0] else []:
            m = evaluate_vectors(enc, p)
            result[f"{split}/{p.name}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
    encoder.metrics = {k: v for k, v in result.items() if "/" in k}
    encoder.save(run_dir / "best.pt")
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _fit(cfg: TrainConfig, module: SetModule, dm: SetDataModule, run_dir: Path, resume: bool, has_val: bool) -> None:
    ckpt = ModelCheckpoint(dirpath=run_dir, filename="best", monitor=cfg.monitor if has_val else None,
                           mode="max", save_last=True, enable_version_counter=False)
    callbacks: list[Callback] = [ckpt, _EpochSeed(dm.pairs)]
    if has_val:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode="max", patience=cfg.patience))
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, accelerator="cpu", devices=1, deterministic=True, callbacks=callbacks,
        logger=_loggers(cfg, run_dir) or False, enable_progress_bar=cfg.progress, enable_model_summary=False,
        fast_dev_run=cfg.fast_dev_run, log_every_n_steps=1, num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
    )
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
    if not cfg.fast_dev_run and ckpt.best_model_path:
        state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
