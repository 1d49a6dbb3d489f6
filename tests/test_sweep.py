"""The bench sweep's pure parts: head specs, mean ± std summaries, the markdown table."""

import numpy as np
import pytest

from setenc.training.sweep import markdown_table, parse_spec, summarise


def test_parse_spec():
    assert parse_spec("proj") == ("proj", {"head": "proj"})
    name, over = parse_spec("pma:lr=0.001,head_kwargs.dim=256,head_kwargs.skip=true")
    assert name == "pma" and over == {"head": "pma", "lr": 1e-3, "head_kwargs.dim": 256, "head_kwargs.skip": True}
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("pma:lr")
    # commas inside a YAML list or mapping belong to the value
    _, over = parse_spec("proj:split=[0.7,0.0,0.3],head_kwargs={out_dim: 8, init: random},epochs=5")
    assert over == {"head": "proj", "split": [0.7, 0.0, 0.3], "head_kwargs": {"out_dim": 8, "init": "random"},
                    "epochs": 5}


def test_summarise_is_mean_and_population_std_per_method():
    recs = [{"method": "mean", "recall@1": 0.8, "map@r": 0.5, "seconds": 0.0},
            {"method": "proj", "recall@1": 0.9, "map@r": 0.6, "seconds": 10.0},
            {"method": "mean", "recall@1": 0.6, "map@r": 0.7, "seconds": 0.0},
            {"method": "proj", "recall@1": 1.0, "map@r": 0.8, "seconds": 20.0}]
    rows = summarise(recs)
    assert [r["method"] for r in rows] == ["mean", "proj"]  # first-seen order
    assert rows[0]["runs"] == 2 and np.isclose(rows[0]["r1"], 0.7) and np.isclose(rows[0]["r1_std"], 0.1)
    assert np.isclose(rows[1]["map"], 0.7) and np.isclose(rows[1]["map_std"], 0.1) and rows[1]["seconds"] == 15.0
    table = markdown_table(rows)
    assert "| mean | 2 | 0.700 ± 0.100 | 0.600 ± 0.100 | 0.0 |" in table
    assert "| **proj** | 2 | 0.950 ± 0.050 | 0.700 ± 0.100 | 15.0 |" in table  # best MAP@R in bold


def test_paired_table_compares_each_head_to_the_first_run_by_run():
    from setenc.training.sweep import paired_table

    def rec(method, fold, seed, r1, mp, g1, gm):
        return {"method": method, "fold": fold, "seed": seed, "recall@1": r1, "map@r": mp,
                "galleries": {"group": {"recall@1": g1, "map@r": gm}}}

    records = [rec("mean", 0, None, 0.1, 0.1, 0.2, 0.2),
               rec("a", 0, 0, 0.50, 0.30, 0.8, 0.5), rec("a", 1, 0, 0.60, 0.40, 0.8, 0.5),
               rec("b", 0, 0, 0.55, 0.20, 0.8, 0.6), rec("b", 1, 0, 0.70, 0.40, 0.7, 0.7),
               rec("b", 2, 0, 0.99, 0.99, 0.9, 0.9)]  # fold 2 has no `a` run: not paired
    row = paired_table(records, "group-all").splitlines()[2].split(" | ")
    assert row[0] == "| b" and row[1] == "2"
    assert row[2] == "+0.075 / -0.050" and row[3] == "2, 0"  # (0.05 + 0.10) / 2; (-0.10 + 0) / 2
    assert row[4] == "-0.050 / +0.150" and row[5] == "0, 2 |"
    assert paired_table(records[:3], "group-all") == ""  # one head: nothing to pair
