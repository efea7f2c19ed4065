"""Prompt versions and label books indexed by prompt, and how a request's choice resolves.

The gateway's mirror and the admin store both hold their records in a Catalog,
so a label, a version number or `latest` resolves the same way everywhere:
the tenant's own prompt of the name, else the baseline tenant's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import TypeAdapter

from .model import (
    BASELINE_TENANT,
    DEFAULT_LABEL,
    DEFAULT_PROMPT,
    LATEST_LABEL,
    Arm,
    LabelBook,
    PromptError,
    PromptNotFound,
    PromptVersion,
    split_key,
)

Record = PromptVersion | LabelBook
_RECORD: TypeAdapter[Record] = TypeAdapter(Record)


def parse_record(value: bytes) -> Record:
    """A bucket value: a version or a label book (each forbids the other's fields)."""
    return _RECORD.validate_json(value)


@dataclass(frozen=True)
class Target:
    """Where a request's choice points: the prompt's owner (the tenant or the baseline),
    the label asked ("" when a version was named) and its arms."""

    owner: str
    name: str
    label: str
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class PromptSummary:
    tenant: str  # the owner: the baseline tenant for an inherited prompt
    name: str
    latest: int
    labels: dict[str, list[Arm]]
    description: str


@dataclass
class _Prompt:
    versions: dict[int, PromptVersion] = field(default_factory=dict)
    book: LabelBook | None = None

    @property
    def latest(self) -> int:
        return max(self.versions, default=0)


class Catalog:
    def __init__(self) -> None:
        self._prompts: dict[tuple[str, str], _Prompt] = {}

    def apply(self, key: str, record: Record | None) -> None:
        """Take in a bucket key's current record (None: the key is gone)."""
        parts = split_key(key)
        if parts is None:
            return
        tenant, name, version = parts
        prompt = self._prompts.setdefault((tenant, name), _Prompt())
        if version is None:
            prompt.book = record if isinstance(record, LabelBook) else None
        elif isinstance(record, PromptVersion):
            prompt.versions[version] = record
        else:
            prompt.versions.pop(version, None)

    def _own(self, tenant: str, name: str) -> _Prompt | None:
        prompt = self._prompts.get((tenant, name))
        return prompt if prompt is not None and prompt.versions else None

    def owner(self, tenant: str, name: str) -> str:
        """The tenant whose prompt of this name the tenant gets: its own, else the baseline's."""
        for owner in (tenant, BASELINE_TENANT):
            if self._own(owner, name) is not None:
                return owner
        known = ", ".join(s.name for s in self.summaries(tenant)) or "none"
        raise PromptNotFound(f"unknown prompt {name!r}; prompts: {known}")

    def versions(self, owner: str, name: str) -> dict[int, PromptVersion]:
        prompt = self._own(owner, name)
        return dict(prompt.versions) if prompt is not None else {}

    def book(self, owner: str, name: str) -> LabelBook:
        prompt = self._prompts.get((owner, name))
        book = prompt.book if prompt is not None else None
        return book if book is not None else LabelBook(tenant=owner, name=name)

    def version(self, owner: str, name: str, version: int) -> PromptVersion:
        found = self.versions(owner, name)
        if version not in found:
            known = ", ".join(f"v{v}" for v in sorted(found)) or "none"
            raise PromptNotFound(f"prompt {name!r} has no version {version}; versions: {known}")
        return found[version]

    def target(
        self, tenant: str, name: str, *, version: int | None = None, label: str = ""
    ) -> Target:
        """What a request for `name` (empty: the default prompt) gets: a version (None or 0:
        by label), else a label (empty: production; `latest`: the newest version)."""
        name = name or DEFAULT_PROMPT
        owner = self.owner(tenant, name)
        if version:
            if label:
                raise PromptError(f"prompt {name}: name a version or a label, not both")
            self.version(owner, name, version)
            return Target(owner, name, "", (Arm(version=version),))
        label = label or DEFAULT_LABEL
        prompt = self._prompts[(owner, name)]
        if prompt.book is None and owner != BASELINE_TENANT and self._own(BASELINE_TENANT, name):
            # A tenant's first own version is stored a moment before its labels: until they
            # arrive, its requests keep getting the baseline's prompt, not NOT_FOUND.
            owner, prompt = BASELINE_TENANT, self._prompts[(BASELINE_TENANT, name)]
        if label == LATEST_LABEL:
            return Target(owner, name, label, (Arm(version=prompt.latest),))
        book = self.book(owner, name)
        arms = book.labels.get(label)
        if not arms:
            raise PromptNotFound(f"prompt {name!r} has no label {label!r}; labels: {book.known}")
        return Target(owner, name, label, tuple(arms))

    def summaries(self, tenant: str) -> list[PromptSummary]:
        """The tenant's prompts and the baseline's it inherits (none of its own by that name)."""
        found: dict[str, PromptSummary] = {}
        for owner in (tenant, BASELINE_TENANT):
            for (prompt_tenant, name), prompt in sorted(self._prompts.items()):
                if prompt_tenant != owner or name in found or not prompt.versions:
                    continue
                found[name] = PromptSummary(
                    tenant=owner,
                    name=name,
                    latest=prompt.latest,
                    labels=dict(self.book(owner, name).labels),
                    description=prompt.versions[prompt.latest].description,
                )
        return sorted(found.values(), key=lambda s: s.name)

    def labels_at(self, owner: str, name: str, version: int) -> list[str]:
        """The labels pointing at a version now (split labels included; `latest` if newest)."""
        labels = [
            label
            for label, arms in sorted(self.book(owner, name).labels.items())
            if any(arm.version == version for arm in arms)
        ]
        prompt = self._own(owner, name)
        if prompt is not None and prompt.latest == version:
            labels.append(LATEST_LABEL)
        return labels
