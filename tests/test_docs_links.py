"""The Markdown pages hold together: every relative link of README.md, docs/ and benchmarks/ resolves to a file or
folder of the repository, every `#anchor` to a heading of the page it names (GitHub's slugs), and every file at the
top of benchmarks/results/ is named in that folder's README (the index), which keeps it to at most 60 files."""

import glob
import os
import re
import unicodedata

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")  # an ATX heading, less a closing #s
RESULTS = os.path.join(REPO, "benchmarks", "results")
MAX_RESULT_FILES = 60


def pages():
    """README.md, docs/**/*.md and benchmarks/**/*.md, less benchmarks/scratch/ (git-ignored run output)."""
    found = [os.path.join(REPO, "README.md")]
    for folder in ("docs", "benchmarks"):
        found += glob.glob(os.path.join(REPO, folder, "**", "*.md"), recursive=True)
    scratch = os.path.join(REPO, "benchmarks", "scratch") + os.sep
    return sorted(page for page in found if not page.startswith(scratch))


def _text(path):
    with open(path, encoding="utf-8") as f:
        return re.sub(r"```.*?```", "", f.read(), flags=re.DOTALL)  # code blocks hold neither links nor headings


def slug(heading):
    """GitHub's anchor for a heading: its rendered text, lowercased, punctuation and symbols dropped except - and _,
    each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    kept = (c for c in text.strip().lower() if c in "-_ " or c.isalnum() or unicodedata.category(c).startswith("M"))
    return "".join(kept).replace(" ", "-")


def anchors(path):
    """Every anchor a page offers: its headings' slugs, a repeated slug numbered -1, -2, ... in page order."""
    seen, result = {}, set()
    for line in _text(path).splitlines():
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            result.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return result


def relative_links(path):
    text = re.sub(r"`[^`\n]*`", "", _text(path))  # nor does inline code
    for target in LINK.findall(text):
        if not re.match(r"^[a-z]+:", target):
            yield target


def test_the_pages_are_found():
    names = {os.path.relpath(page, REPO) for page in pages()}
    for expected in ("README.md", "docs/research_log.md", "docs/claims.md", "benchmarks/results/README.md"):
        assert expected in names, f"{expected} is not among the pages checked"


def test_slugs_follow_github():
    assert slug("Where FLR stands against the open targets (2026-11-30; updated 2026-12-07)") == (
        "where-flr-stands-against-the-open-targets-2026-11-30-updated-2026-12-07"
    )
    assert slug("ReaRec-style reasoning tokens (`reasoning_steps`, 2026-11-29)") == (
        "rearec-style-reasoning-tokens-reasoning_steps-2026-11-29"
    )
    assert slug("**Bold** and [a link](x.md): K = 1 / K = 4 ± 0.1") == "bold-and-a-link-k--1--k--4--01"


@pytest.mark.parametrize("page", pages(), ids=lambda page: os.path.relpath(page, REPO))
def test_every_relative_link_resolves_and_every_anchor_names_a_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            broken.append(f"{target}: no such file or folder")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            broken.append(f"{target}: {os.path.relpath(full, REPO)} has no heading with the anchor #{anchor}")
    assert not broken, f"{os.path.relpath(page, REPO)}: " + "; ".join(broken)


def test_every_result_file_is_in_the_index_and_there_are_at_most_60():
    index = os.path.join(RESULTS, "README.md")
    assert os.path.isfile(index), "benchmarks/results/README.md (the index of the result files) is missing"
    with open(index, encoding="utf-8") as f:
        text = f.read()
    files = sorted(name for name in os.listdir(RESULTS) if os.path.isfile(os.path.join(RESULTS, name)))
    missing = [
        name
        for name in files
        if name != "README.md" and not re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", text)
    ]
    assert not missing, f"benchmarks/results/README.md does not name: {', '.join(missing)}"
    assert len(files) <= MAX_RESULT_FILES, (
        f"benchmarks/results/ holds {len(files)} files at its top level, more than {MAX_RESULT_FILES}: "
        "keep the files behind the figures the docs cite and the latest of each finding (git keeps the rest)"
    )
