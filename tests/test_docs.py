"""The documentation: README short, the site builds strictly, generated pages current."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("UQBENCH_REQUIRE_OPTIONAL") == "1"


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if REQUIRED:
            pytest.fail(f"{module} is required here (UQBENCH_REQUIRE_OPTIONAL=1)")
        pytest.skip(f"{module} not installed (pip install -e '.[docs]')")


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_site_builds_strictly(tmp_path):
    _need("mkdocs")
    _need("material")
    _need("mkdocstrings_handlers.python")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "studies/nbody-v2/index.html", "methods/perturbation/index.html",
                 "api/index.html"):
        assert (site / page).is_file(), page
    # the API page is rendered from docstrings, not empty
    assert "TorchUQMethod" in (site / "api/index.html").read_text(encoding="utf-8")


def test_generated_pages_are_current():
    """Every study table and method page equals what its command makes from the records and
    cards now (a stale page names itself)."""
    # (blocks marked "generated (slow)" regenerate a dataset first: minutes on a fresh
    # machine; `python docs/regenerate.py --check` runs them too)
    done = subprocess.run([sys.executable, "docs/regenerate.py", "--check", "--skip-slow"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_every_study_page_generates_its_tables():
    """No hand-typed study table: each Markdown table on a study page lies inside a
    generated block (and the current study has its tables)."""
    import re

    block = re.compile(r"<!-- generated( \(slow\))?: .+? -->\n.*?<!-- end generated -->", re.S)
    assert block.search((ROOT / "docs" / "studies" / "nbody-v2.md").read_text("utf-8"))
    for page in sorted((ROOT / "docs" / "studies").glob("*.md")):
        if page.name == "index.md":
            continue
        text = block.sub("", page.read_text(encoding="utf-8"))
        tables = [line for line in text.splitlines() if line.startswith("|---")]
        assert not tables, f"{page.name}: a table outside a generated block"


def test_method_pages_cover_every_card():
    from uqbench.cards import CARDS_DIR

    text = "".join(p.read_text(encoding="utf-8")
                   for p in (ROOT / "docs" / "methods").glob("*.md"))
    for card in Path(CARDS_DIR).glob("*.yaml"):
        assert f"## `{card.stem}`" in text, card.stem
