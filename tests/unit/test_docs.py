"""The repository stands alone: its docs point only at files a reader has.

The product contract the team works from lives outside the repository; the README, the
docs and the code's docstrings must never send a reader there, nor to a link that
leads nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT = [p for pattern in ("README.md", "docs/*.md", "watchdog_core/**/*.py", "tools/*.py",
                          "benchmarks/*.py", "scripts/*.sh")
        for p in sorted(ROOT.glob(pattern))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# A citation of the outside contract ("SPEC 4", "SPEC section 9", "../shared/...").
OUTSIDE = re.compile(r"\bSPEC\b|shared/SPEC|shared/STYLE|\.\./shared/")


@pytest.mark.parametrize("path", TEXT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_a_file_outside_the_repository(path: Path) -> None:
    hits = [f"{n}: {line.strip()}" for n, line in
            enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE.search(line)]
    assert hits == []


@pytest.mark.parametrize("path", [p for p in TEXT if p.suffix == ".md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    broken = [target for target in LINK.findall(text)
              if "://" not in target and not (path.parent / target).exists()]
    assert broken == []


def test_docs_named_in_code_exist() -> None:
    named = set()
    for path in TEXT:
        named.update(re.findall(r"\bdocs/[\w-]+\.md\b", path.read_text(encoding="utf-8")))
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert missing == []
