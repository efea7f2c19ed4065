"""A message's schema as one self-contained .proto text, for ClickHouse's Protobuf format.

ClickHouse reads the events itself, with `format_schema_source = 'string'`: the
schema travels with each insert, so neither a ClickHouse server nor chDB needs
schema files. A text schema cannot import others, so every message the message
reaches is written into it, named by its full name with `_` for `.`. Enums are
written as int32 (the same varint on the wire, and no value names to collide):
the views turn the numbers into names. Field names and numbers, all the wire
carries, come from the compiled descriptors, so proto/ stays the one source.
"""

from __future__ import annotations

from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_ENUM: "int32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


def descriptor(message: type[Message]) -> Descriptor:
    """A message class's descriptor (upb's at run time; the stubs name two classes)."""
    return cast(Descriptor, message.DESCRIPTOR)


def type_name(message: Descriptor) -> str:
    """The name a message has in the schema text."""
    return message.full_name.replace(".", "_")


def schema_text(message: Descriptor) -> str:
    """proto3 text defining `message` and every message it refers to."""
    blocks: list[str] = []
    seen: set[str] = set()
    todo = [message]
    while todo:
        m = todo.pop()
        if m.full_name in seen:
            continue
        seen.add(m.full_name)
        fields = " ".join(f"{_field_type(f, todo)} {f.name} = {f.number};" for f in m.fields)
        blocks.append(f"message {type_name(m)} {{ {fields} }}")
    return 'syntax = "proto3";\n' + "\n".join(blocks) + "\n"


def _field_type(f: FieldDescriptor, todo: list[Descriptor]) -> str:
    """The field's type in the text; queues the messages it needs."""
    nested = f.message_type
    if nested is not None and nested.GetOptions().map_entry:
        key, value = nested.fields_by_name["key"], nested.fields_by_name["value"]
        return f"map<{_field_type(key, todo)}, {_field_type(value, todo)}>"
    label = "repeated " if f.is_repeated else ""
    if nested is not None:
        todo.append(nested)
        return label + type_name(nested)
    if f.type not in _SCALARS:  # proto2 groups
        raise ValueError(f"{f.full_name}: a field type ClickHouse's Protobuf format cannot read")
    return label + _SCALARS[f.type]
