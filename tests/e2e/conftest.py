"""Fixtures of the gateway's end-to-end tests (the platform itself is tests/conftest.py's)."""

from __future__ import annotations

import pytest

from tests.e2e.gateway_support import FACT_DOC, Tenant, ingest, new_tenant
from tests.support import Platform


@pytest.fixture
async def falcon(platform: Platform) -> Tenant:
    """A tenant of its own whose only document is the Falcon release notes."""
    tenant = await new_tenant(platform)
    await ingest(platform, tenant.name, "falcon-notes", FACT_DOC)
    return tenant
