"""The architecture's rules, as tests: inference never needs training, modules stay readable, names come from
the registries only."""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import setenc

ROOT = Path(setenc.__file__).resolve().parent
TRAINING_ONLY = ("lightning", "pytorch_lightning", "wandb")
MAX_LINES = 400


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="setenc.")]


def _is_training(name: str) -> bool:
    return name == "setenc.training" or name.startswith("setenc.training.")


def test_inference_modules_import_with_training_dependencies_blocked():
    inference = [m for m in _modules() if not _is_training(m)] + ["setenc.training", "setenc.training.config",
                                                                   "setenc.training.pairs"]
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        f"    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {TRAINING_ONLY!r}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {inference!r}:\n"
        "    importlib.import_module(m)\n"
        f"assert not any(k.split('.')[0] in {TRAINING_ONLY!r} for k in sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_training_imports_lightning_and_modules_stay_short(path):
    rel = path.relative_to(ROOT).as_posix()
    if not rel.startswith("training/"):
        assert not (_imports(path) & set(TRAINING_ONLY)), f"{rel} imports a training-only dependency"
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{rel}: split it, one concept per module"


def test_registries_are_the_only_lists_of_names():
    """No library module spells out a list of matcher / head / loss names: it asks the registry."""
    names = {"mean", "chamfer", "recursive", "linear", "ordered", "proj", "deepsets", "pma", "infonce", "supcon"}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                consts = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                assert len(consts & names) < 3, f"{path.relative_to(ROOT)}:{node.lineno} lists registry names"


def test_public_api_is_reexported():
    for name in setenc.__all__:
        assert hasattr(setenc, name), name
    importlib.import_module("setenc_experiments.seed_article")


def _import_graph() -> dict[str, set[str]]:
    """setenc module -> the setenc modules it imports, at module level or deferred inside a function."""
    def name(p: Path) -> str:
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("setenc"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("setenc")}
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def test_no_import_cycles():
    """A cycle, even a deferred one, means two modules are one concept split in two (or one is in the wrong place)."""
    graph = _import_graph()
    for start in graph:
        seen, stack = set(), [(start, (start,))]
        while stack:
            mod, trail = stack.pop()
            for dep in graph[mod]:
                assert dep != start, "import cycle: " + " -> ".join((*trail, dep))
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, (*trail, dep)))


def test_the_folder_list_is_the_flow():
    """`ls setenc` reads as the stages (docs/ARCHITECTURE.md maps them): at most 12 entries besides __init__.py,
    and every module is named in the map."""
    entries = sorted(p.name for p in ROOT.iterdir() if p.name not in ("__init__.py", "__pycache__"))
    assert len(entries) <= 12, entries
    arch = (ROOT.parent / "docs" / "ARCHITECTURE.md").read_text()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).as_posix()
        if path.name != "__init__.py":
            assert rel in arch, f"{rel} is not in docs/ARCHITECTURE.md's map"
