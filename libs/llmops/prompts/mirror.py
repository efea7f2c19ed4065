"""Every prompt version and label in memory, for the gateway's hot path.

A watch keeps the copy current: a label move, a rollback or a new split is
served within a moment by every replica, with no restart and no round trip
per request. Write with PromptStore; this copy is read-only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from nats.js.kv import KeyValue

from llmops.bus.topology import PROMPTS_BUCKET
from llmops.kvmirror import KvMirror

from .catalog import Catalog, Record, parse_record
from .model import Arm, PromptVersion


@dataclass(frozen=True)
class Resolved:
    prompt: PromptVersion
    label: str  # "" when the request named a version
    arm: str  # "v<N>" when the label is split between versions, else ""


def choose_arm(arms: Sequence[Arm], sticky_key: str) -> Arm:
    """One arm by weight, the same one every time for the same key.

    The key's sha256 picks a point in [0, total weight); arms take consecutive
    ranges in the order given (the store keeps them by version), so raising one
    arm's weight moves only the users in the range it gains.
    """
    if not arms:
        raise ValueError("choose_arm: no arms")
    total = sum(arm.weight for arm in arms)
    point = int.from_bytes(hashlib.sha256(sticky_key.encode()).digest()[:8], "big") % total
    for arm in arms[:-1]:
        point -= arm.weight
        if point < 0:
            return arm
    return arms[-1]


class PromptMirror(KvMirror[Record]):
    def __init__(self) -> None:
        super().__init__(PROMPTS_BUCKET, parse_record)
        self.catalog = Catalog()

    def _apply(self, entry: KeyValue.Entry) -> None:
        super()._apply(entry)
        self.catalog.apply(entry.key, self.items.get(entry.key))

    def resolve(
        self,
        tenant: str,
        name: str,
        *,
        version: int | None = None,
        label: str = "",
        user: str = "",
        request_id: str = "",
    ) -> Resolved:
        """The version a request gets. A split label picks by a hash of tenant, prompt,
        label and user (no user: the request id, so each request draws anew).

        Raises PromptNotFound (unknown prompt, version or label) or PromptError.
        """
        target = self.catalog.target(tenant, name, version=version, label=label)
        arm, arm_name = target.arms[0], ""
        if len(target.arms) > 1:
            sticky_key = f"{tenant}/{target.name}/{target.label}/{user or request_id}"
            arm = choose_arm(target.arms, sticky_key)
            arm_name = f"v{arm.version}"
        prompt = self.catalog.version(target.owner, target.name, arm.version)
        return Resolved(prompt=prompt, label=target.label, arm=arm_name)
