"""Golden datasets: JSONL parsed strictly, stored immutably in the JetStream object store.

A version is the digest of the canonical items, so the same content is the same
version wherever and whenever it is pushed (a second push stores nothing), and
a run that names `NAME@VERSION` always scores the same questions. A file with
one bad line is refused whole, naming the line: a half-stored dataset would
silently shrink every later run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from llmops.bus.objects import open_object_store
from llmops.bus.topology import DATASETS_BUCKET, OBJECT_BUCKETS

DATASET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VERSION_RE = re.compile(r"^[0-9a-f]{12}$")
_FIELDS = ("id", "question", "variables", "expected_answer", "expected_sources")


class DatasetError(ValueError):
    """A dataset file or reference that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class DatasetItem:
    id: str
    question: str
    variables: dict[str, str] = field(default_factory=dict)
    expected_answer: str = ""
    expected_sources: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "variables": self.variables,
            "expected_answer": self.expected_answer,
            "expected_sources": list(self.expected_sources),
        }


@dataclass(frozen=True)
class Dataset:
    tenant: str
    name: str
    version: str
    items: tuple[DatasetItem, ...]
    created_at: str = ""
    created_by: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class DatasetInfo:
    """A stored version without its items (what `list` shows)."""

    tenant: str
    name: str
    version: str
    items: int
    created_at: str
    created_by: str


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()[:12]


def parse_jsonl(text: str) -> list[DatasetItem]:
    """Every item of a JSONL file; DatasetError naming the first bad line."""
    items: list[DatasetItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = _parse_line(line, number)
        if item.id in seen:
            raise DatasetError(f"line {number}: id {item.id!r} repeats line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise DatasetError("the file has no items")
    return items


def _parse_line(line: str, number: int) -> DatasetItem:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"line {number}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"line {number}: expected a JSON object")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise DatasetError(f"line {number}: unknown field(s) {', '.join(unknown)}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"line {number}: no question (a non-empty string)")
    variables = raw.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
    ):
        raise DatasetError(f"line {number}: variables must map names to strings")
    expected = raw.get("expected_answer") or ""
    if not isinstance(expected, str):
        raise DatasetError(f"line {number}: expected_answer must be a string")
    sources = raw.get("expected_sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise DatasetError(f"line {number}: expected_sources must be a list of document ids")
    content = {
        "question": question,
        "variables": variables,
        "expected_answer": expected,
        "expected_sources": sources,
    }
    item_id = raw.get("id")
    if item_id is None:
        item_id = _digest(content)  # stable: the same line is the same item in every version
    elif not isinstance(item_id, str) or not item_id:
        raise DatasetError(f"line {number}: id must be a non-empty string")
    return DatasetItem(item_id, question, dict(variables), expected, tuple(sources))


def dataset_version(items: list[DatasetItem]) -> str:
    return _digest([item.to_json() for item in items])


def parse_ref(ref: str) -> tuple[str, str]:
    """`NAME[@VERSION]` -> (name, version or "")."""
    name, _, version = ref.partition("@")
    check_name(name)
    if version and not _VERSION_RE.match(version):
        raise DatasetError(f"{version!r} is not a dataset version (12 hex digits)")
    return name, version


def check_name(name: str) -> str:
    if not DATASET_NAME_RE.match(name):
        raise DatasetError(
            f"{name!r} is not a dataset name: "
            "1-63 of a-z 0-9 _ . - (starting with a letter or digit)"
        )
    return name


class DatasetStore:
    """Datasets of every tenant in one object store; objects `<tenant>/<name>/<version>`."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    @classmethod
    async def open(cls, js: JetStreamContext) -> DatasetStore:
        """The store, created on first use (file storage: datasets outlive restarts)."""
        return cls(await open_object_store(js, DATASETS_BUCKET, OBJECT_BUCKETS[DATASETS_BUCKET]))

    async def push(
        self, tenant: str, name: str, items: list[DatasetItem], by: str
    ) -> tuple[DatasetInfo, bool]:
        """Store a version; (its info, whether it is new). Identical content stores nothing."""
        check_name(name)
        version = dataset_version(items)
        existing = await self._info(tenant, name, version)
        if existing is not None:
            return existing, False
        info = DatasetInfo(
            tenant, name, version, len(items), dt.datetime.now(dt.UTC).isoformat(), by
        )
        body = _canonical([item.to_json() for item in items])
        object_name = f"{tenant}/{name}/{version}"
        meta = ObjectMeta(
            name=object_name,
            description=json.dumps(
                {"items": info.items, "created_at": info.created_at, "by": info.created_by}
            ),
        )
        await self._objects.put(object_name, body, meta=meta)
        return info, True

    async def list(self, tenant: str, name: str = "") -> list[DatasetInfo]:
        """Every stored version of the tenant (of one dataset), newest first."""
        try:
            objects = await self._objects.list(ignore_deletes=True)
        except NotFoundError:  # an empty store
            return []
        prefix = f"{tenant}/{name}/" if name else f"{tenant}/"
        infos = [_info_of(o.name, o.description) for o in objects if o.name.startswith(prefix)]
        return sorted(infos, key=lambda i: i.created_at, reverse=True)

    async def get(self, tenant: str, ref: str) -> Dataset:
        """`NAME@VERSION`, or the newest version of NAME; DatasetError when there is none."""
        name, version = parse_ref(ref)
        if not version:
            versions = await self.list(tenant, name)
            if not versions:
                raise DatasetError(f"no dataset {name!r} for tenant {tenant!r}")
            version = versions[0].version
        info = await self._info(tenant, name, version)
        if info is None:
            raise DatasetError(f"dataset {name!r} has no version {version!r}")
        result = await self._objects.get(f"{tenant}/{name}/{version}")
        items = tuple(
            DatasetItem(
                d["id"],
                d["question"],
                d["variables"],
                d["expected_answer"],
                tuple(d["expected_sources"]),
            )
            for d in json.loads(result.data or b"[]")
        )
        return Dataset(tenant, name, version, items, info.created_at, info.created_by)

    async def _info(self, tenant: str, name: str, version: str) -> DatasetInfo | None:
        try:
            found = await self._objects.get_info(f"{tenant}/{name}/{version}")
        except NotFoundError:
            return None
        return _info_of(found.name, found.description)


def _info_of(object_name: str, description: str | None) -> DatasetInfo:
    tenant, name, version = object_name.split("/", 2)
    meta = json.loads(description or "{}")
    return DatasetInfo(
        tenant,
        name,
        version,
        int(meta.get("items", 0)),
        meta.get("created_at", ""),
        meta.get("by", ""),
    )
