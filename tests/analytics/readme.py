"""The README's "Cost analysis with SQL" queries, read from the README itself.

The test and the benchmark run exactly what the README shows; each ```sql
block starts with `-- <name>`.
"""

from __future__ import annotations

import re

from tests.support import ROOT

SECTION = "## Cost analysis with SQL"


def readme_queries() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    queries = {}
    for block in re.findall(r"```sql\n(.*?)```", section, re.S):
        first, _, _ = block.partition("\n")
        queries[first.removeprefix("--").strip()] = block.strip()
    return queries
