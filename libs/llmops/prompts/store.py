"""The prompt registry's writes and exact reads (the CLI, the admin API, the seed).

Versions are immutable: each is its own key, written with create, so two
writers never store the same number (the loser takes the next one), and a push
of content identical to a kept version stores nothing. A prompt's label book is
one key updated by compare-and-set on its last revision, so concurrent label
moves never lose one. Reads go through a pull consumer (llmops.kvhistory), not
a watch, so they see the last revision of every key. Services read a
PromptMirror instead.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from llmops.apikeys import TENANT_RE
from llmops.bus.topology import PROMPTS_BUCKET
from llmops.kvhistory import DELETED, kv_entries
from llmops.logging import get_logger

from .catalog import Catalog, PromptSummary, parse_record
from .model import (
    BASELINE_TENANT,
    DEFAULT_LABEL,
    DEFAULT_PROMPT,
    Action,
    Arm,
    LabelBook,
    LabelMove,
    PromptEntry,
    PromptError,
    PromptNotFound,
    PromptVersion,
    check_label,
    check_name,
    content_digest,
    dump_prompts_file,
    labels_key,
    parse_prompts_file,
    split_key,
    version_key,
)

log = get_logger(__name__)
_MAX_ATTEMPTS = 50  # lost races before a write gives up
Plan = Callable[[Catalog, LabelBook], dict[str, list[Arm]]]  # label -> where it goes


@dataclass(frozen=True)
class Pushed:
    name: str
    version: int
    created: bool  # False: identical to a version already kept
    labels: list[str]  # labels moved to it by this push


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise PromptError(
            f"tenant {tenant!r}: 1-63 of a-z 0-9 _ - (starting with a letter or digit)"
        )
    return tenant


def parse_ref(ref: str) -> tuple[int | None, str]:
    """(version, label) of `3`, `v3` (a version) or a label name."""
    number = ref.removeprefix("v")
    if number.isdigit() and int(number) > 0:
        return int(number), ""
    return None, check_name(ref, "label")


class PromptStore:
    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext) -> PromptStore:
        return cls(await js.key_value(PROMPTS_BUCKET), js)

    async def _read(self, *filters: str) -> tuple[Catalog, dict[str, int]]:
        """The records of the keys matching the filters, and each key's last revision
        (tombstones included)."""
        catalog = Catalog()
        revisions: dict[str, int] = {}
        for keys in dict.fromkeys(filters):
            for entry in await kv_entries(self._js, PROMPTS_BUCKET, keys, last_only=True):
                revisions[entry.key] = entry.revision or 0
                catalog.apply(entry.key, self._record(entry))
        return catalog, revisions

    async def _load(self, tenant: str, keys: str) -> Catalog:
        """`keys` (a filter below the tenant: `name.*`, `*.*`) of the tenant and the baseline."""
        return (await self._read(f"{_tenant(tenant)}.{keys}", f"{BASELINE_TENANT}.{keys}"))[0]

    @staticmethod
    def _record(entry: KeyValue.Entry) -> PromptVersion | LabelBook | None:
        if entry.operation in DELETED or not entry.value:
            return None
        try:
            return parse_record(entry.value)
        except ValueError as exc:
            log.error("prompts.bad_record", key=entry.key, revision=entry.revision, error=str(exc))
            return None

    async def _prompt(self, tenant: str, name: str) -> Catalog:
        return await self._load(tenant, f"{check_name(name or DEFAULT_PROMPT)}.*")

    # -- reads

    async def describe(
        self, tenant: str, name: str, version: int | None = None, label: str = ""
    ) -> tuple[PromptVersion, list[str]]:
        """A version (by number, else by label: default production, `latest` the newest; a
        split label gives its first arm) and the labels pointing at it now."""
        catalog = await self._prompt(tenant, name)
        target = catalog.target(tenant, name, version=version, label=label)
        found = catalog.version(target.owner, target.name, target.arms[0].version)
        return found, catalog.labels_at(target.owner, target.name, found.version)

    async def get(
        self, tenant: str, name: str, version: int | None = None, label: str = ""
    ) -> PromptVersion:
        return (await self.describe(tenant, name, version, label))[0]

    async def list(self, tenant: str) -> builtins.list[PromptSummary]:
        """The tenant's prompts and the baseline's it inherits, by name."""
        catalog = await self._load(tenant, "*.*")
        return catalog.summaries(tenant)

    async def book(self, tenant: str, name: str) -> LabelBook:
        """The labels of the prompt the tenant gets (its own, else the baseline's)."""
        catalog = await self._prompt(tenant, name)
        return catalog.book(catalog.owner(tenant, name), name)

    async def history(self, tenant: str, name: str) -> builtins.list[LabelMove]:
        """Every label move kept, oldest first."""
        return (await self.book(tenant, name)).moves

    async def diff(self, tenant: str, name: str, a: str, b: str) -> str:
        """A unified diff of two versions, each `3`, `v3` or a label, as prompts-file text."""
        catalog = await self._prompt(tenant, name)
        sides = []
        for ref in (a, b):
            version, label = parse_ref(ref)
            target = catalog.target(tenant, name, version=version, label=label)
            found = catalog.version(target.owner, target.name, target.arms[0].version)
            title = f"{name}@v{found.version}" + (f" ({label})" if label else "")
            sides.append((title, dump_prompts_file([found.entry()]).splitlines(keepends=True)))
        (title_a, lines_a), (title_b, lines_b) = sides
        return "".join(difflib.unified_diff(lines_a, lines_b, fromfile=title_a, tofile=title_b))

    async def export(self, tenant: str, names: Iterable[str] = ()) -> str:
        """A prompts file of each prompt's newest version and the labels pointing at it alone:
        every prompt of the tenant's own, or the named ones (inherited ones included)."""
        catalog = await self._load(tenant, "*.*")
        wanted = list(names)
        if wanted:
            owners = [(catalog.owner(tenant, check_name(n)), n) for n in dict.fromkeys(wanted)]
        else:
            owners = [(s.tenant, s.name) for s in catalog.summaries(tenant) if s.tenant == tenant]
        if not owners:
            raise PromptNotFound(f"tenant {tenant} has no prompts of its own")
        entries = []
        for owner, name in owners:
            versions = catalog.versions(owner, name)
            newest = versions[max(versions)]
            alone = [Arm(version=newest.version)]
            labels = [k for k, arms in catalog.book(owner, name).labels.items() if arms == alone]
            entries.append(newest.entry(sorted(labels)))
        return dump_prompts_file(entries)

    # -- writes

    async def push_text(
        self, yaml_text: str, tenant: str, by: str, *, source: str = "prompts file"
    ) -> builtins.list[Pushed]:
        """Store every prompt of a prompts file; nothing at all when any entry is invalid.

        Content identical to a kept version stores nothing and answers that version. The
        entry's `labels` move to the pushed version; without them, a prompt that never had
        a label gets `production`.
        """
        _tenant(tenant)
        entries = parse_prompts_file(yaml_text, source)
        pushed = []
        for entry in entries:
            stored, created = await self._store_version(tenant, entry, by)
            moved = await self._labels_on_push(tenant, entry, stored.version, by)
            pushed.append(Pushed(entry.name, stored.version, created, moved))
        return pushed

    async def _store_version(
        self, tenant: str, entry: PromptEntry, by: str
    ) -> tuple[PromptVersion, bool]:
        digest = content_digest(entry)
        for _ in range(_MAX_ATTEMPTS):
            catalog, revisions = await self._load_own(tenant, entry.name)
            versions = catalog.versions(tenant, entry.name)
            same = next((v for v in versions.values() if v.digest == digest), None)
            if same is not None:
                return same, False
            numbers = [p[2] for p in map(split_key, revisions) if p is not None and p[2]]
            stored = PromptVersion(
                tenant=tenant,
                name=entry.name,
                version=max(numbers, default=0) + 1,  # deleted numbers are never reused
                created_at=_now(),
                created_by=by,
                digest=digest,
                **entry.model_dump(exclude={"name", "labels"}),
            )
            try:
                await self._kv.create(
                    version_key(tenant, entry.name, stored.version),
                    stored.model_dump_json().encode(),
                )
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0)  # another writer took this number: read again
                continue
            return stored, True
        raise RuntimeError(f"{tenant}/{entry.name}: {_MAX_ATTEMPTS} concurrent pushes lost")

    async def _load_own(self, tenant: str, name: str) -> tuple[Catalog, dict[str, int]]:
        return await self._read(f"{_tenant(tenant)}.{check_name(name)}.*")

    async def _labels_on_push(
        self, tenant: str, entry: PromptEntry, version: int, by: str
    ) -> builtins.list[str]:
        def plan(_catalog: Catalog, book: LabelBook) -> dict[str, list[Arm]]:
            labels = entry.labels
            if labels is None:
                labels = [] if book.labels or book.moves else [DEFAULT_LABEL]
            return {label: [Arm(version=version)] for label in labels}

        return (await self._move(tenant, entry.name, "push", by, plan))[1]

    async def set_label(
        self, tenant: str, name: str, label: str, version: int, by: str
    ) -> LabelBook:
        """Point `label` at one version (it must exist; `latest` cannot be set)."""
        check_label(label)

        def plan(catalog: Catalog, _book: LabelBook) -> dict[str, list[Arm]]:
            catalog.version(tenant, name, version)
            return {label: [Arm(version=version)]}

        return (await self._move(tenant, name, "label", by, plan))[0]

    async def rollback(self, tenant: str, name: str, label: str, by: str) -> LabelBook:
        """Move `label` back to where it was before its last move; again: one further back."""
        check_label(label)

        def plan(_catalog: Catalog, book: LabelBook) -> dict[str, list[Arm]]:
            return {label: book.rollback_target(label)}

        return (await self._move(tenant, name, "rollback", by, plan))[0]

    async def split(
        self, tenant: str, name: str, label: str, arms: dict[int, int], by: str
    ) -> LabelBook:
        """Split `label`'s traffic: version -> weight (whole percent, 2+ versions, sum 100)."""
        check_label(label)
        if len(arms) < 2:
            raise PromptError(f"split {name}:{label}: name at least two versions")
        bad = [f"v{v}={w}" for v, w in arms.items() if not 1 <= w <= 99]
        if bad:
            raise PromptError(f"split {name}:{label}: weights are 1-99 percent: {', '.join(bad)}")
        if sum(arms.values()) != 100:
            raise PromptError(
                f"split {name}:{label}: the weights add up to {sum(arms.values())}, not 100"
            )
        planned = [Arm(version=v, weight=w) for v, w in sorted(arms.items())]

        def plan(catalog: Catalog, _book: LabelBook) -> dict[str, list[Arm]]:
            for arm in planned:
                catalog.version(tenant, name, arm.version)
            return {label: planned}

        return (await self._move(tenant, name, "split", by, plan))[0]

    async def _refuse_inherited(self, tenant: str, name: str) -> None:
        """A tenant labels only its own prompts: say why, for one it inherits or none at all."""
        owner = (await self._prompt(tenant, name)).owner(tenant, name)  # unknown: the list
        raise PromptNotFound(
            f"tenant {tenant} has no prompt {name!r} of its own (it uses tenant {owner}'s): "
            "push a copy to label it for this tenant"
        )

    async def _move(
        self, tenant: str, name: str, action: Action, by: str, plan: Plan
    ) -> tuple[LabelBook, builtins.list[str]]:
        """Move labels as `plan` says (given the prompt now), by compare-and-set; each move
        is recorded, a label already where it should go is left alone. Returns the book and
        the labels that moved."""
        key = labels_key(tenant, name)
        for _ in range(_MAX_ATTEMPTS):
            catalog, revisions = await self._load_own(tenant, name)
            if not catalog.versions(tenant, name):
                await self._refuse_inherited(tenant, name)
            book = catalog.book(tenant, name)
            updated, moved, at = book, [], _now()
            for label, arms in plan(catalog, book).items():
                before, updated = updated, updated.moved(label, arms, action, by, at)
                if updated is not before:
                    moved.append(label)
            if not moved:
                return book, moved
            value = updated.model_dump_json().encode()
            try:
                if key in revisions:
                    await self._kv.update(key, value, last=revisions[key])
                else:
                    await self._kv.create(key, value)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0)  # another move came first: plan again on it
                continue
            return updated, moved
        raise RuntimeError(f"{tenant}/{name}: {_MAX_ATTEMPTS} concurrent label moves lost")


async def seed_prompts(js: JetStreamContext, path: Path) -> list[Pushed]:
    """Push the seed file as the baseline tenant's prompts, by `seed`.

    Idempotent and safe from several processes at once: identical content stores
    nothing, and labels move only where the file says so or for a new prompt, so an
    operator's label moves and rollbacks survive every restart.
    """
    store = await PromptStore.open(js)
    text = await asyncio.to_thread(path.read_text)
    return await store.push_text(text, BASELINE_TENANT, "seed", source=str(path))
