"""Prompt templates, their versions and labels: the registry's records and its YAML file.

A template is text with `{variable}` placeholders. Rendering is one regex pass
over the template, never str.format: a value is inserted as it is and never
expanded again, so a question full of braces cannot break or inject into a
template. `{{` and `}}` are literal braces. `{question}` (the user's question)
and `{context}` (the numbered retrieved passages) are filled by the gateway;
every other placeholder is a variable the request (or the prompt's defaults)
supplies.

Storage, in the prompts bucket: `<tenant>.<name>.v<N>` holds one immutable
PromptVersion; `<tenant>.<name>.labels` holds the LabelBook (where each label
points now, and every move it made).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.apikeys import TENANT_RE
from llmops.v1 import inference_pb2

DEFAULT_PROMPT = "default"  # what a request that names no prompt gets
BASELINE_TENANT = "default"  # a tenant without a prompt of a name gets this tenant's
DEFAULT_LABEL = "production"  # what a request that names no label or version gets
LATEST_LABEL = "latest"  # the newest version: implicit, never set or moved
RESERVED_VARIABLES = frozenset({"context", "question"})  # filled by the gateway
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # prompt and label names
LABELS_PART = "labels"  # the last part of a label book's key
MAX_MOVES = 1000  # label moves a book keeps (oldest dropped): one KV value stays small
MAX_TEMPLATE_CHARS = 100_000
_NAME_RULE = "1-63 of a-z 0-9 _ - (starting with a letter or digit)"
# `{{`, `}}`, or a placeholder; any other brace is literal text.
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VERSION_PART = re.compile(r"^v([1-9][0-9]*)$")

Action = Literal["push", "label", "rollback", "split"]


class PromptError(ValueError):
    """Bad input (a file, a name, a split, a variable): the message names the field and why."""


class PromptNotFound(LookupError):
    """An unknown prompt, version or label: the message lists what exists."""


def placeholders(text: str) -> set[str]:
    """Every `{name}` in a template (`{{name}}` is literal text, not a placeholder)."""
    return {m.group(1) for m in _TOKEN.finditer(text) if m.group(1)}


def _fill(template: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # `{{` -> `{`, `}}` -> `}`
        return values[name]

    return _TOKEN.sub(replace, template)


def check_name(name: str, what: str = "prompt") -> str:
    if not NAME_RE.match(name):
        raise PromptError(f"{what} name {name!r}: {_NAME_RULE}")
    return name


def check_label(label: str) -> str:
    """A label that can be set or moved (`latest` is implicit)."""
    check_name(label, "label")
    if label == LATEST_LABEL:
        raise PromptError(f"label {LATEST_LABEL!r} is always the newest version: it cannot be set")
    return label


class PromptParams(BaseModel):
    """Generation parameters a prompt was written for; a request's own settings win."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(0, ge=0, description="0: the model's default")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=8)
    seed: int | None = None

    def apply_to(self, params: inference_pb2.GenerationParams) -> inference_pb2.GenerationParams:
        """A copy of the request's parameters with the unset ones taken from the prompt."""
        merged = inference_pb2.GenerationParams()
        merged.CopyFrom(params)
        if not merged.max_tokens:
            merged.max_tokens = self.max_tokens
        if not merged.HasField("temperature") and self.temperature is not None:
            merged.temperature = self.temperature
        if not merged.HasField("top_p") and self.top_p is not None:
            merged.top_p = self.top_p
        if not merged.HasField("seed") and self.seed is not None:
            merged.seed = self.seed
        if not merged.stop:
            merged.stop.extend(self.stop)
        return merged


