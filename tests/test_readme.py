"""The README is the front door: short, and every command, flag and docs link in it still exists, so it cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
MAX_LINES = 200
# `python scripts/x.py ARGS` or `python benchmarks/bench_x.py ARGS`, up to the code span's end, a comment or the line
COMMAND = re.compile(r"python\s+((?:scripts|benchmarks)/[\w./-]+\.py)([^`#\n]*)")
FLAG = re.compile(r"(?:^|[\s\[])(--[A-Za-z][\w-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def readme_text() -> str:
    """The README as the user reads it."""
    return README.read_text(encoding="utf-8")


def commands(text: str) -> list[tuple[str, list[str]]]:
    """Every script command in `text` with the flags it passes (`--head_kwargs.dim` counts as `--head_kwargs`)."""
    return [(script, [f.split(".")[0] for f in FLAG.findall(args)]) for script, args in COMMAND.findall(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors a markdown page's headings define."""
    return {slug(line.lstrip("#")) for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("#")}


@lru_cache(maxsize=None)
def known_flags(script: str) -> frozenset[str]:
    """The flags a script's argparse accepts, read from its `--help`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, f"{script} --help failed: {out.stderr[-500:]}"
    return frozenset(re.findall(r"--[A-Za-z][\w-]*", out.stdout))


def test_readme_is_short():
    n = len(readme_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; move detail into a docs/ page and link it (<= {MAX_LINES})"


def test_readme_keeps_the_ci_commands():
    # .ci/run runs exactly these two as the install and the test command
    blocks = re.findall(r"```bash\n(.*?)```", readme_text(), re.S)
    assert 'pip install -e ".[dev]"\npytest\n' in blocks


def test_the_three_commands_are_shown():
    assert {"scripts/train.py", "scripts/evaluate.py", "scripts/export.py"} <= {s for s, _ in commands(readme_text())}


def test_the_python_snippet_names_exist():
    import setenc

    snippet = re.search(r"```python\n(.*?)```", readme_text(), re.S).group(1)
    names = [n.strip() for n in re.search(r"from setenc import ([\w, ]+)", snippet).group(1).split(",")]
    for name in names:
        assert hasattr(setenc, name), f"the README imports setenc.{name}, which the package does not export"
    for owner, attr in re.findall(r"\b([A-Z]\w+)\.(\w+)\(", snippet):
        assert hasattr(getattr(setenc, owner), attr), f"the README calls {owner}.{attr}, which does not exist"


def linked_pages() -> list[Path]:
    """The README and the docs pages it links that say how to do things (not the bench_* measurement logs)."""
    pages = [README]
    for target in LINK.findall(readme_text()):
        page = REPO / target.partition("#")[0]
        if page.suffix == ".md" and page.is_file() and not page.name.startswith("bench_") and page not in pages:
            pages.append(page)
    return pages


def broken_links(page: Path) -> list[str]:
    """Relative links of a markdown page that reach no file, or no heading of the page they name."""
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_docs_link_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: links that resolve to no file or heading: {broken}"


@pytest.mark.parametrize("page", linked_pages(), ids=lambda p: p.name)
def test_every_script_and_flag_shown_exists(page):
    shown = commands(page.read_text(encoding="utf-8"))
    missing = sorted({s for s, _ in shown if not (REPO / s).is_file()})
    assert not missing, f"{page.relative_to(REPO)} names scripts that do not exist: {missing}"
    shown_flags: dict[str, set[str]] = {}
    for script, flags in shown:
        shown_flags.setdefault(script, set()).update(flags)
    unknown = {s: sorted(flags - known_flags(s)) for s, flags in shown_flags.items() if flags - known_flags(s)}
    assert not unknown, f"{page.relative_to(REPO)} shows flags that the scripts' --help does not list: {unknown}"


def test_the_checks_catch_rot(tmp_path):
    # the parser sees flags of dotted config keys, bracketed options and commands inside inline code, not comments
    text = "`python scripts/train.py --head_kwargs.dim 2 [--no-such]`\n```bash\npython benchmarks/x.py --a # --b\n```"
    assert commands(text) == [("scripts/train.py", ["--head_kwargs", "--no-such"]), ("benchmarks/x.py", ["--a"])]
    page = tmp_path / "page.md"
    page.write_text("# Round 5: a head (issue 14) — seen\n[a](x.md) [b](#gone) [c](#round-5-a-head-issue-14--seen)")
    assert broken_links(page) == ["x.md", "#gone"]
