"""Guardrail policies: which scanners run on input, context, output and documents, and how.

A policy is YAML (so it can live in Git) validated by these models; an error
names the field and the reason (`input.pii.threshold: ...`), and an unknown
scanner is an unknown field. The guardrails service runs policies, gateways
read them for their fail mode, time budget and whether an answer needs a
streaming check, and the CLI validates a file before it is stored. Policies
are kept in NATS KV with history (`llmops.guardrails.store`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.apikeys import TENANT_RE

Action = Literal["block", "redact", "flag"]
POLICY_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_POLICY = "default"
# The fallback for every tenant without a policy of the asked name.
BASELINE_TENANT = "default"

# Every entity the PII scanner knows (placeholders read <TYPE_n>).
PII_ENTITIES = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "NATIONAL_ID",
    "IP_ADDRESS",
    "URL",
    "DATE",
    "AGE",
    "PERSON",
    "LOCATION",
    "ADDRESS",
    "ORGANIZATION",
)
# Dates, ages, URLs, places and organisations only where a policy asks: they
# are rarely personal and redacting them would blunt most questions.
DEFAULT_PII_ENTITIES = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "NATIONAL_ID",
    "IP_ADDRESS",
    "PERSON",
    "ADDRESS",
)


class PolicyError(ValueError):
    """A policy file or record that cannot be used; the message names the field and why."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Only scanners that find spans (PII, secrets) can redact; the others block or flag.
    can_redact: ClassVar[bool] = False

    action: Action = "block"
    threshold: float = Field(0.5, gt=0, le=1, description="a score at or above it fires the rule")

    @field_validator("action")
    @classmethod
    def _action_possible(cls, action: str) -> str:
        if action == "redact" and not cls.can_redact:
            raise ValueError("this scanner can block or flag, not redact")
        return action


class HiddenTextRule(Rule):
    """Zero-width and invisible characters, homoglyphs. The text is normalised either way."""

    action: Action = "flag"