class PromptContent(BaseModel):
    """What a version is made of (the digest covers all of it but the description)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", max_length=2000)
    model: str = Field("", description="the model alias it was written for; empty: the default")
    params: PromptParams = PromptParams()
    defaults: dict[str, str] = Field(
        default_factory=dict, description="values of variables a request may leave out"
    )
    system: str = Field("", max_length=MAX_TEMPLATE_CHARS)
    user: str = Field(max_length=MAX_TEMPLATE_CHARS)

    @field_validator("user")
    @classmethod
    def _asks_the_question(cls, user: str) -> str:
        if "question" not in placeholders(user):
            raise ValueError("must contain {question} (where the user's question goes)")
        return user

    @model_validator(mode="after")
    def _defaults_are_variables(self) -> PromptContent:
        for name in sorted(self.defaults):
            if name in RESERVED_VARIABLES:
                raise ValueError(f"defaults.{name}: {{{name}}} is filled by the gateway")
            if name not in self.variables:
                known = ", ".join(sorted(self.variables)) or "none"
                raise ValueError(f"defaults.{name}: not a variable of the templates ({known})")
        return self

    @functools.cached_property
    def variables(self) -> frozenset[str]:
        """Every variable of system and user the request fills (reserved ones left out)."""
        return frozenset(placeholders(self.system) | placeholders(self.user)) - RESERVED_VARIABLES


def content_digest(content: PromptContent) -> str:
    """sha256 of what shapes an answer (not the description): identical content, same digest."""
    data = content.model_dump(
        mode="json", include={"system", "user", "model", "params", "defaults"}
    )
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class PromptEntry(PromptContent):
    """One prompt of a YAML file."""

    name: str
    labels: list[str] | None = Field(
        None, description="labels to move to the pushed version; unset: production if new"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_RE.match(name):
            raise ValueError(f"a prompt name is {_NAME_RULE}")
        return name

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str] | None) -> list[str] | None:
        for label in labels or ():
            try:
                check_label(label)
            except PromptError as exc:
                raise ValueError(str(exc)) from None
        return labels


class PromptVersion(PromptContent):
    """One immutable version of a tenant's prompt, as the bucket holds it."""

    tenant: str
    name: str
    version: int = Field(ge=1)
    created_at: str
    created_by: str
    digest: str  # content_digest, when it was stored

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str) -> str:
        if not TENANT_RE.match(tenant):
            raise ValueError(f"a tenant is {_NAME_RULE}")
        return tenant

    def check_variables(self, variables: Mapping[str, str]) -> None:
        """PromptError naming every variable that is missing (no value, no default) or
        unknown: a request can be refused before any work is done for it."""
        unknown = sorted(set(variables) - self.variables)
        missing = sorted(self.variables - set(variables) - set(self.defaults))
        if not unknown and not missing:
            return
        problems = []
        if missing:
            problems.append(f"missing variables: {', '.join(missing)}")
        if unknown:
            reserved = [n for n in unknown if n in RESERVED_VARIABLES]
            problems.append(
                f"unknown variables: {', '.join(unknown)}"
                + (f" ({', '.join(reserved)}: filled by the gateway)" if reserved else "")
            )
        known = ", ".join(sorted(self.variables)) or "none"
        raise PromptError(
            f"prompt {self.name} v{self.version}: {'; '.join(problems)} (its variables: {known})"
        )

    def render(
        self, variables: Mapping[str, str], *, question: str, context: str
    ) -> tuple[str, str]:
        """(system, user) with every placeholder filled (check_variables' errors first)."""
        self.check_variables(variables)
        values = {**self.defaults, **variables, "question": question, "context": context}
        return _fill(self.system, values), _fill(self.user, values)

    def entry(self, labels: Iterable[str] | None = None) -> dict[str, Any]:
        """This version as an entry of a prompts file (push takes it back unchanged)."""
        data: dict[str, Any] = {"name": self.name}
        data |= self.model_dump(
            mode="json",
            include={"description", "model", "params", "defaults", "system", "user"},
            exclude_defaults=True,
        )
        if labels is not None:
            data["labels"] = list(labels)
        return data


