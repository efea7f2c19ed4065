"""Protobuf on the wire, or its canonical JSON form when the publisher says so.

Publishers in any language can send JSON (`Content-Type: application/json`);
everything the platform itself publishes is binary protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

CONTENT_TYPE = "Content-Type"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

M = TypeVar("M", bound=Message)


class MalformedMessage(ValueError):
    """The payload is not a valid message of the expected type."""


def decode(data: bytes, headers: Mapping[str, str] | None, into: type[M]) -> M:
    """Parse `data` as `into`, as JSON when the Content-Type says so, else binary protobuf."""
    content_type = (headers or {}).get(CONTENT_TYPE, PROTOBUF).split(";", 1)[0].strip().lower()
    message = into()
    try:
        if content_type == JSON or content_type.endswith("+json"):
            json_format.Parse(data.decode("utf-8"), message)
        elif content_type in (PROTOBUF, "application/protobuf", "application/octet-stream"):
            message.ParseFromString(data)
        else:
            raise MalformedMessage(f"unsupported Content-Type {content_type!r}")
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise MalformedMessage(
            f"not a valid {into.DESCRIPTOR.full_name} ({content_type}): {exc}"
        ) from exc
    return message


def encode_json(message: Message) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode()
