"""The recipe chosen from the catalogue (`train.py --catalog X` with no other option), and `--final`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, paired_catalog, script_env
from setenc.catalogs import Article, Catalog
from setenc.photos.backbones import BACKBONES
from setenc.plumbing.errors import SetencError
from setenc.training import recipe
from setenc.training.config import load_config


def synthetic(groups: int, per_group: int, photos: int = 3) -> Catalog:
    arts = [Article(f"g{g}-{k}", tuple(f"/x/g{g}-{k}-{j}.jpg" for j in range(photos)), f"g{g}")
            for g in range(groups) for k in range(per_group)]
    return Catalog(arts, root=None, name="synthetic")


def test_small_catalogue_trains_every_product_on_a_fixed_schedule():
    cfg, why = recipe.choose(load_config(None, {}), synthetic(60, 3))  # 180 articles of 60 products
    assert cfg.split == recipe.PRODUCT_SPLIT and cfg.split[1] == 0 and cfg.split_by == "group"
    assert cfg.steps == 1000 and cfg.epochs == 985  # 126 training articles, below a batch: 1000 x 126 / 128 steps
    assert recipe.choose(load_config(None, {}), synthetic(70, 3))[0].epochs == 1000  # 147: one full batch an epoch
    assert any("no validation split" in line for line in why)
    big, _ = recipe.choose(load_config(None, {}), synthetic(400, 4))  # 1,120 training articles: 8 batches an epoch
    assert big.split[1] == 0 and big.epochs == 125


def test_a_tiny_catalogue_trains_in_proportion_to_its_articles_and_says_so():
    cfg, why = recipe.choose(load_config(None, {}), synthetic(4, 2))  # 8 articles, ~6 training: 47 one-step epochs
    assert cfg.epochs == recipe.scheduled_steps(1000, 6, 128) == 47
    assert any(line.startswith("epochs=47") and "scaled down" in line for line in why)
    assert recipe.scheduled_steps(1000, 128, 128) == 1000 and recipe.scheduled_steps(1000, 1, 128) == 8
    assert recipe.choose(load_config(None, {"epochs": 5}), synthetic(4, 2))[0].epochs == 5  # given: kept


def test_reasons_point_at_the_docs_and_hold_no_figures():
    for catalog, overrides in ((synthetic(60, 3), {}), (synthetic(20, 100, photos=1), {}),
                               (synthetic(20, 100, photos=1), {"text": "tfidf", "fusion": "learned"})):
        _, why = recipe.choose(load_config(None, overrides), catalog)
        for line in why:
            assert not re.search(r"\d\.\d{3}|\+0\.\d", line), line  # measurements live in docs, not in code
            if line.split("=")[0] in ("backbone", "tta", "classes", "head_kwargs.mean_weight", "loss"):
                assert re.search(r"docs/[a-z_]+\.md#[a-z0-9-]+", line), line


def test_recipe_averages_each_photo_with_its_centre_crop_unless_told():
    cfg, why = recipe.choose(load_config(None, {}), synthetic(60, 3))
    assert cfg.tta == recipe.TTA == "crop@0.75" and any(line.startswith("tta=crop@0.75") for line in why)
    mine, why = recipe.choose(load_config(None, {"tta": "none"}), synthetic(60, 3))
    assert mine.tta == "none" and not any(line.startswith("tta=") for line in why)


def test_large_catalogue_validates_and_stops_early():
    cfg, why = recipe.choose(load_config(None, {}), synthetic(15_000, 2))  # 30,000 articles
    assert cfg.split == recipe.LARGE_SPLIT and cfg.split[1] > 0 and cfg.epochs == recipe.LARGE_EPOCHS
    assert any("early stopping" in line for line in why)


def test_groups_that_are_classes_split_by_article():
    cfg, _ = recipe.choose(load_config(None, {}), synthetic(20, 100, photos=1))
    assert cfg.split_by == "article" and cfg.split == recipe.ARTICLE_SPLIT
    assert recipe.choose(load_config(None, {}), synthetic(60, 3))[0].split_by == "group"


def test_the_int8_pair_unless_titles_are_fused():
    """Products and photo-named classes: the two nets' int8 twin; a learned fusion of titles keeps the backbone it
    was measured with; options are checked against the recipe's choice."""
    assert recipe.BACKBONE == "efficientnet-lite0+lite2-int8"
    for catalog in (synthetic(20, 100, photos=1), synthetic(60, 3)):  # classes, products
        cfg, why = recipe.choose(load_config(None, {}), catalog)
        assert cfg.backbone == recipe.BACKBONE and any(line.startswith(f"backbone={recipe.BACKBONE}:") for line in why)
    torch_only, why = recipe.choose(load_config(None, {"runtime": "torch"}), synthetic(60, 3))
    assert torch_only.backbone == recipe.TORCH_BACKBONE == BACKBONES.get(recipe.BACKBONE)().float_spec.name
    assert any(line.startswith("backbone=efficientnet-lite0+lite2: runtime=torch") for line in why)
    fused = load_config(None, {"text": "tfidf", "fusion": "learned"})
    assert recipe.choose(fused, synthetic(20, 100, photos=1))[0].backbone == recipe.FUSION_BACKBONE == "efficientnet-lite0"
    sized, _ = recipe.choose(load_config(None, {"backbone_kwargs": {"size": 320}}), synthetic(20, 100, photos=1))
    assert (sized.backbone, sized.backbone_kwargs) == (recipe.BACKBONE, {"size": 320})
    with pytest.raises(SetencError, match="no option"):  # options checked against the recipe's choice
        recipe.choose(load_config(None, {"backbone_kwargs": {"model": "x"}}), synthetic(60, 3))


