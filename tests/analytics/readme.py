"""SQL queries read out of the docs themselves, so tests and benchmarks run exactly what they show.

Each ```sql block of a section starts with `-- <name>`; the section runs to the next `## `.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ROOT

COST_DOC = ROOT / "docs" / "analytics.md"
COST_SECTION = "## Cost analysis with SQL"


def doc_queries(path: Path = COST_DOC, section: str = COST_SECTION) -> dict[str, str]:
    """{name: sql} of the ```sql blocks under `section` of `path`, in order."""
    text = path.read_text()
    if section not in text:
        raise ValueError(f"{path} has no section {section!r}")
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    queries = {}
    for block in re.findall(r"```sql\n(.*?)```", body, re.S):
        first, _, _ = block.partition("\n")
        queries[first.removeprefix("--").strip()] = block.strip()
    return queries
