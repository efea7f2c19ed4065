"""API keys and tenants, kept in NATS KV so every gateway replica sees the same ones.

A key reads `llmops-<id>-<secret>`: the id is public (events, logs, limits
are keyed by it), the secret is 32 random bytes. Only the secret's SHA-256
is stored: a high-entropy secret needs no slow password hash, and a leaked
bucket gives no usable key. The CLI writes records (`llmops keys create`);
the gateway watches the buckets and authenticates from memory, with no round
trip per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from llmops import ids
from llmops.bus.topology import API_KEYS_BUCKET, TENANTS_BUCKET
from llmops.kvmirror import model_mirror

DEFAULT_TENANT = "default"
_KEY_ID = r"[0-9a-f]{12}"  # the public part of a key
KEY_ID_RE = re.compile(rf"^{_KEY_ID}$")
_KEY_RE = re.compile(rf"^llmops-({_KEY_ID})-([A-Za-z0-9_-]{{43}})$")
# Their older home, still imported from here; the rule is llmops.ids's.
TENANT_RE = ids.TENANT_RE
check_tenant = ids.check_tenant


class Limits(BaseModel):
    """Per-key rate limits; 0 means unlimited."""

    model_config = ConfigDict(frozen=True)

    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)


class KeyRecord(BaseModel):
    """What the keys bucket holds for one key (never the key itself)."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    tenant: str
    name: str = ""
    secret_sha256: str
    created_at: float
    revoked: bool = False
    limits: Limits = Limits()
    # What the key's analytics SQL sees: its own tenant's rows, or every tenant's
    # (finance, platform owners: `llmops keys create --all-tenants`).
    analytics_scope: Literal["tenant", "all"] = "tenant"
    # May change the tenant's prompt registry (push, label, rollback, split) over the
    # gateway's admin API (`llmops keys create --prompt-admin`); reading needs no flag.
    prompt_admin: bool = False


class TenantRecord(BaseModel):
    """A tenant's settings: which caches its requests may use."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    exact_cache: bool = True
    semantic_cache: bool = True
    created_at: float = 0.0
    limits: Limits = Limits()  # per-minute quotas of all the tenant's keys together


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    record: KeyRecord


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer_key(authorization: str | None) -> str:
    """The key of an `Authorization: Bearer <key>` value ('' when absent or malformed)."""
    if not authorization:
        return ""
    scheme, _, key = authorization.strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY_RE.match(key.strip())
    return (match.group(1), match.group(2)) if match else None


class KeyAdmin:
    """Create, list and revoke keys and tenants (the CLI's side)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def _keys(self) -> KeyValue:
        return await self._js.key_value(API_KEYS_BUCKET)

    async def _tenants(self) -> KeyValue:
        return await self._js.key_value(TENANTS_BUCKET)

    async def ensure_tenant(self, tenant: str) -> TenantRecord:
        kv = await self._tenants()
        try:
            entry = await kv.get(check_tenant(tenant))
            assert entry.value is not None
            return TenantRecord.model_validate_json(entry.value)
        except KeyNotFoundError:
            record = TenantRecord(tenant=tenant, created_at=time.time())
            with contextlib.suppress(Exception):  # created meanwhile by someone else: fine
                await kv.create(tenant, record.model_dump_json().encode())
            return record

    async def set_tenant(
        self,
        tenant: str,
        *,
        exact_cache: bool | None = None,
        semantic_cache: bool | None = None,
        limits: Limits | None = None,
    ) -> TenantRecord:
        record = await self.ensure_tenant(tenant)
        changes = {
            k: v
            for k, v in {
                "exact_cache": exact_cache,
                "semantic_cache": semantic_cache,
                "limits": limits,
            }.items()
            if v is not None
        }
        record = record.model_copy(update=changes)
        await (await self._tenants()).put(tenant, record.model_dump_json().encode())
        return record

    async def create_key(
        self,
        tenant: str,
        name: str = "",
        limits: Limits | None = None,
        *,
        all_tenants_analytics: bool = False,
        prompt_admin: bool = False,
    ) -> NewKey:
        await self.ensure_tenant(tenant)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = KeyRecord(
            key_id=key_id,
            tenant=tenant,
            name=name,
            secret_sha256=_digest(secret),
            created_at=time.time(),
            limits=limits or Limits(),
            analytics_scope="all" if all_tenants_analytics else "tenant",
            prompt_admin=prompt_admin,
        )
        await (await self._keys()).create(key_id, record.model_dump_json().encode())
        return NewKey(f"llmops-{key_id}-{secret}", record)

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        kv = await self._keys()
        try:
            ids = await kv.keys()
        except NoKeysError:  # an empty bucket
            return []
        records = []
        for key_id in ids:
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key_id)
                if entry.value:
                    record = KeyRecord.model_validate_json(entry.value)
                    if tenant is None or record.tenant == tenant:
                        records.append(record)
        return sorted(records, key=lambda r: r.created_at)

    async def revoke_key(self, key_id: str) -> KeyRecord:
        kv = await self._keys()
        try:
            entry = await kv.get(key_id)
        except KeyNotFoundError:
            raise ValueError(f"no API key with id {key_id!r}") from None
        assert entry.value is not None
        record = KeyRecord.model_validate_json(entry.value).model_copy(update={"revoked": True})
        await kv.put(key_id, record.model_dump_json().encode())
        return record


class KeyDirectory:
    """The in-memory view of keys and tenants, kept current by KV watches."""

    def __init__(self) -> None:
        self._keys = model_mirror(API_KEYS_BUCKET, KeyRecord)
        self._tenants = model_mirror(TENANTS_BUCKET, TenantRecord)

    async def start(self, js: JetStreamContext) -> None:
        await self._keys.start(js)
        await self._tenants.start(js)

    def authenticate(self, key: str) -> KeyRecord | None:
        """The record of a valid, unrevoked key; None for anything else."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        record = self._keys.get(parsed[0])
        if record is None or record.revoked:
            return None
        if not hmac.compare_digest(record.secret_sha256, _digest(parsed[1])):
            return None
        return record

    def authenticate_call(self, metadata: Iterable[tuple[str, object]] | None) -> KeyRecord | None:
        """The key record of a gRPC call's `authorization: Bearer <key>` metadata."""
        for name, value in metadata or ():
            if name == "authorization" and isinstance(value, str):
                return self.authenticate(bearer_key(value))
        return None

    def tenant(self, tenant: str) -> TenantRecord:
        return self._tenants.get(tenant) or TenantRecord(tenant=tenant)

    def record(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def stop(self) -> None:
        await self._keys.stop()
        await self._tenants.stop()
