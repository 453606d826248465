"""The documentation stands on its own: every relative link in README.md and docs/ (and the other
READMEs) resolves to a file inside the repository, and every #anchor to a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "models" / "README.md",
        ROOT / "reports" / "digits" / "README.md",
        ROOT / "benchmarks" / "README.md",
    ]
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped (word characters, spaces and hyphens
    stay), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings inside code blocks
    return {github_anchor(match) for match in re.findall(r"(?m)^#{1,6} (.+)$", text)}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]


def test_github_anchor_follows_githubs_rule():
    assert github_anchor("`audit teacher` and `audit design`") == "audit-teacher-and-audit-design"
    assert github_anchor("Not certified? Make the model certifiable") == "not-certified-make-the-model-certifiable"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page):
    problems = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.is_relative_to(ROOT):
            problems.append(f"{link}: leaves the repository")
        elif not path.exists():
            problems.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert problems == []


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260
    assert not any("../shared" in line for page in PAGES for line in page.read_text().splitlines())
