"""The one grammar of tenant ids, doc ids and collection names (docs/identifiers.md).

Every entry point (the bus, gRPC, the CLI, API keys) checks with these functions,
so a value refused in one place is refused everywhere, with the same reason. Ids
travel into NATS headers (`Nats-Msg-Id`, dead-letter headers), KV buckets, file
names under the data dir and SQL filters: the grammar keeps each of those safe,
and `../../etc` is refused as a tenant rather than parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Lowercase so two spellings never name one tenant; no '.' or '/' so a tenant is
# always one safe path segment, KV key token and SQL literal.
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TENANT_RULE = "1-63 of a-z 0-9 _ - (starting with a letter or digit)"
COLLECTION_RE = TENANT_RE
COLLECTION_RULE = TENANT_RULE
DOC_ID_MAX_CHARS = 1024  # room for an absolute path or a URL
DOC_ID_RULE = (
    f"1-{DOC_ID_MAX_CHARS} printable characters, no leading or trailing whitespace, "
    "no '..' segment between '/' or '\\'"
)
# Where a failure whose tenant is unknown (undecodable, or an invalid tenant) is
# recorded. Outside TENANT_RE, so no real tenant, and no tenant's key, can have it:
# only all-tenants analytics keys see those rows.
UNKNOWN_TENANT = "_unknown"
_SHOWN_CHARS = 80  # of a refused value, in the reason


def _refuse(field: str, value: str, rule: str) -> ValueError:
    shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
    return ValueError(f"invalid {field} {shown!r}: {rule}")


def check_tenant(tenant: str) -> str:
    """`tenant`, or ValueError naming the value and the rule."""
    if not TENANT_RE.match(tenant):
        raise _refuse("tenant", tenant, TENANT_RULE)
    return tenant


def check_collection(collection: str) -> str:
    """`collection`, or ValueError naming the value and the rule."""
    if not COLLECTION_RE.match(collection):
        raise _refuse("collection", collection, COLLECTION_RULE)
    return collection


def check_doc_id(doc_id: str) -> str:
    """`doc_id`, or ValueError naming the value, what is wrong with it and the rule.

    Doc ids are the publisher's own names (relative or absolute paths, URLs), so
    `/`, `.`, `:`, inner spaces and any printable Unicode stay allowed. Control
    characters would break the NATS headers the id travels in (`Nats-Msg-Id`), and
    a `..` segment is never a name a publisher means, only a way out of a folder.
    """
    broken = _doc_id_problem(doc_id)
    if broken:
        raise _refuse("doc_id", doc_id, f"{broken}; a doc_id is {DOC_ID_RULE}")
    return doc_id


def _doc_id_problem(doc_id: str) -> str:
    """What breaks the doc id rule ('' when nothing does)."""
    if not doc_id:
        return "it is empty"
    if len(doc_id) > DOC_ID_MAX_CHARS:
        return f"it is {len(doc_id)} characters long"
    if not doc_id.isprintable():
        return "it holds a control or format character"
    if doc_id != doc_id.strip():
        return "it starts or ends with whitespace"
    if ".." in re.split(r"[/\\]", doc_id):
        return "it holds a '..' segment"
    return ""


_CHECKS: dict[str, Callable[[str], str]] = {
    "tenant": check_tenant,
    "doc_id": check_doc_id,
    "collection": check_collection,
}


def refusals(**ids: str) -> dict[str, str]:
    """{field: reason} for each of `ids` (tenant=, doc_id=, collection=) that breaks the
    grammar; empty when all pass. An edge that refuses several ids at once (a bus message,
    a gRPC request) reports them all, in the same words at every edge."""
    refused: dict[str, str] = {}
    for field, value in ids.items():
        try:
            _CHECKS[field](value)
        except ValueError as exc:
            refused[field] = str(exc)
    return refused
