"""Local API keys: `llmops up` makes one for tenant `default`; the CLI makes others on demand.

Kept with mode 0600 like an SSH key, `<data dir>/api-key` for `default`,
`<data dir>/keys/<tenant>` for the others and `<data dir>/analyst-key` for
`llmops sql` over every tenant: the local demo needs no set-up, and a key
never appears in logs or on the screen.
"""

from __future__ import annotations

import os
from pathlib import Path

import nats
from nats.js.errors import KeyNotFoundError

from llmops.apikeys import DEFAULT_TENANT, KeyAdmin, KeyRecord, parse_key
from llmops.bus.topology import API_KEYS_BUCKET
from llmops.settings import nats_servers

KEY_FILE = "api-key"
ANALYST_KEY_FILE = "analyst-key"


def key_path(data_dir: Path, tenant: str = DEFAULT_TENANT, *, analyst: bool = False) -> Path:
    if analyst:
        return data_dir / ANALYST_KEY_FILE
    return data_dir / KEY_FILE if tenant == DEFAULT_TENANT else data_dir / "keys" / tenant


def read_local_key(
    data_dir: Path, tenant: str = DEFAULT_TENANT, *, analyst: bool = False
) -> str | None:
    path = key_path(data_dir, tenant, analyst=analyst)
    return path.read_text().strip() if path.exists() else None


async def ensure_local_key(
    nats_url: str, data_dir: Path, tenant: str = DEFAULT_TENANT, *, analyst: bool = False
) -> str:
    """The local key (a tenant's, or the all-tenants analyst key): kept if NATS still knows
    it, else a new one is made and saved."""
    nc = await nats.connect(nats_servers(nats_url), name="llmops-cli")
    try:
        js = nc.jetstream()
        existing = read_local_key(data_dir, tenant, analyst=analyst)
        parsed = parse_key(existing) if existing else None
        if parsed is not None:
            kv = await js.key_value(API_KEYS_BUCKET)
            try:
                entry = await kv.get(parsed[0])
                if entry.value and not KeyRecord.model_validate_json(entry.value).revoked:
                    return str(existing)
            except KeyNotFoundError:
                pass
        created = await KeyAdmin(js).create_key(
            tenant, name="local (llmops CLI)", all_tenants_analytics=analyst
        )
        path = key_path(data_dir, tenant, analyst=analyst)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(created.key + "\n")
        return created.key
    finally:
        await nc.close()
