"""The Lightning module (a set head + a contrastive loss) and the data module (pairs of cached photo sets).

The backbone is frozen and out of the loop: photos are embedded once into the cache, and training runs on
the cached vectors, so an epoch over thousands of articles takes seconds on a CPU.

Data-parallel (`strategy: ddp`): `batch_size` stays the global batch (each of N processes draws batch_size / N
pairs), the loss sees every process's rows (`global_batch`), and validation embeds a shard on each process and
gathers the vectors before ranking, so the numbers are the single-process ones.
"""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler

from setenc.catalogs import Catalog
from setenc.evaluation.metrics import vector_metrics
from setenc.evaluation.protocols import Protocol
from setenc.heads.model import create_head
from setenc.training.losses import create_loss
from setenc.heads.sets import pad_ids, pad_sets
from setenc.training.config import TrainConfig
from setenc.training.pairs import PairDataset, collate_pairs
from setenc.heads.views import sets_view_ids


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
        xa, ma, xb, mb, labels, *extra = batch  # extra: view ids, title vectors (`collate_pairs`)
        va, vb, ta, tb = extra or (None,) * 4
        za, zb, labels = global_batch(self.head(xa, ma, va, ta), self.head(xb, mb, vb, tb), labels)  # (B, E) each
        loss = self.loss(za, zb, labels)  # one call shape for every loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        chunk, x, mask, *extra = batch  # extra: view ids, title vectors (`SetDataModule.val_dataloader`)
        views, titles = extra or (None, None)
        self._val.append((int(chunk), self.head(x, mask, views, titles).detach().cpu()))

    def on_validation_epoch_end(self):
        m = self.validation_metrics()
        if m is not None:  # the same numbers on every process: no sync needed
            self.log_dict({"val/recall@1": m["recall@1"], "val/map@r": m["map@r"]}, prog_bar=True)

    def validation_metrics(self) -> dict | None:
        """Metrics of the validation protocol on the vectors every process embedded; None after a truncated pass.

        A collective under data-parallel training: every process calls it, gathers the numbered chunks, and ranks.
        """
        parts, self._val = _all_processes(self._val), []  # a new list: on one process `parts` is `self._val`
        if self.protocol is None or not parts:
            return None
        z = torch.cat([v for _, v in sorted(dict(parts).items())]).numpy()  # chunk order; padding repeats dropped
        p = self.protocol
        nq = len(p.queries)
        if len(z) != nq + len(p.gallery):  # a truncated sanity / fast_dev_run pass
            return None
        return vector_metrics(z[:nq], z[nq:], p.q_labels, p.g_labels, exclude=p.exclude)

    def configure_optimizers(self):
        groups = [{"params": list(self.head.parameters())},
                  {"params": list(self.loss.parameters()), "weight_decay": 0.0}]  # never decay the temperature
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


def global_batch(za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor):
    """Every process's rows, process by process, so the loss contrasts against the global batch's negatives.

    The loss is then the same number on every process. The gather carries gradient and its backward sums every
    process's gradient for the local rows (N × ∂L/∂z_local); DDP averages parameter gradients over the N
    processes, so the gradient is exactly the single-process gradient of the global batch: no loss scaling.
    One process (or no process group): the batch unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return za, zb, labels
    with warnings.catch_warnings():  # deprecated in torch 2.9 for a private API; Lightning's all_gather uses it too
        warnings.simplefilter("ignore", FutureWarning)
        za, zb = (torch.cat(dist_nn.all_gather(z.contiguous())) for z in (za, zb))  # NCCL needs contiguous
    gathered = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, labels)  # labels need no gradient
    return za, zb, torch.cat(gathered)


def _all_processes(parts: list) -> list:
    """This process's list joined with every other process's (validation shards); unchanged on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return parts
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, parts)
    return [item for part in every for item in part]


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

    def __init__(self, cfg: TrainConfig, train_sets, train_cat: Catalog, val_protocol: Protocol | None,
                 views: list[str] | None = None, per_photo: int = 1, titles=None):
        """`views`: the view-aware head's tag vocabulary (None: tag-free); `per_photo`: set rows per photo (TTA);
        `titles`: a learned fusion's title vectors, `ids -> (n, T)` (None: photos only)."""
        super().__init__()
        self.cfg, self.vocab, self.per_photo, self.titles = cfg, views, per_photo, titles
        ids = None if views is None else sets_view_ids(train_sets, [a.views for a in train_cat.articles], views,
                                                        per_photo)
        self.pairs = PairDataset(train_sets, train_cat, cfg.positives, cfg.max_photos, cfg.photo_dropout,
                                 cfg.subset_prob, cfg.seed, cfg.cross_session, ids,
                                 None if titles is None else titles(train_cat.ids), cfg.modality_dropout)
        self.val_protocol = val_protocol

    def train_dataloader(self):
        processes = self.trainer.world_size if self.trainer is not None else 1  # batch_size is the global batch
        return DataLoader(self.pairs, batch_size=max(1, min(self.cfg.batch_size, len(self.pairs)) // processes),
                          sampler=EpochShuffle(len(self.pairs), self.cfg.seed),
                          drop_last=len(self.pairs) > self.cfg.batch_size, collate_fn=collate_pairs)

    def val_dataloader(self):
        p = self.val_protocol
        sets = (p.queries + p.gallery) if p is not None else []
        ids = None
        if self.vocab is not None and p is not None:
            tags = [*(p.q_views or [None] * len(p.queries)), *(p.g_views or [None] * len(p.gallery))]
            ids = sets_view_ids(sets, tags, self.vocab, self.per_photo)
        t = None if self.titles is None or p is None else torch.as_tensor(self.titles(p.q_ids + p.g_ids))
        chunks = [(k, *pad_sets(sets[i : i + 512]), None if ids is None else pad_ids(ids[i : i + 512]),
                   None if t is None else t[i : i + 512]) for k, i in enumerate(range(0, len(sets), 512))]
        return DataLoader(chunks, batch_size=None)  # numbered: processes each embed a shard, then gather in order
