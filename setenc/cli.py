"""Small helpers shared by the scripts: clean error exits and the default catalog."""

from __future__ import annotations

import sys
from typing import Callable

from .catalog import Catalog, load_catalog
from .errors import SetencError


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


def catalog_arg(path: str | None, seed: int = 0) -> Catalog:
    """The catalog named on the command line, or the generated demo catalog when none is given."""
    if path is None:
        from .sources import make_demo_catalog

        catalog = load_catalog(make_demo_catalog(seed=seed))
        catalog.name = "demo"
        return catalog
    return load_catalog(path)
