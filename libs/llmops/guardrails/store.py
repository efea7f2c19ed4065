"""Guardrail policies in NATS KV: every version kept, read from an in-memory mirror.

A policy lives at `<tenant>.<name>` in the policies bucket; each write is a new
immutable version (1, 2, 3, ...) and the bucket keeps the last 64, so an old
version can be shown, diffed or put back. Writers compare-and-set on the key's
last revision, so two writers at once never store the same version.

Resolution: a tenant's policy of a name, else the baseline tenant's (`default`)
policy of that name. The baseline is the fallback every tenant gets: a tenant
with no policies of its own runs `default/default`, seeded at start-up from
deploy/guardrails/policies/default.yaml.

A record that does not parse (written by hand, or by a newer version of this
code) is logged and skipped: the last good version of that policy stays in force.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from llmops.bus.topology import GUARDRAIL_POLICIES_BUCKET
from llmops.kvhistory import DELETED, kv_entries
from llmops.kvmirror import KvMirror
from llmops.logging import get_logger

from .policy import BASELINE_TENANT, DEFAULT_POLICY, Policy, PolicyError, parse_policy, policy_key

log = get_logger(__name__)
_MAX_ATTEMPTS = 50  # lost compare-and-set races before a write gives up


def _parse(entry: KeyValue.Entry) -> Policy | None:
    """The policy of one KV entry; None for a tombstone or a bad record (logged)."""
    if entry.operation in DELETED or not entry.value:
        return None
    try:
        return Policy.model_validate_json(entry.value)
    except ValidationError as exc:
        log.error(
            "guardrails.bad_policy_record", key=entry.key, revision=entry.revision, error=str(exc)
        )
        return None


class _Versions:
    """One key's history: its good versions, its last revision and whether it is deleted now."""

    def __init__(self, entries: list[KeyValue.Entry]) -> None:
        self.policies = [p for p in map(_parse, entries) if p is not None]
        self.revision = entries[-1].revision if entries else 0
        self.deleted = bool(entries) and entries[-1].operation in DELETED

    @property
    def current(self) -> Policy | None:
        return None if self.deleted or not self.policies else self.policies[-1]

    @property
    def last_version(self) -> int:
        return max((p.version for p in self.policies), default=0)


