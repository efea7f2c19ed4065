"""Tables keep their rows together: no row split across chunks, the header on top of each."""

from __future__ import annotations

from collections.abc import Callable

from tokenizers import Tokenizer

from ingestion.chunking import Chunker
from ingestion.formats import Format
from ingestion.parsing import ParsedDocument, Section, parse
from tests.ingestion.test_chunking import count, tokenizer

__all__ = ["count", "tokenizer"]  # the shipped tokenizer and its token count, shared
HEADER = "SKU | Item | Warehouse | Quantity"


def _rows(n: int) -> list[str]:
    return [
        f"KX-{i:04d} | torque wrench size {i} | Rotterdam dock {i % 7} | {i * 3}" for i in range(n)
    ]


def test_a_long_csv_is_cut_between_rows_with_the_header_on_top(
    tokenizer: Tokenizer, count: Callable[[str], int]
) -> None:
    rows = _rows(120)
    csv = "\n".join([HEADER.replace(" | ", ","), *(r.replace(" | ", ",") for r in rows)])
    doc = parse(csv.encode(), Format.CSV)
    chunks = Chunker(tokenizer, max_tokens=64, overlap_tokens=16).chunk(doc)
    assert len(chunks) > 10
    seen: list[str] = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[0] == HEADER
        assert set(lines[1:]) <= set(rows)  # whole rows only
        seen += lines[1:]
        assert chunk.token_count == count(chunk.text) <= 64
    assert seen == rows  # every row exactly once, in order: no overlap between table chunks


def test_prose_around_a_table_is_chunked_apart_from_it(tokenizer: Tokenizer) -> None:
    html = "<h1>Stock</h1><p>Counted on Monday.</p><table><tr><th>SKU</th><th>Qty</th></tr>"
    html += "".join(f"<tr><td>A-{i}</td><td>{i}</td></tr>" for i in range(3)) + "</table>"
    chunks = Chunker(tokenizer, max_tokens=200).chunk(parse(html.encode(), Format.HTML))
    assert [(c.heading, c.text) for c in chunks] == [
        ("Stock", "Counted on Monday."),
        ("Stock", "SKU | Qty\nA-0 | 0\nA-1 | 1\nA-2 | 2"),
    ]


def test_a_row_longer_than_a_chunk_alone_is_cut_and_the_rest_stay_whole(
    tokenizer: Tokenizer, count: Callable[[str], int]
) -> None:
    huge = "KX-9999 | " + " ".join(["remarks"] * 120)
    rows = [*_rows(3), huge, *_rows(6)[3:]]
    table = Section("Sheet", "\n".join([HEADER, *rows]), table=True)
    chunks = Chunker(tokenizer, max_tokens=40, overlap_tokens=0).chunk(ParsedDocument("", [table]))
    assert all(c.token_count == count(c.text) <= 40 for c in chunks)
    pieces = [c.text for c in chunks if not c.text.startswith(HEADER)]
    assert " ".join(pieces) == huge  # only the over-long row is cut, and nothing is lost
    whole = [line for c in chunks if c.text.startswith(HEADER) for line in c.text.split("\n")[1:]]
    assert whole == [r for r in rows if r != huge]


def test_a_header_over_half_a_chunk_is_not_repeated(
    tokenizer: Tokenizer, count: Callable[[str], int]
) -> None:
    header = " | ".join(f"column number {i}" for i in range(6))
    rows = [f"alpha beta gamma delta epsilon zeta eta theta row{i}" for i in range(4)]
    assert count(header) > 20
    table = Section("", "\n".join([header, *rows]), table=True)
    chunks = Chunker(tokenizer, max_tokens=40, overlap_tokens=0).chunk(ParsedDocument("", [table]))
    assert [c.text for c in chunks] == [f"{header}\n{rows[0]}", "\n".join(rows[1:])]
