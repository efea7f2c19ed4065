"""`llmops keys` and `llmops tenants`: API keys and tenant settings, straight in NATS KV."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import nats
from rich.console import Console
from rich.table import Column, Table

from llmops.apikeys import KeyAdmin, Limits, TenantRecord
from llmops.settings import nats_servers


@contextlib.asynccontextmanager
async def _admin(nats_url: str) -> AsyncIterator[KeyAdmin]:
    nc = await nats.connect(nats_servers(nats_url), name="llmops-cli")
    try:
        yield KeyAdmin(nc.jetstream())
    finally:
        await nc.close()


async def create_key(
    nats_url: str,
    tenant: str,
    name: str,
    rpm: int,
    tpm: int,
    all_tenants: bool,
    prompt_admin: bool = False,
) -> str:
    limits = Limits(requests_per_minute=rpm, tokens_per_minute=tpm)
    async with _admin(nats_url) as admin:
        created = await admin.create_key(
            tenant, name, limits, all_tenants_analytics=all_tenants, prompt_admin=prompt_admin
        )
        return created.key


async def list_keys(nats_url: str, tenant: str | None) -> None:
    async with _admin(nats_url) as admin:
        records = await admin.list_keys(tenant)
    table = Table(
        "tenant", "name", "created", "req/min", "tokens/min", "SQL sees", "prompts", "state"
    )
    table.columns.insert(0, Column("id", no_wrap=True, min_width=12))  # never cut: it is the handle
    for r in records:
        table.add_row(
            r.key_id,
            r.tenant,
            r.name,
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at)),
            str(r.limits.requests_per_minute or "-"),
            str(r.limits.tokens_per_minute or "-"),
            "all tenants" if r.analytics_scope == "all" else "its tenant",
            "admin" if r.prompt_admin else "read",
            "revoked" if r.revoked else "active",
        )
    Console().print(table)


async def revoke_key(nats_url: str, key_id: str) -> None:
    async with _admin(nats_url) as admin:
        await admin.revoke_key(key_id)


async def set_tenant(
    nats_url: str,
    tenant: str,
    exact_cache: bool | None,
    semantic_cache: bool | None,
    limits: Limits | None,
) -> TenantRecord:
    async with _admin(nats_url) as admin:
        return await admin.set_tenant(
            tenant, exact_cache=exact_cache, semantic_cache=semantic_cache, limits=limits
        )
