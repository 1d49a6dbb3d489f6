"""Typed training configuration: a dataclass whose YAML form lives in `configs/`; unknown keys are errors.

Every field can be overridden on the command line as `--field VALUE`, and dict fields key by key as
`--head_kwargs.out_dim 256` (values are parsed as YAML, so `0.1`, `true`, `[1, 2]` get their types).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from setenc.plumbing.errors import SetencError


def _f(default, help: str):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved next to its checkpoints."""

    catalog: str | None = _f(None, "manifest (JSONL or folder); null or demo = the generated demo catalog")
    backbone: str | None = _f(None, "frozen photo encoder (setenc.list_backbones()); null = the recipe's choice "
                              "(efficientnet-lite0+lite2 where groups are classes, else efficientnet-lite0)")
    backbone_kwargs: dict = _f({}, "backbone options, e.g. {model: openai/clip-vit-base-patch32}")
    runtime: str = _f("auto", "backbone runtime: auto | torch | onnx")
    cache: str | None = _f(None, "embedding-cache root; null = $SETENC_CACHE/embeddings")
    tta: str | None = _f(None, "photo variants: none | flip | crop | crop@0.75 | flip+crop, :mean (averaged per photo, "
                         "default) or :elements (extra set elements); recorded in the checkpoint, applied to its "
                         "queries (docs/tta.md); null = the recipe's choice (crop@0.75)")
    head: str = _f("proj", "set head (setenc.list_heads())")
    head_kwargs: dict = _f({}, "head options, e.g. {out_dim: 512}")
    views: bool = _f(False, "view-aware head: a learned vector per photo `views` tag of the training articles (plus "
                     "one for unknown / untagged), zero at init, added to each photo before pooling (setenc/heads/views.py)")
    classes: bool | None = _f(None, "class block: after training, fit a softmax probe over the training articles' mean "
                              "photo vectors and append its class probabilities to every vector (setenc/heads/classes.py); "
                              "null = the recipe's choice (on when groups are classes, off for a learned fusion)")
    text: str | None = _f(None, "title encoder for a learned fusion (tfidf | minilm | clip-text): each article's "
                          "title vector joins its set as one more element (docs/titles.md); null = photos only")
    text_kwargs: dict = _f({}, "title encoder options, e.g. {model: path/to/minilm}")
    fusion: str | None = _f(None, "learned: train the head on photos + title (needs text); null = photos only (late "
                            "fusion is tuned at evaluation: scripts/evaluate.py --text)")
    modality_dropout: float = _f(0.2, "learned fusion: chance a training set loses its title, and (separately) that "
                                 "it keeps only its title, so photos-only and title-only queries work")
    loss: str | None = _f(None, "contrastive loss, a name from setenc.training.losses.LOSSES (infonce, supcon, ms); "
                                "null = the recipe's (ms where whole products are held out, infonce where groups are "
                                "classes); another loss than the config's starts from its own options")
    loss_kwargs: dict = _f({}, "loss options, e.g. {temperature: 0.05, learnable: false}; empty = the loss's own "
                               "(the recipe's infonce: temperature 0.05)")
    positives: str = _f("auto", "positive pairs: auto | subsets | group | pairs | unlabelled (subsets only, groups "
                                "and pairs.csv ignored: what a catalogue without labels trains on)")
    subset_prob: float = _f(0.5, "auto mode: chance of a two-subsets pair when group partners exist")
    cross_session: bool = _f(True, "group positives from another capture session (session / partition field) when any")
    max_photos: int = _f(8, "at most this many photos per sampled set")
    photo_dropout: float = _f(0.3, "set augmentation: chance each photo is dropped (one always stays)")
    split: list | None = _f(None, "train / val / test fractions, by hashed group; null = chosen from the catalogue")
    split_by: str = _f("auto", "split unit: group (no product leaks) | article | auto (chosen from the catalogue)")
    split_seed: int = _f(0, "seed of the id-hash split (a different seed = a different fold)")
    batch_size: int = _f(128, "pairs per batch (in-batch negatives: larger is harder)")
    lr: float = _f(1e-3, "AdamW learning rate")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    epochs: int | None = _f(None, "(maximum) epochs; null = chosen from the catalogue (setenc/training/recipe.py)")
    steps: int = _f(1000, "optimiser steps the recipe's fixed schedule aims at when it chooses the epochs; fewer "
                    "in proportion when the training articles are fewer than one batch")
    patience: int = _f(8, "early stopping: epochs without a better monitored metric")
    monitor: str = _f("val/map@r", "validation metric for early stopping and the best checkpoint")
    seed: int = _f(0, "seed for sampling, augmentation and init")
    accelerator: str = _f("auto", "Lightning accelerator: auto | cpu | gpu | ...")
    devices: int | str = _f("auto", "Lightning devices: auto, a count, or a list")
    strategy: str = _f("auto", "Lightning strategy: auto | ddp | ddp_spawn | ... (batch_size stays the global batch)")
    num_nodes: int = _f(1, "machines in a multi-node run (torchrun / SLURM); devices is the count per machine")
    out: str = _f("checkpoints", "folder of run folders")
    run_name: str | None = _f(None, "run folder name; null = <catalog>-<head>-s<seed>")
    logger: str = _f("csv", "csv | wandb | both (wandb runs offline unless you are logged in)")
    progress: bool = _f(True, "show progress bars")
    fast_dev_run: bool = _f(False, "one batch of train and val, no checkpoint: a smoke test")
    final: bool = _f(False, "after the held-out run, retrain on EVERY article with the same recipe (<run>-final)")


