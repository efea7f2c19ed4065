"""Rows of the analytics SQL API (`Analytics.Query`) as Python values.

The reply carries each row as a protobuf ListValue, where every number is a double;
integer columns are turned back into ints here, once, for every caller.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from llmops.v1 import analytics_pb2


def rows_of(reply: analytics_pb2.QueryReply) -> list[list[Any]]:
    """Rows as Python values; integer columns come back as ints (JSON numbers are doubles)."""
    integer = ["Int" in c.type and "Interval" not in c.type for c in reply.columns]
    out = []
    for row in reply.rows:
        values = json_format.MessageToDict(row)
        out.append(
            [
                int(v) if is_int and isinstance(v, float) else v
                for v, is_int in zip(values, integer, strict=True)
            ]
        )
    return out


def records_of(reply: analytics_pb2.QueryReply) -> list[dict[str, Any]]:
    """Rows as dicts by column name."""
    names = [c.name for c in reply.columns]
    return [dict(zip(names, row, strict=True)) for row in rows_of(reply)]
