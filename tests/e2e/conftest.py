"""Fixtures of the gateway's end-to-end tests (the platform itself is tests/conftest.py's)."""

from __future__ import annotations

import asyncio

import nats
import pytest

from llmops.guardrails.policy import BASELINE_TENANT, Policy, default_policy
from llmops.guardrails.store import PolicyStore
from tests.e2e.gateway_support import FACT_DOC, INPUT_ONLY, Tenant, ingest, new_tenant
from tests.support import Platform


@pytest.fixture
async def falcon(platform: Platform) -> Tenant:
    """A tenant of its own whose only document is the Falcon release notes."""
    tenant = await new_tenant(platform)
    await ingest(platform, tenant.name, "falcon-notes", FACT_DOC)
    return tenant


@pytest.fixture(scope="session")
async def input_only(platform: Platform) -> str:
    """A baseline policy that checks questions only, so answers stream piece by piece
    (the default one holds each sentence back until its output check passed)."""
    nc = await nats.connect(platform.nats_url)
    try:
        store = await PolicyStore.open(nc.jetstream())
        policy = Policy(tenant=BASELINE_TENANT, name=INPUT_ONLY, input=default_policy().input)
        await store.put(policy, "e2e")
    finally:
        await nc.close()
    await asyncio.sleep(1.0)  # every gateway follows the policies within a second
    return INPUT_ONLY