def _check_keys(d: dict, where: str) -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise SetencError(f"{where}: unknown config key(s) {unknown}; known keys: {sorted(names)}")


DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"  # in a source checkout


def default_config(given: str | Path | None = None) -> Path | None:
    """The config a script reads: the one given, else the checkout's `configs/default.yaml` when present, so
    `train.py` and `embed.py` start from the same one."""
    return Path(given) if given else DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """A config from YAML (or the defaults), with overrides applied; unknown keys are errors."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SetencError(f"{path}: config file not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise SetencError(f"{path}: a config is a YAML mapping of keys to values")
        _check_keys(data, str(path))
    overrides = overrides or {}
    named = data.get("loss", TrainConfig.loss)
    if overrides.get("loss", named) != named and not any(k.split(".")[0] == "loss_kwargs" for k in overrides):
        data["loss_kwargs"] = {}  # the options were for the other loss: another loss starts from its own defaults
    for key, value in overrides.items():
        top, _, sub = key.partition(".")
        _check_keys({top: None}, "command line")
        if sub:
            data[top] = {**(data.get(top) or {}), sub: value}
        else:
            data[top] = value
    cfg = TrainConfig(**data)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _coerce(f.name, getattr(cfg, f.name), hints[f.name]))
    check_config(cfg)
    return cfg


CHOICES = {  # fields with a fixed set of values (registry names are checked against the registries)
    "runtime": ("auto", "torch", "onnx"),
    "positives": ("auto", "subsets", "group", "pairs", "unlabelled"),
    "split_by": ("group", "article", "auto"),
    "monitor": ("val/recall@1", "val/map@r"),
    "logger": ("csv", "wandb", "both", "none"),
    "fusion": (None, "learned"),
}


def check_config(cfg: TrainConfig) -> None:
    """Every value a run depends on, checked before any long work (embedding, training): one clear error each."""
    from setenc.heads.pooling import HEADS
    from setenc.training.losses import LOSSES
    from setenc.photos.backbones import BACKBONES
    from setenc.photos.tta import TTA

    HEADS.check_options(cfg.head, cfg.head_kwargs)
    if cfg.loss is not None:  # else the recipe chooses, and checks the options against its choice
        LOSSES.check_options(cfg.loss, cfg.loss_kwargs)
    if cfg.backbone is not None:  # else the recipe chooses, and checks the options against its choice
        BACKBONES.check_options(cfg.backbone, cfg.backbone_kwargs)
    if cfg.tta is not None:
        TTA.parse(cfg.tta)
    if (cfg.text is None) != (cfg.fusion is None):
        raise SetencError(f"text={cfg.text!r}, fusion={cfg.fusion!r}: a learned fusion of titles needs both, e.g. "
                          "--text tfidf --fusion learned (late fusion: scripts/evaluate.py --text)")
    if cfg.text is not None:
        from setenc.titles.encoders import TEXT_ENCODERS

        TEXT_ENCODERS.check_options(TEXT_ENCODERS.check(cfg.text), cfg.text_kwargs)
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise SetencError(f"config key {key!r}: {getattr(cfg, key)!r} is not one of {', '.join(map(str, allowed))}")
    split = cfg.split
    if split is not None and (len(split) != 3 or not all(isinstance(v, (int, float)) and v >= 0 for v in split)
                              or abs(sum(split) - 1) > 1e-6):
        raise SetencError(f"split {split}: give three non-negative fractions train / val / test that sum to 1, "
                          "e.g. [0.8, 0.1, 0.1]")
    if split is not None and split[0] <= 0:
        raise SetencError(f"split {split}: the training fraction must be above 0")
    for key, low in (("epochs", 1), ("steps", 1), ("batch_size", 2), ("max_photos", 1), ("patience", 1)):
        if getattr(cfg, key) is not None and getattr(cfg, key) < low:
            raise SetencError(f"config key {key!r}: {getattr(cfg, key)} must be >= {low}")
    if not cfg.lr > 0 or cfg.weight_decay < 0:
        raise SetencError(f"lr={cfg.lr} must be > 0 and weight_decay={cfg.weight_decay} >= 0")
    if not 0 <= cfg.modality_dropout <= 0.5:
        raise SetencError(f"modality_dropout={cfg.modality_dropout} must be in [0, 0.5] (it is drawn twice: no "
                          "title, title only)")
    if not 0 <= cfg.photo_dropout < 1 or not 0 <= cfg.subset_prob <= 1:
        raise SetencError(f"photo_dropout={cfg.photo_dropout} must be in [0, 1) and subset_prob={cfg.subset_prob} "
                          "in [0, 1]")


def _coerce(name: str, value, hint):
    """The value as the field's type (ints and '3e-4'-style strings become floats), else an error."""
    allowed = tuple(typing.get_origin(a) or a for a in (typing.get_args(hint) or (hint,)))
    if float in allowed and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, allowed):
        raise SetencError(f"config key {name!r}: expected {hint}, got {value!r}")
    return value


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """One `--field` flag per config field, documented from the dataclass."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("catalog", "backbone", "head", "seed", "out"):
            continue  # the stable short flags, added by the script
        parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar="V", help=f.metadata["help"])


def parse_overrides(ns: argparse.Namespace, extra: list[str]) -> dict:
    """Flags given on the command line (parsed as YAML) plus `--dict_field.key VALUE` pairs."""
    hints = typing.get_type_hints(TrainConfig)
    out = {k: (v if hints[k] in (str, str | None) else _yaml(v)) for k, v in vars(ns).items() if k in hints}
    it = iter(extra)
    for tok in it:
        if not tok.startswith("--") or "." not in tok:
            raise SetencError(f"unrecognised argument {tok!r} (see --help)")
        key, eq, val = tok[2:].partition("=")
        if not eq:
            val = next(it, None)
            if val is None:
                raise SetencError(f"{tok} needs a value")
        out[key] = _yaml(val)
    return out


def _yaml(v):
    return yaml.safe_load(v) if isinstance(v, str) else v
