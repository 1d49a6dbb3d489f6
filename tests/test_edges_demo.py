"""Issue 26: the first run says where the demo catalogue lives and what it is doing while it renders it."""

from __future__ import annotations

import functools

import setenc.catalogs
from setenc.catalogs.demo import make_demo_catalog
from setenc.plumbing.cli import catalog_arg


def test_first_run_says_it_renders_the_demo_and_where_it_lives(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SETENC_CACHE", str(tmp_path))
    monkeypatch.setattr(setenc.catalogs, "make_demo_catalog", functools.partial(make_demo_catalog, n_groups=2, size=32))
    catalog = catalog_arg(None)  # what every script does without --catalog
    err = capsys.readouterr().err
    home = catalog.root
    assert f"[demo] rendering the synthetic demo catalogue (2 product families) into {home}" in err, err
    assert f"[demo] the synthetic demo catalogue: {home}" in err
    catalog_arg(None)  # built: no second rendering, still says where it is
    err = capsys.readouterr().err
    assert "rendering" not in err and f"the synthetic demo catalogue: {home}" in err
