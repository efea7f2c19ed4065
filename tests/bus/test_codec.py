"""Protobuf or canonical JSON on the wire, chosen by Content-Type."""

from __future__ import annotations

import pytest

from llmops.bus.codec import JSON, MalformedMessage, decode, encode_json
from llmops.v1 import documents_pb2


def test_protobuf_is_the_default() -> None:
    doc = documents_pb2.Document(tenant="t", doc_id="d", content=b"\x00\xff")
    assert decode(doc.SerializeToString(), None, documents_pb2.Document) == doc


def test_json_round_trip() -> None:
    doc = documents_pb2.Document(doc_id="d", content=b"\x00\xff", metadata={"k": "v"})
    data = encode_json(doc)
    assert b'"docId"' in data
    headers = {"Content-Type": f"{JSON}; charset=utf-8"}
    assert decode(data, headers, documents_pb2.Document) == doc


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"\xff\xff\xff", "application/x-protobuf", "not a valid llmops.v1.Document"),
        (b'{"docId": 5', JSON, "not a valid llmops.v1.Document"),
        (b'{"noSuchField": 1}', JSON, "not a valid llmops.v1.Document"),
        (b"<doc/>", "text/xml", "unsupported Content-Type"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(
    data: bytes, content_type: str, message: str
) -> None:
    with pytest.raises(MalformedMessage, match=message):
        decode(data, {"Content-Type": content_type}, documents_pb2.Document)
