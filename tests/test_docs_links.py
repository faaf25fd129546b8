"""Every relative link of the README and docs/ resolves to a file or folder of the repository."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path):
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.DOTALL)  # code blocks are not links
    for target in LINK.findall(text):
        if not re.match(r"^[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#", 1)[0]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [os.path.join(REPO, "README.md")] + glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    broken = [
        f"{os.path.relpath(page, REPO)} -> {target}"
        for page in pages
        for target in relative_links(page)
        if not os.path.exists(os.path.join(os.path.dirname(page), target))
    ]
    assert len(pages) > 3 and not broken, broken
