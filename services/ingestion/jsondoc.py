"""JSON -> ParsedDocument: each leaf a "path: value" line, arrays of records a table.

A top-level object's scalar fields come first, then each nested field as a
section headed by its key, so a chunk says which part of the document it is
from. An array of flat objects (records, the commonest export shape) becomes
a table whose header is their keys, so rows stay whole and keep their column
names in every chunk. The walk is iterative: nesting depth costs no stack.
"""

from __future__ import annotations

import json
from typing import Any

from ingestion.errors import UnparseableDocument
from ingestion.sections import ParsedDocument, SectionBuilder, decode_utf8, one_line

_CONTAINERS = (dict, list)


def parse_json(content: bytes) -> ParsedDocument:
    """The title from a top-level string field "title", if there is one."""
    try:
        data = json.loads(decode_utf8(content))
    except json.JSONDecodeError as exc:
        raise UnparseableDocument(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise UnparseableDocument("JSON is nested too deeply to read") from None
    sections = SectionBuilder()
    if not isinstance(data, dict):
        _add_value(sections, data)
        return ParsedDocument("", sections.finish())
    scalars = {key: value for key, value in data.items() if not isinstance(value, _CONTAINERS)}
    _add_value(sections, scalars)
    for key, value in data.items():
        if isinstance(value, _CONTAINERS):
            sections.heading(1, one_line(key))
            _add_value(sections, value)
    title = data.get("title")
    return ParsedDocument(one_line(title) if isinstance(title, str) else "", sections.finish())


def _add_value(sections: SectionBuilder, value: Any) -> None:
    header = _record_keys(value)
    if header:
        sections.table(
            [header, *([_scalar(record.get(key)) for key in header] for record in value)]
        )
    else:
        lines = (f"{path}: {text}" if path else text for path, text in _leaves(value))
        sections.add("\n".join(lines))


def _record_keys(value: Any) -> list[str]:
    """The keys of an array of flat objects, in first-seen order; [] for anything else."""
    if not (isinstance(value, list) and len(value) > 1):
        return []
    keys: dict[str, None] = {}
    for record in value:
        if not isinstance(record, dict) or any(isinstance(v, _CONTAINERS) for v in record.values()):
            return []
        keys.update(dict.fromkeys(record))
    return list(keys)


def _leaves(value: Any) -> list[tuple[str, str]]:
    """(path, text) of every non-null scalar under `value`, in document order."""
    leaves: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend(
                (f"{path}.{key}" if path else str(key), child)
                for key, child in reversed(node.items())
            )
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(node))))
        elif node is not None:
            leaves.append((one_line(path), _scalar(node)))
    return leaves


def _scalar(value: Any) -> str:
    """Strings as they are; numbers, booleans as JSON writes them; null as empty."""
    if value is None:
        return ""
    return one_line(value) if isinstance(value, str) else json.dumps(value)
