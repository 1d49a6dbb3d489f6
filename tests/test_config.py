"""Typed configs: YAML in configs/ maps onto TrainConfig; unknown keys and wrong types are errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from setenc.training.config import TrainConfig, add_config_args, load_config, parse_overrides, save_config
from setenc.plumbing.errors import SetencError

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), TrainConfig)


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("head: proj\nlearning_rate: 0.1\n")
    with pytest.raises(SetencError, match="learning_rate"):
        load_config(p)


def test_wrong_type_is_an_error():
    with pytest.raises(SetencError, match="batch_size"):
        load_config(None, {"batch_size": "many"})


def test_overrides_and_dotted_dict_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("head: pma\nhead_kwargs: {seeds: 2}\n")
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    parser.add_argument("--catalog", default=argparse.SUPPRESS)
    ns, extra = parser.parse_known_args(["--lr", "3e-4", "--catalog", "2024", "--head_kwargs.num_heads", "8"])
    cfg = load_config(p, parse_overrides(ns, extra))
    assert cfg.lr == 3e-4 and cfg.catalog == "2024" and cfg.head_kwargs == {"seeds": 2, "num_heads": 8}
    with pytest.raises(SetencError, match="unrecognised"):
        parse_overrides(ns, ["stray"])


def test_round_trip(tmp_path):
    cfg = load_config(None, {"epochs": 3, "head": "deepsets"})
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_another_loss_on_the_command_line_starts_from_its_own_options():
    """`--loss ms` was refused: the default config's InfoNCE temperature is no option of Multi-Similarity."""
    from setenc.training.config import load_config

    cfg = load_config(None, {"loss": "ms"})
    assert cfg.loss == "ms" and cfg.loss_kwargs == {}
    assert load_config(None, {"loss": "supcon", "loss_kwargs.temperature": 0.1}).loss_kwargs == {"temperature": 0.1}
    assert load_config(None, {}).loss is None  # the recipe's choice (test_recipe.py)