class PolicyStore:
    """Reads and writes policies; the CLI and the seed use it, services read a PolicyMirror.

    Reads go through a pull consumer that knows how many entries to expect, not nats-py's
    KV watch: a watch can signal "that was all" before entries the server already pushed
    have been handled (seen under load), and a write's compare-and-set must see the last
    revision, a history all its versions.
    """

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext) -> PolicyStore:
        return cls(await js.key_value(GUARDRAIL_POLICIES_BUCKET), js)

    async def _entries(self, keys: str, last_only: bool) -> list[KeyValue.Entry]:
        """The entries of the keys matching `keys` (a KV key filter): every one, or each key's
        last, in stream order."""
        return await kv_entries(self._js, GUARDRAIL_POLICIES_BUCKET, keys, last_only=last_only)

    async def _versions(self, key: str) -> _Versions:
        return _Versions(await self._entries(key, last_only=False))

    async def put(self, policy: Policy, by: str) -> Policy:
        """Store `policy` as the next version of its tenant and name; returns what was stored."""
        stored = await self._write(policy, by, only_new=False)
        assert stored is not None  # only a create-only write can find the key taken
        return stored

    async def create(self, policy: Policy, by: str) -> Policy | None:
        """Store `policy` as version 1 unless it ever existed (deleted counts); None if it did."""
        return await self._write(policy, by, only_new=True)

    async def _write(self, policy: Policy, by: str, only_new: bool) -> Policy | None:
        await self._refuse_shadow_loop(policy)
        for _ in range(_MAX_ATTEMPTS):
            versions = await self._versions(policy.key)
            if only_new and versions.revision:
                return None
            stored = policy.model_copy(
                update={
                    "version": versions.last_version + 1,
                    "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "updated_by": by,
                }
            )
            value = stored.model_dump_json(by_alias=True).encode()
            try:
                if versions.revision:
                    await self._kv.update(policy.key, value, last=versions.revision)
                else:
                    await self._kv.create(policy.key, value)
            except KeyWrongLastSequenceError:
                if only_new:
                    return None
                await asyncio.sleep(0)  # another writer won this version: read again
                continue
            return stored
        raise RuntimeError(f"{policy.policy_id}: {_MAX_ATTEMPTS} concurrent writes lost the race")

    async def _refuse_shadow_loop(self, policy: Policy) -> None:
        """A shadow chain that leads back to `policy` would run policies in a circle."""
        seen = {policy.name}
        shadow = policy.shadow
        while shadow is not None:
            if shadow in seen:
                raise PolicyError(
                    f"shadow: {policy.tenant}/{shadow} is (through its shadows) "
                    f"in shadow of {policy.name}: a loop"
                )
            seen.add(shadow)
            other = await self.get(policy.tenant, shadow)
            shadow = other.shadow if other is not None else None

    async def get(self, tenant: str, name: str, version: int | None = None) -> Policy | None:
        """The current version (the last good one), or a given past version still in history."""
        versions = await self._versions(policy_key(tenant, name))
        if version is None:
            return versions.current
        return next((p for p in versions.policies if p.version == version), None)

    async def history(self, tenant: str, name: str) -> list[Policy]:
        """Every version still kept, oldest first (a deletion hides none of them)."""
        return (await self._versions(policy_key(tenant, name))).policies

    async def list(self, tenant: str | None = None) -> list[Policy]:
        """The current version of every policy (of one tenant), by tenant and name."""
        found: list[Policy] = []
        bad: list[str] = []
        for entry in await self._entries(f"{tenant}.*" if tenant else ">", last_only=True):
            if entry.operation in DELETED:
                continue
            policy = _parse(entry)
            if policy is None:
                bad.append(entry.key)
            else:
                found.append(policy)
        for key in bad:  # the last good version stays in force
            recovered = (await self._versions(key)).current
            if recovered is not None:
                found.append(recovered)
        return sorted(found, key=lambda p: (p.tenant, p.name))

    async def delete(self, tenant: str, name: str) -> None:
        """A tombstone: the policy stops applying; its history stays."""
        await self._kv.delete(policy_key(tenant, name))


class PolicyMirror(KvMirror[Policy]):
    """Every current policy in memory, for the hot path (read-only: write with PolicyStore)."""

    def __init__(self) -> None:
        super().__init__(GUARDRAIL_POLICIES_BUCKET, Policy.model_validate_json)

    async def start(self, js: JetStreamContext) -> None:
        """Load and follow the bucket; a key whose last record is bad gets its last good version.

        (The watch delivers only each key's last record; a bad record arriving later is
        skipped by KvMirror and leaves the version before it in place.)
        """
        await super().start(js)
        assert self._kv is not None
        store = PolicyStore(self._kv, js)
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return
        for key in keys:
            if key in self.items:
                continue
            tenant, name = key.split(".", 1)
            recovered = await store.get(tenant, name)
            if recovered is not None and key not in self.items:
                self.items[key] = recovered

    def policy(self, tenant: str, name: str) -> Policy | None:
        """Exactly this tenant's policy of this name."""
        return self.items.get(policy_key(tenant, name))

    def resolve(self, tenant: str, name: str = DEFAULT_POLICY) -> Policy | None:
        """The tenant's policy of this name, else the baseline tenant's, else None."""
        return self.policy(tenant, name) or self.policy(BASELINE_TENANT, name)


async def seed_policy(js: JetStreamContext, path: Path, name: str) -> bool:
    """Store the baseline tenant's policy `name` from `path` unless it ever existed.

    A deleted seed stays deleted (an operator's choice); of several replicas
    starting at once exactly one stores it. Returns whether this call stored it.
    """
    policy = parse_policy(await asyncio.to_thread(path.read_text), str(path))
    if policy.policy_id != f"{BASELINE_TENANT}/{name}":
        raise PolicyError(f"{path}: the seed must be {BASELINE_TENANT}/{name}")
    store = await PolicyStore.open(js)
    return await store.create(policy, by="seed") is not None


async def seed_default_policy(js: JetStreamContext, path: Path) -> bool:
    """Store the baseline policy (`default/default`) from `path` unless it ever existed."""
    return await seed_policy(js, path, DEFAULT_POLICY)