class PiiRule(Rule):
    can_redact = True
    action: Action = "redact"
    entities: tuple[str, ...] = DEFAULT_PII_ENTITIES
    restore: bool = Field(
        False, description="put the original values back into the answer for the caller"
    )

    @field_validator("entities")
    @classmethod
    def _known(cls, entities: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(entities) - set(PII_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; known: {list(PII_ENTITIES)}")
        if not entities:
            raise ValueError("name at least one entity")
        return entities


class InjectionRule(Rule):
    action: Action = "block"
    require_cue: bool = Field(
        False,
        description="fire on the classifier only where the text also reads like an "
        "instruction to the model (ignore, system prompt, you are now, ...): for retrieved "
        "passages and documents, which are not what the classifier learned from",
    )


class SecretsRule(Rule):
    can_redact = True
    action: Action = "redact"


class ToxicityRule(Rule):
    action: Action = "block"


class Topic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(
        min_length=3, max_length=2000, description="what the topic is about, in plain words"
    )


class TopicsRule(Rule):
    """Banned topics, or only allowed ones, by embedding similarity to their descriptions."""

    banned: tuple[Topic, ...] = ()
    allowed: tuple[Topic, ...] = Field(
        (), description="when set, text on none of these topics fires the rule"
    )
    threshold: float = Field(0.3, gt=0, le=1, description="cosine similarity to a topic")

    @model_validator(mode="after")
    def _some_topic(self) -> TopicsRule:
        if not self.banned and not self.allowed:
            raise ValueError("name banned or allowed topics")
        return self


class GroundednessRule(Rule):
    """Answer sentences with no support in the retrieved passages."""

    action: Action = "flag"
    min_support: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a sentence less similar than this to every passage is unsupported",
    )
    threshold: float = Field(
        0.5, gt=0, le=1, description="the share of unsupported sentences that fires the rule"
    )


class JsonSchemaRule(Rule):
    """The answer must be JSON valid against the request's schema (or this default one)."""

    schema_: dict[str, Any] | None = Field(None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            check_json_schema(schema)
        return schema


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError unless `schema` is a valid JSON Schema (its metaschema decides)."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from None


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def scanners(self) -> Mapping[str, Rule]:
        """The rules that are set, by scanner name, in the order scanners run.

        Asked on every request: computed once per (immutable) policy."""
        return self._scanners

    @cached_property
    def _scanners(self) -> Mapping[str, Rule]:
        return MappingProxyType({name: rule for name, rule in self if rule is not None})


class InputRules(Rules):
    hidden_text: HiddenTextRule | None = None
    secrets: SecretsRule | None = None
    pii: PiiRule | None = None
    prompt_injection: InjectionRule | None = None
    toxicity: ToxicityRule | None = None
    topics: TopicsRule | None = None


class ContextRules(Rules):
    hidden_text: HiddenTextRule | None = None
    prompt_injection: InjectionRule | None = None
    secrets: SecretsRule | None = None
    pii: PiiRule | None = None
    toxicity: ToxicityRule | None = None


class OutputRules(Rules):
    hidden_text: HiddenTextRule | None = None
    secrets: SecretsRule | None = None
    pii: PiiRule | None = None
    toxicity: ToxicityRule | None = None
    topics: TopicsRule | None = None
    groundedness: GroundednessRule | None = None
    json_schema: JsonSchemaRule | None = None


class DocumentRules(Rules):
    secrets: SecretsRule | None = None
    pii: PiiRule | None = None

    @model_validator(mode="after")
    def _redact_only(self) -> DocumentRules:
        for name, rule in self.scanners().items():
            if rule.action != "redact":
                raise ValueError(f"{name}: documents can only be redacted (action: redact)")
        return self


class Policy(BaseModel):
    """One named policy of one tenant. `version` and `updated_*` are set by the store."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tenant: str
    name: str = DEFAULT_POLICY
    description: str = ""
    fail_mode: Literal["open", "closed"] = Field(
        "open",
        description="guardrails down or over budget: open lets the request through, recorded "
        "as unscanned; closed refuses it with UNAVAILABLE",
    )
    time_budget_ms: float = Field(
        250.0, gt=0, le=60_000, description="the longest one check may take"
    )
    shadow: str | None = Field(
        None, description="another policy of the tenant run beside this one, changing nothing"
    )
    max_holdback_chars: int = Field(
        400, ge=32, le=10_000, description="the most answer text a streaming check holds back"
    )
    input: InputRules = InputRules()
    context: ContextRules = ContextRules()
    output: OutputRules = OutputRules()
    documents: DocumentRules = DocumentRules()
    version: int = 0
    updated_at: str = ""
    updated_by: str = ""

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str) -> str:
        if not TENANT_RE.match(tenant):
            raise ValueError("a tenant is 1-63 of a-z 0-9 _ - (starting with a letter or digit)")
        return tenant

    @field_validator("name", "shadow")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not POLICY_NAME_RE.match(name):
            raise ValueError(
                "a policy name is 1-63 of a-z 0-9 _ - (starting with a letter or digit)"
            )
        return name

    @model_validator(mode="after")
    def _not_own_shadow(self) -> Policy:
        if self.shadow == self.name:
            raise ValueError("a policy cannot be its own shadow")
        return self

    @property
    def policy_id(self) -> str:
        return f"{self.tenant}/{self.name}"

    @property
    def key(self) -> str:
        """Its key in the policies bucket."""
        return policy_key(self.tenant, self.name)

    def restores_pii(self) -> bool:
        return self.input.pii is not None and self.input.pii.restore

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data = {"tenant": self.tenant, "name": self.name, **data}
        text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return text


def policy_key(tenant: str, name: str) -> str:
    return f"{tenant}.{name}"


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A policy from YAML (or JSON); PolicyError names the field and the reason."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy is a mapping (tenant, name, input, output, ...)")
    for field in ("version", "updated_at", "updated_by"):
        data.pop(field, None)  # set by the store, never by a file
    return validate_policy(data, source)


def validate_policy(data: dict[str, Any], source: str = "policy") -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {_explain(exc)}") from None


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "policy"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (not a scanner or setting of this section)"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def default_policy() -> Policy:
    """What `llmops up` installs for tenant `default` when it has no policy yet."""
    return Policy(
        tenant=BASELINE_TENANT,
        name=DEFAULT_POLICY,
        description="PII redacted and restored, injections blocked, secrets redacted, "
        "answers checked for leaks and grounding",
        input=InputRules(
            hidden_text=HiddenTextRule(),
            secrets=SecretsRule(),
            pii=PiiRule(restore=True),
            prompt_injection=InjectionRule(),
        ),
        context=ContextRules(
            hidden_text=HiddenTextRule(), prompt_injection=InjectionRule(require_cue=True)
        ),
        output=OutputRules(secrets=SecretsRule(), pii=PiiRule(), groundedness=GroundednessRule()),
    )
