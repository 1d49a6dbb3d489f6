"""Data-parallel training: two gloo processes on CPU give the single-process loss, gradients and validation metrics,
and `scripts/train.py --devices 2 --strategy ddp` runs, validating every epoch."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from conftest import REPO, paired_catalog, script_env

WORLD, PER_RANK, DIM = 2, 4, 6


def _global_batch():
    """8 pairs of padded sets; labels repeat across the two shards, so cross-process same-group masking matters."""
    g = torch.Generator().manual_seed(0)
    n = WORLD * PER_RANK
    xa, xb = torch.randn(n, 3, DIM, generator=g), torch.randn(n, 2, DIM, generator=g)
    ma, mb = torch.ones(n, 3, dtype=torch.bool), torch.ones(n, 2, dtype=torch.bool)
    ma[1, 2] = ma[6, 1:] = mb[3, 1] = False
    return xa, ma, xb, mb, torch.tensor([0, 1, 2, 3, 0, 5, 1, 7])


class _Step(torch.nn.Module):
    """What Lightning's DDP wrapper does: forward = the module's training_step."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.training_step(batch, 0)


def _worker(rank: int, port: int, out: str) -> None:
    from setenc.heads.model import create_head
    from setenc.training.module import SetModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer here: logging is a no-op
    batch = _global_batch()
    shard = tuple(t[rank * PER_RANK:(rank + 1) * PER_RANK] for t in batch)
    report = {}
    for loss in ("infonce", "supcon"):
        torch.manual_seed(1)
        module = SetModule(create_head("deepsets", DIM).config, {"name": "fake"}, DIM, loss,
                           {"temperature": 0.1, "learnable": True})
        single = copy.deepcopy(module)  # one process, the whole global batch
        xa, ma, xb, mb, labels = batch
        want = single.loss(single.head(xa, ma), single.head(xb, mb), labels)
        want.backward()
        ddp = DistributedDataParallel(_Step(module))  # kept alive: its reducer averages the gradients in backward
        got = ddp(shard)  # this process's shard
        got.backward()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        grads = dict(single.named_parameters())
        for name, p in module.named_parameters():
            # the temperature's gradient (~1e-4) is a sum of O(1) terms that nearly cancel: in float32 the two
            # summation orders differ by a few 1e-7 on some CPUs, so it gets an absolute tolerance of that size
            atol = 1e-6 if name.endswith("log_scale") else 1e-7
            torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=atol, msg=f"{loss} {name}")
        report[loss] = float(got.detach())
    report["val"] = _sharded_validation(rank, module)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


def test_validation_metrics_on_one_process():
    """No process group: the chunks this process embedded are the whole protocol."""
    from setenc.heads.model import create_head
    from setenc.training.module import SetModule

    module = SetModule(create_head("proj", DIM).config, {"name": "fake"}, DIM)
    got = _sharded_validation(0, module, world=1)
    assert got["queries"] > 0


def _sharded_validation(rank: int, module, world: int = WORLD) -> dict:
    """Each process embeds its shard of the numbered validation chunks (rank 1 also a padding repeat, as a
    DistributedSampler does); the gathered metrics equal ranking every vector in one process."""
    from setenc.catalogs import Article, Catalog
    from setenc.evaluation.metrics import vector_metrics
    from setenc.evaluation.protocols import group_protocol
    from setenc.heads.sets import pad_sets

    g = torch.Generator().manual_seed(2)
    sets = [torch.randn(1 + k % 3, DIM, generator=g).numpy() for k in range(23)]
    cat = Catalog([Article(f"a{k}", ("x.jpg",) * len(s), group=f"g{k % 7}") for k, s in enumerate(sets)], root=None)
    module.protocol = p = group_protocol(sets, cat)
    ordered = p.queries + p.gallery
    chunks = [(k, *pad_sets(ordered[i:i + 9])) for k, i in enumerate(range(0, len(ordered), 9))]
    mine = chunks if world == 1 else chunks[0::2] if rank == 0 else chunks[1::2] + chunks[:1]
    with torch.no_grad():
        for batch in mine:
            module.validation_step(batch, 0)
        got = module.validation_metrics()
        z = module.head(*pad_sets(ordered)).numpy()
    nq = len(p.queries)
    want = vector_metrics(z[:nq], z[nq:], p.q_labels, p.g_labels, exclude=p.exclude)
    assert len(chunks) > 2 and got == pytest.approx(want), (got, want)
    return got


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_single_process_loss_and_gradients(tmp_path):
    out = str(tmp_path / "loss")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    losses = [json.loads(open(f"{out}.{r}").read()) for r in range(WORLD)]
    assert losses[0] == losses[1]  # every process computed the same global-batch loss and validation metrics


@pytest.mark.slow  # ~35 s on 2 shared cores: two processes each import Lightning and load the backbone
def test_train_script_ddp_validates_on_sharded_data(tmp_path):
    """`--devices 2 --strategy ddp` on CPU: validation metrics every epoch, one result written by process 0."""
    catalog = paired_catalog(tmp_path / "cat", 24, 2, seed=5)
    env = script_env(tmp_path / "cache")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--catalog", str(catalog),
                           "--out", str(tmp_path / "runs"), "--run_name", "r", "--epochs", "2", "--batch_size", "8",
                           "--split", "[0.5, 0.25, 0.25]", "--accelerator", "cpu", "--devices", "2",
                           "--strategy", "ddp", "--progress", "false"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "r"
    lines = (run / "logs" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    val = [row.split(",")[header.index("val/map@r")] for row in lines[1:]]
    assert sum(v != "" for v in val) == 2, lines  # both epochs validated
    result = json.loads((run / "result.json").read_text())
    assert "val/group" in result and "test/group" in result
    assert proc.stdout.count("[train] ") >= 1 and proc.stdout.count("checkpoint:") == 1  # process 0 reports once
