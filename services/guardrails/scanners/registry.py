"""Which scanner serves which rule, built once per policy version from the loaded models.

Building can be costly (topic descriptions are embedded), so a policy's
scanners are built on first use of each version and kept; the next version
builds anew, the old one is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardrails.models import Models
from guardrails.scanners.base import Scanner
from guardrails.scanners.groundedness import GroundednessScanner
from guardrails.scanners.hidden_text import HiddenTextScanner
from guardrails.scanners.injection import InjectionScanner
from guardrails.scanners.json_schema import JsonSchemaScanner
from guardrails.scanners.pii import PiiScanner
from guardrails.scanners.secrets import SecretsScanner
from guardrails.scanners.topics import TopicsScanner
from guardrails.scanners.toxicity import ToxicityScanner
from llmops.guardrails import policy as p
from llmops.v1 import guardrails_pb2

DIRECTIONS = {
    guardrails_pb2.DIRECTION_INPUT: "input",
    guardrails_pb2.DIRECTION_CONTEXT: "context",
    guardrails_pb2.DIRECTION_OUTPUT: "output",
    guardrails_pb2.DIRECTION_DOCUMENT: "documents",
}


@dataclass(frozen=True, slots=True)
class RuleRun:
    name: str
    rule: p.Rule
    scanner: Scanner


def build_scanner(name: str, rule: p.Rule, models: Models) -> Scanner:
    match rule:
        case p.HiddenTextRule():
            return HiddenTextScanner(rule)
        case p.PiiRule():
            return PiiScanner(rule, models.ner)
        case p.InjectionRule():
            return InjectionScanner(rule, models.injection)
        case p.SecretsRule():
            return SecretsScanner(rule)
        case p.ToxicityRule():
            return ToxicityScanner(rule, models.toxicity)
        case p.TopicsRule():
            return TopicsScanner(rule, models.encoder)
        case p.GroundednessRule():
            return GroundednessScanner(rule, models.encoder, models.passage_vectors)
        case p.JsonSchemaRule():
            return JsonSchemaScanner(rule)
    raise ValueError(f"no scanner for {name}")


class CompiledPolicy:
    """A policy's scanners per direction, ready to run."""

    def __init__(self, policy: p.Policy, models: Models) -> None:
        self.policy = policy
        self.runs: dict[str, list[RuleRun]] = {}
        for direction in DIRECTIONS.values():
            rules: p.Rules = getattr(policy, direction)
            self.runs[direction] = [
                RuleRun(name, rule, build_scanner(name, rule, models))
                for name, rule in rules.scanners().items()
            ]


class ScannerCache:
    """CompiledPolicy per policy id, rebuilt when the version changes."""

    def __init__(self, models: Models) -> None:
        self._models = models
        self._compiled: dict[str, CompiledPolicy] = {}

    def compiled(self, policy: p.Policy) -> CompiledPolicy:
        found = self._compiled.get(policy.policy_id)
        if found is None or (found.policy is not policy and found.policy != policy):
            found = self._compiled[policy.policy_id] = CompiledPolicy(policy, self._models)
        return found
