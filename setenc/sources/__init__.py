"""Where catalogs come from: the generated (synthetic) demo catalog and adapters for real dataset layouts."""

from .adapters import from_abo, from_folder, from_inshop, from_sop, from_styles_csv
from .demo import make_demo_catalog

__all__ = ["make_demo_catalog", "from_folder", "from_sop", "from_inshop", "from_abo", "from_styles_csv"]