class Arm(BaseModel):
    """A version a label points at, and its share of the label's traffic (percent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    weight: int = Field(100, ge=1, le=100)


class LabelMove(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str
    by: str
    label: str
    before: list[Arm] = Field(default_factory=list, description="empty: the label was new")
    after: list[Arm]
    action: Action


class LabelBook(BaseModel):
    """Where each label of one prompt points, and every move (oldest first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    name: str
    labels: dict[str, list[Arm]] = Field(default_factory=dict)
    moves: list[LabelMove] = Field(default_factory=list)

    def moved(self, label: str, after: list[Arm], action: Action, by: str, at: str) -> LabelBook:
        """The book with `label` at `after` and the move recorded; itself if it points there."""
        before = self.labels.get(label, [])
        if before == after:
            return self
        move = LabelMove(at=at, by=by, label=label, before=before, after=after, action=action)
        return self.model_copy(
            update={
                "labels": {**self.labels, label: after},
                "moves": [*self.moves, move][-MAX_MOVES:],
            }
        )

    def rollback_target(self, label: str) -> list[Arm]:
        """Where `label` pointed before its last move not yet rolled back.

        Moves are a stack: each move pushes, each rollback pops, so a second rollback
        walks one move further back. A label's first move has nothing before it.
        """
        stack: list[LabelMove] = []
        for move in self.moves:
            if move.label != label:
                continue
            if move.action == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(move)
        if label not in self.labels:
            raise PromptNotFound(f"prompt {self.name} has no label {label!r}; labels: {self.known}")
        if not stack or not stack[-1].before:
            raise PromptError(
                f"prompt {self.name}: label {label!r} has no earlier version to roll back to"
            )
        return stack[-1].before

    @property
    def known(self) -> str:
        return ", ".join([*sorted(self.labels), LATEST_LABEL])


def version_key(tenant: str, name: str, version: int) -> str:
    return f"{tenant}.{name}.v{version}"


def labels_key(tenant: str, name: str) -> str:
    return f"{tenant}.{name}.{LABELS_PART}"


def split_key(key: str) -> tuple[str, str, int | None] | None:
    """(tenant, name, version) of a version's key, (tenant, name, None) of a label book's;
    None for any other key."""
    parts = key.split(".")
    if len(parts) != 3:
        return None
    tenant, name, part = parts
    if part == LABELS_PART:
        return tenant, name, None
    match = _VERSION_PART.match(part)
    return (tenant, name, int(match.group(1))) if match else None


def weights_by_version(arms: Iterable[tuple[int, int]]) -> dict[int, int]:
    """version -> weight of a split's (version, weight) pairs; a version named twice is an
    error (it would otherwise lose one weight without a word)."""
    weights: dict[int, int] = {}
    for version, weight in arms:
        if version in weights:
            raise PromptError(f"split: version {version} is named twice")
        weights[version] = weight
    return weights


def format_arms(arms: Iterable[Arm]) -> str:
    """`v3` for a single arm, `v3:50,v4:50` for a split; `-` for none."""
    arms = list(arms)
    if len(arms) == 1:
        return f"v{arms[0].version}"
    return ",".join(f"v{a.version}:{a.weight}" for a in arms) or "-"


def parse_prompts_file(text: str, source: str = "prompts file") -> list[PromptEntry]:
    """Every entry of a prompts file; PromptError names each bad entry and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{source}: not YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"prompts"}:
        raise PromptError(
            f"{source}: a prompts file is a mapping with one key, `prompts:` (a list)"
        )
    raw_entries = data["prompts"]
    if not isinstance(raw_entries, list) or not raw_entries:
        raise PromptError(f"{source}: `prompts:` must be a non-empty list of prompts")
    entries: list[PromptEntry] = []
    problems: list[str] = []
    for index, raw in enumerate(raw_entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"prompts[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        try:
            entries.append(PromptEntry.model_validate(raw))
        except ValidationError as exc:
            problems += [
                f"{where}.{field}: {message}" if field else f"{where}: {message}"
                for field, message in _explain(exc)
            ]
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            problems.append(f"prompts: {entry.name!r} appears twice")
        seen.add(entry.name)
    if problems:
        raise PromptError(f"{source}: " + "; ".join(problems))
    return entries


def _explain(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, why) of each error; the field is empty where a check of the whole entry failed."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        if error["type"] == "model_type":
            message = f"must be a mapping, not {type(error['input']).__name__}"
        problems.append((".".join(str(part) for part in error["loc"]), message))
    return problems


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """Multi-line text as `|` blocks, so an exported file reads like one written by hand."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump_prompts_file(entries: Iterable[Mapping[str, Any]]) -> str:
    """A prompts file (`prompts:` and the entries) that parse_prompts_file reads back."""
    text: str = yaml.dump(
        {"prompts": list(entries)},
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return text
