"""The Lightning module (a set head + a contrastive loss) and the data module (pairs of cached photo sets).

The backbone is frozen and out of the loop: photos are embedded once into the cache, and training runs on
the cached vectors, so an epoch over thousands of articles takes seconds on a CPU.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler

from setenc.catalogs import Catalog
from setenc.evaluation.metrics import vector_metrics
from setenc.evaluation.protocols import Protocol
from setenc.heads import create_head
from setenc.losses import create_loss
from setenc.sets import pad_sets
from setenc.training.config import TrainConfig
from setenc.training.pairs import PairDataset, collate_pairs


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
        loss = self.loss(za, zb, labels)  # one call shape for every loss
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
        p = self.protocol
        m = vector_metrics(z[:nq], z[nq:], p.q_labels, p.g_labels, exclude=p.exclude)
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
