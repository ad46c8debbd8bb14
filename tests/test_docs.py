"""The front door: a README a newcomer reads in two minutes, docs pages that say what they are for,
and links that lead somewhere."""

from __future__ import annotations

import re

from .conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _links(path):
    """Relative link targets of a Markdown file (no http, no in-page anchors)."""
    text = path.read_text(encoding="utf-8")
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, len(lines)
    assert lines[2:4] == ["```bash", "python3 -m pip install '.[plot]' && bptt demo"]
    assert "bash tests/install-tools.sh && python3 -m pip install -e '.[test,plot,torch,jax]' && python3 -m pytest" in lines[6]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash tests/install-tools.sh && python3 -m pip install -q -e '.[test,plot,torch,jax]' && python3 -m pytest" in ci
    text = "\n".join(lines)
    try_next = text.split("## Try next")[1].split("\n## ")[0]
    commands = re.findall(r"^\| \d+ \| .* \| `(bptt [^`]+)` \|$", try_next, flags=re.MULTILINE)
    assert len(commands) == 12, commands


def test_every_link_resolves_and_every_page_says_what_it_is_for():
    pages = sorted(DOCS.glob("*.md"))
    assert {p.name for p in pages} >= {"notes.md", "cells.md", "grading.md", "analysis-and-training.md",
                                       "performance.md", "bad-input.md", "architecture.md"}
    for page in [README, *pages]:
        for target in _links(page):
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: {target}"
    linked = set(_links(README))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        title, purpose = text.split("\n\n")[:2]  # the title, then one italic paragraph: what the page is for
        assert title.startswith("# ") and purpose.startswith("*") and purpose.endswith("*"), page.name
        assert f"docs/{page.name}" in linked, f"the README does not link {page.name}"


def test_the_notes_are_in_the_project_in_our_words():
    notes = (DOCS / "notes.md").read_text(encoding="utf-8")
    for needed in ("cat mat rat", "rat rat mat", "mat mat cat", "o_t = f(w_i · x_t + w_h o_(t−1))", "short-term",
                   "long-term", "clipping", "identity", "LSTM", "learning rate", "immediate partial"):
        assert needed in notes, needed
    assert "shared/reference" not in README.read_text(encoding="utf-8")