def test_proj_blends_with_mean_pooling_only_when_products_are_held_out():
    products, why = recipe.choose(load_config(None, {}), synthetic(60, 3))
    assert products.head_kwargs == {"mean_weight": recipe.MEAN_WEIGHT} and any("mean_weight" in w for w in why)
    classes, _ = recipe.choose(load_config(None, {}), synthetic(20, 100, photos=1))
    assert classes.head_kwargs == {"mean_weight": 0.0}
    for kwargs in ({"mean_weight": 0.3}, {"out_dim": 64}):  # given, or a width the blend cannot have
        cfg, _ = recipe.choose(load_config(None, {"head_kwargs": kwargs}), synthetic(60, 3))
        assert cfg.head_kwargs == kwargs
    assert recipe.choose(load_config(None, {"head": "pma"}), synthetic(60, 3))[0].head_kwargs == {}


def test_multi_similarity_where_products_are_held_out_infonce_where_groups_are_classes():
    products, why = recipe.choose(load_config(None, {}), synthetic(60, 3))
    assert (products.loss, products.loss_kwargs) == ("ms", {}) and any(w.startswith("loss=ms") for w in why)
    classes, _ = recipe.choose(load_config(None, {}), synthetic(20, 100, photos=1))
    assert (classes.loss, classes.loss_kwargs) == ("infonce", {"temperature": 0.05})
    tuned, _ = recipe.choose(load_config(None, {"loss_kwargs": {"base": 0.6}}), synthetic(60, 3))
    assert (tuned.loss, tuned.loss_kwargs) == ("ms", {"base": 0.6})  # options without a loss: the recipe's loss
    with pytest.raises(SetencError, match="no option temperature"):  # checked against the recipe's choice
        recipe.choose(load_config(None, {"loss_kwargs": {"temperature": 0.1}}), synthetic(60, 3))


def test_what_the_user_sets_wins():
    cfg, why = recipe.choose(load_config(None, {"split": [0.6, 0.2, 0.2], "epochs": 7, "split_by": "article",
                                                "head_kwargs": {"mean_weight": 0.5}, "tta": "flip", "classes": True,
                                                "backbone": "efficientnet-lite2", "loss": "supcon"}),
                             synthetic(60, 3))
    assert (cfg.split, cfg.epochs, cfg.split_by, cfg.head_kwargs, cfg.tta, cfg.classes, cfg.backbone, cfg.loss,
            why) == ([0.6, 0.2, 0.2], 7, "article", {"mean_weight": 0.5}, "flip", True, "efficientnet-lite2", "supcon",
                     [])


def test_final_retrains_on_every_article_and_records_the_heldout_metrics(tmp_path):
    pytest.importorskip("pytorch_lightning")
    catalog = paired_catalog(tmp_path / "cat", 24, 2, seed=3)
    env = script_env(tmp_path / "cache")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--catalog", str(catalog), "--out",
                           str(tmp_path / "runs"), "--final", "true", "--epochs", "3", "--progress", "false"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "cat-proj-s0"
    final = tmp_path / "runs" / "cat-proj-s0-final"
    evaluated = json.loads((run / "result.json").read_text())
    result = json.loads((final / "result.json").read_text())
    assert evaluated["train_articles"] < 24 and result["train_articles"] == 24  # every article trains
    assert result["heldout"]["test/group"] == evaluated["test/group"] and "[final]" in proc.stdout
    blob = torch.load(final / "best.pt", map_location="cpu", weights_only=True)
    assert blob["training"]["split"] == [1.0, 0.0, 0.0] and blob["metrics"]["heldout"]["run_dir"] == str(run)
    ev = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--checkpoint", str(final / "best.pt"),
                         "--catalog", str(catalog), "--out", str(tmp_path / "rep")], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 2 and "final checkpoint trained on every article" in ev.stderr, ev.stderr
