"""Small helpers shared by the scripts: clean error exits and the default catalog."""

from __future__ import annotations

import sys
from typing import Callable

from setenc.catalogs import Catalog, load_catalog
from setenc.plumbing.errors import SetencError


def run_main(main: Callable[[], None]) -> None:
    """Run a script's main; a user-input error prints one clear line and exits 2, never a traceback."""
    try:
        main()
    except SetencError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; everything finished so far is saved", file=sys.stderr)
        sys.exit(130)


DEMO = "demo"  # `--catalog demo` names the generated demo catalog explicitly (a config may name another)


def catalog_arg(path: str | None) -> Catalog:
    """The catalog named on the command line, or the generated demo catalog when none is given (or `demo`).

    The demo is always built with its own fixed seed: every training seed and every baseline sees the same one.
    """
    if path is None or path == DEMO:
        from setenc.catalogs import make_demo_catalog

        manifest = make_demo_catalog()
        print(f"[demo] the synthetic demo catalogue: {manifest.parent} (`--catalog PATH` for yours)", file=sys.stderr)
        catalog = load_catalog(manifest)
        catalog.name = "demo"
        return catalog
    return load_catalog(path)
