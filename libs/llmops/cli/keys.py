"""`llmops keys` and `llmops tenants`: API keys and tenant settings, straight in NATS KV."""

from __future__ import annotations

import time

import nats
from rich.console import Console
from rich.table import Table

from llmops.apikeys import KeyAdmin, Limits, TenantRecord


async def create_key(nats_url: str, tenant: str, name: str, rpm: int, tpm: int) -> str:
    nc = await nats.connect(nats_url, name="llmops-cli")
    try:
        limits = Limits(requests_per_minute=rpm, tokens_per_minute=tpm)
        return (await KeyAdmin(nc.jetstream()).create_key(tenant, name, limits)).key
    finally:
        await nc.close()


async def list_keys(nats_url: str, tenant: str | None) -> None:
    nc = await nats.connect(nats_url, name="llmops-cli")
    try:
        records = await KeyAdmin(nc.jetstream()).list_keys(tenant)
    finally:
        await nc.close()
    table = Table("id", "tenant", "name", "created", "req/min", "tokens/min", "state")
    for r in records:
        table.add_row(
            r.key_id,
            r.tenant,
            r.name,
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at)),
            str(r.limits.requests_per_minute or "-"),
            str(r.limits.tokens_per_minute or "-"),
            "revoked" if r.revoked else "active",
        )
    Console().print(table)


async def revoke_key(nats_url: str, key_id: str) -> None:
    nc = await nats.connect(nats_url, name="llmops-cli")
    try:
        await KeyAdmin(nc.jetstream()).revoke_key(key_id)
    finally:
        await nc.close()


async def set_tenant(
    nats_url: str, tenant: str, exact_cache: bool | None, semantic_cache: bool | None
) -> TenantRecord:
    nc = await nats.connect(nats_url, name="llmops-cli")
    try:
        return await KeyAdmin(nc.jetstream()).set_tenant(
            tenant, exact_cache=exact_cache, semantic_cache=semantic_cache
        )
    finally:
        await nc.close()
