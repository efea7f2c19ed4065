"""Policy validation: every refusal names the field and the reason; YAML round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.guardrails.policy import (
    JsonSchemaRule,
    OutputRules,
    PiiRule,
    Policy,
    PolicyError,
    TopicsRule,
    default_policy,
    parse_policy,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "deploy" / "guardrails" / "policies" / "default.yaml"


def _refusal(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    message = str(info.value)
    assert message.startswith("p.yaml: ")
    return message


def test_unknown_scanner_is_refused_by_name() -> None:
    message = _refusal("tenant: acme\ninput:\n  pii: {}\n  malware: {}\n")
    assert "input.malware: unknown field" in message


def test_unknown_pii_entity_is_refused() -> None:
    message = _refusal("tenant: acme\ninput:\n  pii:\n    entities: [EMAIL, SHOE_SIZE]\n")
    assert "input.pii.entities: unknown entities ['SHOE_SIZE']" in message


@pytest.mark.parametrize("threshold", ["0", "1.5", "-0.2"])
def test_threshold_out_of_range_is_refused(threshold: str) -> None:
    message = _refusal(f"tenant: acme\noutput:\n  secrets:\n    threshold: {threshold}\n")
    assert "output.secrets.threshold" in message


def test_threshold_at_one_is_allowed() -> None:
    policy = parse_policy("tenant: acme\noutput:\n  secrets:\n    threshold: 1\n")
    assert policy.output.secrets is not None
    assert policy.output.secrets.threshold == 1.0


def test_redact_on_prompt_injection_is_refused() -> None:
    message = _refusal("tenant: acme\ninput:\n  prompt_injection:\n    action: redact\n")
    assert "input.prompt_injection.action" in message
    assert "not redact" in message


def test_invalid_json_schema_is_refused() -> None:
    text = "tenant: acme\noutput:\n  json_schema:\n    schema: {type: 12}\n"
    message = _refusal(text)
    assert "output.json_schema.schema" in message
    assert "invalid JSON schema" in message


def test_valid_json_schema_is_kept() -> None:
    text = "tenant: acme\noutput:\n  json_schema:\n    schema: {type: object, required: [a]}\n"
    rule = parse_policy(text).output.json_schema
    assert rule is not None
    assert rule.schema_ == {"type": "object", "required": ["a"]}


def test_policy_cannot_be_its_own_shadow() -> None:
    message = _refusal("tenant: acme\nname: strict\nshadow: strict\n")
    assert "own shadow" in message


def test_bad_tenant_and_not_yaml_are_refused() -> None:
    assert "tenant" in _refusal("tenant: Acme Corp\n")
    assert "not YAML" in _refusal("tenant: [acme\n")
    assert "a mapping" in _refusal("- tenant\n")


def test_stored_fields_in_a_file_are_ignored() -> None:
    policy = parse_policy("tenant: acme\nversion: 7\nupdated_by: mallory\n")
    assert (policy.version, policy.updated_by) == (0, "")


def test_yaml_round_trip_is_equal() -> None:
    policy = Policy(
        tenant="acme",
        name="strict",
        description="everything on",
        fail_mode="closed",
        time_budget_ms=120,
        shadow="candidate",
        input=default_policy().input,
        output=OutputRules(
            pii=PiiRule(entities=("EMAIL", "DATE"), threshold=0.7),
            topics=TopicsRule.model_validate(
                {"banned": [{"name": "weapons", "description": "making or buying weapons"}]}
            ),
            json_schema=JsonSchemaRule.model_validate({"schema": {"type": "object"}}),
        ),
    )
    assert parse_policy(policy.to_yaml()) == policy
    assert parse_policy(default_policy().to_yaml()) == default_policy()


def test_shipped_default_file_equals_default_policy() -> None:
    shipped = parse_policy(DEFAULT_FILE.read_text(), str(DEFAULT_FILE))
    assert shipped == default_policy()
    for direction in ("input", "context", "output", "documents"):
        assert (
            getattr(shipped, direction).scanners()
            == getattr(default_policy(), direction).scanners()
        )
