"""The registry on a real nats-server: versions, labels, rollback, splits, fallback, seed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from llmops.bus.topology import PROMPTS_BUCKET
from llmops.kvhistory import kv_entries
from llmops.prompts.mirror import PromptMirror
from llmops.prompts.model import Arm, PromptError, PromptNotFound, parse_prompts_file
from llmops.prompts.store import PromptStore, seed_prompts

SEED = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "prompts.yaml"


def _tenant() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def _file(name: str, user: str = "Q: {question}", **fields: str) -> str:
    lines = [f"  - name: {name}", f"    user: '{user}'"]
    lines += [f"    {key}: {value}" for key, value in fields.items()]
    return "prompts:\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
async def store(js: JetStreamContext) -> PromptStore:
    return await PromptStore.open(js)


@pytest.fixture(scope="module")
async def mirror(js: JetStreamContext) -> AsyncIterator[PromptMirror]:
    running = PromptMirror()
    await running.start(js)
    yield running
    await running.stop()


async def _eventually(check: Callable[[], bool], within_s: float = 1.0) -> float:
    """Seconds until `check` holds (a prompt or label not seen yet counts as not yet)."""
    started = time.monotonic()
    while not _holds(check):
        assert time.monotonic() - started < within_s, "not seen in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def _holds(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except PromptNotFound:
        return False


async def test_versions_are_immutable_and_a_repush_stores_nothing(
    store: PromptStore, js: JetStreamContext
) -> None:
    tenant = _tenant()
    (first,) = await store.push_text(_file("faq"), tenant, "alice")
    assert (first.version, first.created, first.labels) == (1, True, ["production"])
    (again,) = await store.push_text(_file("faq", description="'only words'"), tenant, "bob")
    assert (again.version, again.created, again.labels) == (1, False, [])
    (second,) = await store.push_text(_file("faq", "Now: {question}"), tenant, "bob")
    assert (second.version, second.created, second.labels) == (2, True, [])  # not new: no move
    (back,) = await store.push_text(_file("faq"), tenant, "carol")
    assert (back.version, back.created) == (1, False)  # identical to v1, however old

    v1 = await store.get(tenant, "faq", version=1)
    assert (v1.user, v1.created_by) == ("Q: {question}", "alice")
    assert (await store.get(tenant, "faq")).version == 1  # production
    assert (await store.get(tenant, "faq", label="latest")).version == 2
    kv = await js.key_value(PROMPTS_BUCKET)
    with pytest.raises(Exception, match="wrong last sequence"):
        await kv.create(f"{tenant}.faq.v1", b"{}")  # a version's key is never rewritten
    assert sorted(
        e.key for e in await kv_entries(js, PROMPTS_BUCKET, f"{tenant}.>", last_only=True)
    ) == [
        f"{tenant}.faq.labels",
        f"{tenant}.faq.v1",
        f"{tenant}.faq.v2",
    ]


async def test_concurrent_pushes_never_share_a_version_number(store: PromptStore) -> None:
    tenant = _tenant()
    texts = [_file("race", f"{n}: {{question}}") for n in range(8)]
    results = await asyncio.gather(*(store.push_text(t, tenant, "w") for t in texts))
    assert sorted(p.version for (p,) in results) == list(range(1, 9))
    same = await asyncio.gather(*(store.push_text(texts[0], tenant, "w") for _ in range(4)))
    assert {(p.version, p.created) for (p,) in same} == {(results[0][0].version, False)}


async def test_label_moves_history_and_rollback_reach_a_running_mirror(
    store: PromptStore, mirror: PromptMirror
) -> None:
    tenant = _tenant()
    for n in range(1, 4):
        await store.push_text(_file("help", f"v{n} {{question}}"), tenant, "seed")
    await _eventually(lambda: _served(mirror, tenant, "latest") == 3)
    assert _served(mirror, tenant) == 1

    await store.set_label(tenant, "help", "production", 3, "key-a")
    await store.set_label(tenant, "help", "staging", 2, "key-b")
    await _eventually(lambda: _served(mirror, tenant, "staging") == 2)  # the later move
    assert _served(mirror, tenant) == 3

    book = await store.rollback(tenant, "help", "production", "key-c")
    assert book.labels["production"] == [Arm(version=1)]
    seen_in = await _eventually(lambda: _served(mirror, tenant) == 1)
    assert seen_in < 1.0

    moves = await store.history(tenant, "help")
    assert [(m.by, m.label, m.action) for m in moves] == [
        ("seed", "production", "push"),
        ("key-a", "production", "label"),
        ("key-b", "staging", "label"),
        ("key-c", "production", "rollback"),
    ]
    assert (moves[1].before, moves[1].after) == ([Arm(version=1)], [Arm(version=3)])
    assert (moves[2].before, moves[2].after) == ([], [Arm(version=2)])
    assert (moves[3].before, moves[3].after) == ([Arm(version=3)], [Arm(version=1)])
    assert all(m.at.endswith("+00:00") for m in moves)
    with pytest.raises(PromptError, match="no earlier version to roll back to"):
        await store.rollback(tenant, "help", "production", "key-c")

    with pytest.raises(PromptNotFound, match=r"no version 9; versions: v1, v2, v3"):
        await store.set_label(tenant, "help", "production", 9, "key-a")
    with pytest.raises(PromptError, match="cannot be set"):
        await store.set_label(tenant, "help", "latest", 1, "key-a")
    with pytest.raises(PromptNotFound, match="no label 'canary'; labels: production, staging"):
        await store.get(tenant, "help", label="canary")


def _served(mirror: PromptMirror, tenant: str, label: str = "") -> int:
    return mirror.resolve(tenant, "help", label=label).prompt.version


async def test_split_is_validated(store: PromptStore) -> None:
    tenant = _tenant()
    for n in (1, 2):
        await store.push_text(_file("ab", f"{n} {{question}}"), tenant, "t")
    cases = [
        ({1: 100}, PromptError, "at least two versions"),
        ({1: 60, 2: 50}, PromptError, "add up to 110, not 100"),
        ({1: 100, 2: 0}, PromptError, "weights are 1-99 percent: v1=100, v2=0"),
        ({1: 50, 7: 50}, PromptNotFound, "no version 7"),
    ]
    for arms, error, message in cases:
        with pytest.raises(error, match=message):
            await store.split(tenant, "ab", "production", arms, "t")
    with pytest.raises(PromptError, match="cannot be set"):
        await store.split(tenant, "ab", "latest", {1: 50, 2: 50}, "t")
    assert (await store.book(tenant, "ab")).labels == {"production": [Arm(version=1)]}


async def test_a_split_is_proportional_and_sticky_per_user(
    store: PromptStore, mirror: PromptMirror, js: JetStreamContext
) -> None:
    tenant = _tenant()
    for n in (1, 2, 3):
        await store.push_text(_file("ab", f"{n} {{question}}"), tenant, "t")
    await store.split(tenant, "ab", "production", {3: 20, 2: 50, 1: 30}, "t")
    await _eventually(lambda: len(mirror.catalog.target(tenant, "ab").arms) == 3)

    users = [f"user-{n}" for n in range(20_000)]
    picked = {u: mirror.resolve(tenant, "ab", user=u) for u in users}
    shares = Counter(r.arm for r in picked.values())
    for arm, weight in {"v1": 30, "v2": 50, "v3": 20}.items():
        assert abs(100 * shares[arm] / len(users) - weight) < 2, shares
    assert {r.label for r in picked.values()} == {"production"}
    assert all(r.prompt.user.startswith(r.arm[1:]) for r in picked.values())

    again = [
        mirror.resolve(tenant, "ab", user=u, request_id=str(n)).arm for n, u in enumerate(users)
    ]
    assert again == [picked[u].arm for u in users]  # the same user, the same arm, every call
    second = PromptMirror()  # another replica
    await second.start(js)
    try:
        assert [second.resolve(tenant, "ab", user=u).arm for u in users[:2000]] == [
            picked[u].arm for u in users[:2000]
        ]
    finally:
        await second.stop()

    per_request = Counter(
        mirror.resolve(tenant, "ab", request_id=uuid.uuid4().hex).arm for _ in range(3000)
    )
    assert len(per_request) == 3  # no user: each request draws anew
    named = mirror.resolve(tenant, "ab", version=2, user="user-1")
    assert (named.prompt.version, named.label, named.arm) == (2, "", "")
    with pytest.raises(PromptError, match="not both"):
        mirror.resolve(tenant, "ab", version=2, label="production")


async def test_a_tenant_without_its_own_prompt_gets_the_baseline(
    store: PromptStore, mirror: PromptMirror
) -> None:
    name, tenant = f"base-{uuid.uuid4().hex[:8]}", _tenant()
    await store.push_text(_file(name, "baseline {question}"), "default", "seed")
    await _eventually(lambda: mirror.resolve(tenant, name).prompt.tenant == "default")
    inherited = mirror.resolve(tenant, name)
    assert (inherited.prompt.tenant, inherited.prompt.user) == ("default", "baseline {question}")
    summaries = {s.name: s for s in await store.list(tenant)}
    assert summaries[name].tenant == "default"
    with pytest.raises(PromptNotFound, match="of its own"):
        await store.set_label(tenant, name, "staging", 1, "t")

    await store.push_text(_file(name, "own {question}"), tenant, "t")
    await _eventually(lambda: mirror.resolve(tenant, name).prompt.tenant == tenant)
    assert mirror.resolve("someone-else", name).prompt.user == "baseline {question}"
    assert {s.name: s.tenant for s in await store.list(tenant)}[name] == tenant
    with pytest.raises(PromptNotFound, match=f"unknown prompt 'nope'; prompts: .*{name}"):
        mirror.resolve(tenant, "nope")


async def test_a_bad_file_stores_nothing(store: PromptStore) -> None:
    tenant = _tenant()
    text = _file("good") + "  - name: bad\n    user: 'no question here'\n"
    with pytest.raises(PromptError, match=r"prompts\[1\] \(bad\).user: must contain"):
        await store.push_text(text, tenant, "t")
    with pytest.raises(PromptError, match="not YAML"):
        await store.push_text("prompts: [", tenant, "t")
    assert [s.name for s in await store.list(tenant) if s.tenant == tenant] == []
    with pytest.raises(PromptNotFound):
        await store.get(tenant, "good")


async def test_labels_in_the_file_move_and_export_round_trips(store: PromptStore) -> None:
    tenant = _tenant()
    await store.push_text(_file("one") + _file("two").removeprefix("prompts:\n"), tenant, "t")
    (pushed,) = await store.push_text(
        _file("one", "v2 {question}", labels="[staging]"), tenant, "t"
    )
    assert (pushed.version, pushed.labels) == (2, ["staging"])
    exported = await store.export(tenant)
    assert [(e.name, e.labels) for e in parse_prompts_file(exported)] == [
        ("one", ["staging"]),
        ("two", ["production"]),
    ]
    again = await store.push_text(exported, tenant, "t")
    assert [(p.created, p.labels) for p in again] == [(False, []), (False, [])]
    diff = await store.diff(tenant, "one", "production", "v2")
    assert "--- one@v1 (production)" in diff and "+++ one@v2" in diff
    assert "-  user: 'Q: {question}'" in diff and "+  user: v2 {question}" in diff
    assert await store.diff(tenant, "one", "1", "production") == ""
    (only,) = parse_prompts_file(await store.export(tenant, ["two"]))
    assert only.name == "two"


async def test_the_seed_is_idempotent_from_several_processes_at_once(
    store: PromptStore, js: JetStreamContext
) -> None:
    results = await asyncio.gather(*(seed_prompts(js, SEED) for _ in range(4)))
    created = [p for pushed in results for p in pushed if p.created]
    assert sorted(p.name for p in created) == ["concise", "default", "eval-judge"]
    assert sum(len(p.labels) for pushed in results for p in pushed) == 3  # production, once each
    await store.set_label("default", "concise", "staging", 1, "operator")
    assert all(not p.created and not p.labels for p in await seed_prompts(js, SEED))
    history = await store.history("default", "default")
    assert [(m.by, m.label) for m in history] == [("seed", "production")]
