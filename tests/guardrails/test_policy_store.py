"""The policy store and mirror on a real nats-server: versions, history, races, fallback, seed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from llmops.bus.topology import GUARDRAIL_POLICIES_BUCKET
from llmops.guardrails.policy import (
    BASELINE_TENANT,
    DEFAULT_POLICY,
    Policy,
    PolicyError,
    default_policy,
    policy_key,
)
from llmops.guardrails.store import PolicyMirror, PolicyStore, seed_default_policy

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "deploy" / "guardrails" / "policies" / "default.yaml"


def _tenant() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def _policy(tenant: str, name: str = "default", threshold: float = 0.5, **extra: object) -> Policy:
    return Policy.model_validate(
        {"tenant": tenant, "name": name, "input": {"pii": {"threshold": threshold}}, **extra}
    )


@pytest.fixture(scope="module")
async def store(js: JetStreamContext) -> PolicyStore:
    return await PolicyStore.open(js)


@pytest.fixture
async def mirror(js: JetStreamContext) -> AsyncIterator[PolicyMirror]:
    m = PolicyMirror()
    await m.start(js)
    yield m
    await m.stop()


async def _until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    """Return once `check()` is true; fail after `within_s`."""
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < within_s, "condition not reached"
        await asyncio.sleep(0.005)


async def test_versions_increase_and_history_keeps_them(store: PolicyStore) -> None:
    tenant = _tenant()
    given = [_policy(tenant, threshold=t) for t in (0.5, 0.6, 0.7)]
    stored = [await store.put(p, by="k1") for p in given]
    assert all(p.version == 0 for p in given)  # stored as copies
    assert [p.version for p in stored] == [1, 2, 3]
    assert all(p.updated_by == "k1" and p.updated_at.endswith("+00:00") for p in stored)

    history = await store.history(tenant, "default")
    assert [p.version for p in history] == [1, 2, 3]
    assert [p.input.pii.threshold for p in history if p.input.pii] == [0.5, 0.6, 0.7]

    current = await store.get(tenant, "default")
    old = await store.get(tenant, "default", version=1)
    assert current is not None and current.version == 3
    assert old is not None and old.input.pii is not None and old.input.pii.threshold == 0.5
    assert await store.get(tenant, "default", version=9) is None
    assert await store.get(tenant, "other") is None
    assert await store.history(tenant, "other") == []


async def test_concurrent_writers_get_distinct_versions(store: PolicyStore) -> None:
    tenant = _tenant()
    stored = await asyncio.gather(
        *(store.put(_policy(tenant, threshold=0.1 * (i + 1)), by=f"w{i}") for i in range(5))
    )
    assert sorted(p.version for p in stored) == [1, 2, 3, 4, 5]
    history = await store.history(tenant, "default")
    assert [p.version for p in history] == [1, 2, 3, 4, 5]
    # each stored version is exactly what its writer was told it stored
    assert {(p.version, p.updated_by) for p in history} == {
        (p.version, p.updated_by) for p in stored
    }


async def test_list_per_tenant_and_delete_keeps_history(store: PolicyStore) -> None:
    a, b = sorted([_tenant(), _tenant()])
    await store.put(_policy(a, "default"), by="cli")
    await store.put(_policy(a, "strict", threshold=0.9), by="cli")
    await store.put(_policy(a, "strict", threshold=0.8), by="cli")
    await store.put(_policy(b, "default"), by="cli")

    assert [(p.name, p.version) for p in await store.list(a)] == [("default", 1), ("strict", 2)]
    assert [p.policy_id for p in await store.list(b)] == [f"{b}/default"]
    everyone = {p.policy_id for p in await store.list(None)}
    assert {f"{a}/default", f"{a}/strict", f"{b}/default"} <= everyone
    assert await store.list(_tenant()) == []

    await store.delete(a, "strict")
    assert await store.get(a, "strict") is None
    assert [p.name for p in await store.list(a)] == ["default"]
    assert [p.version for p in await store.history(a, "strict")] == [1, 2]
    again = await store.put(_policy(a, "strict"), by="cli")
    assert again.version == 3  # a version number is never reused


async def test_a_shadow_loop_is_refused(store: PolicyStore) -> None:
    tenant = _tenant()
    # a shadow that does not exist yet is allowed
    await store.put(_policy(tenant, "a", shadow="b"), by="cli")
    await store.put(_policy(tenant, "c", shadow="a"), by="cli")
    with pytest.raises(PolicyError, match="loop"):
        await store.put(_policy(tenant, "b", shadow="a"), by="cli")
    with pytest.raises(PolicyError, match="loop"):
        await store.put(_policy(tenant, "b", shadow="c"), by="cli")  # b -> c -> a -> b
    assert await store.get(tenant, "b") is None
    assert (await store.put(_policy(tenant, "b"), by="cli")).version == 1


async def test_resolve_falls_back_to_the_baseline_tenant(
    store: PolicyStore, mirror: PolicyMirror
) -> None:
    tenant, name = _tenant(), f"n{uuid.uuid4().hex[:8]}"
    baseline = await store.put(_policy(BASELINE_TENANT, name), by="cli")
    await _until(lambda: mirror.policy(BASELINE_TENANT, name) is not None)

    assert mirror.policy(tenant, name) is None
    assert mirror.resolve(tenant, name) == baseline
    own = await store.put(_policy(tenant, name, threshold=0.9), by="cli")
    await _until(lambda: mirror.policy(tenant, name) is not None)
    assert mirror.resolve(tenant, name) == own
    assert mirror.resolve(tenant, "nothing-by-this-name") is None


async def test_mirror_sees_a_change_within_a_second(
    store: PolicyStore, mirror: PolicyMirror
) -> None:
    tenant = _tenant()
    await store.put(_policy(tenant, threshold=0.5), by="cli")
    await _until(lambda: mirror.policy(tenant, "default") is not None)

    started = time.perf_counter()
    stored = await store.put(_policy(tenant, threshold=0.75), by="cli")
    await _until(lambda: (p := mirror.policy(tenant, "default")) is not None and p.version == 2)
    assert time.perf_counter() - started < 1.0
    assert mirror.policy(tenant, "default") == stored

    await store.delete(tenant, "default")
    await _until(lambda: mirror.policy(tenant, "default") is None, within_s=1.0)


async def test_a_bad_record_leaves_the_previous_policy_in_force(
    js: JetStreamContext, store: PolicyStore, mirror: PolicyMirror
) -> None:
    tenant = _tenant()
    good = await store.put(_policy(tenant, threshold=0.6), by="cli")
    await _until(lambda: mirror.policy(tenant, "default") is not None)

    kv = await js.key_value(GUARDRAIL_POLICIES_BUCKET)
    await kv.put(policy_key(tenant, "default"), b'{"tenant": "x", "input": {"malware": {}}}')
    await kv.put(policy_key(tenant, "default"), b"not json")
    marker = await store.put(_policy(tenant, "marker"), by="cli")  # seen after the bad ones
    await _until(lambda: mirror.policy(tenant, "marker") == marker)
    assert mirror.policy(tenant, "default") == good

    fresh = PolicyMirror()  # started after the bad records: recovers the good one from history
    await fresh.start(js)
    assert fresh.policy(tenant, "default") == good
    await fresh.stop()

    assert await store.get(tenant, "default") == good
    assert good in await store.list(tenant)
    assert (await store.put(_policy(tenant), by="cli")).version == 2


async def test_seed_stores_once_and_only_once(js: JetStreamContext, store: PolicyStore) -> None:
    assert await store.get(BASELINE_TENANT, DEFAULT_POLICY) is None
    first = await asyncio.gather(*(seed_default_policy(js, DEFAULT_FILE) for _ in range(3)))
    assert sorted(first) == [False, False, True]  # replicas starting at once: one stores it
    assert await seed_default_policy(js, DEFAULT_FILE) is False

    history = await store.history(BASELINE_TENANT, DEFAULT_POLICY)
    assert len(history) == 1
    seeded = history[0]
    assert (seeded.version, seeded.updated_by) == (1, "seed")
    stored_fields = {"version", "updated_at", "updated_by"}
    assert seeded.model_dump(exclude=stored_fields) == default_policy().model_dump(
        exclude=stored_fields
    )

    await store.delete(BASELINE_TENANT, DEFAULT_POLICY)  # an operator's choice: it stays deleted
    assert await seed_default_policy(js, DEFAULT_FILE) is False
    assert await store.get(BASELINE_TENANT, DEFAULT_POLICY) is None


async def test_seed_refuses_a_file_for_another_policy(js: JetStreamContext, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_policy("acme").to_yaml())
    with pytest.raises(PolicyError, match="default/default"):
        await seed_default_policy(js, path)
