"""Load and faults for a `llmops up --cluster` platform: the fault test's and bench/scaleout.py's.

`Load` records what chat callers saw; `caller` asks until told to stop;
`publish_docs` sends one small document a second; `run_faults` kills and
freezes NATS nodes and replicas in the fault test's order and returns how
long each took to be ready again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from llmops.cli.platform import SERVICES
from llmops.docclient import DocumentClient
from llmops.v1 import documents_pb2, gateway_pb2_grpc
from tests.e2e.gateway_support import Tenant, ask
from tests.support import Platform

DEADLINE_S = 10.0  # every chat call's deadline: nothing may take longer
QUESTION = "What does error E-417 mean?"
COLLECTION = "scaleout"
FREEZE_S = 8.0  # > ping_interval x ping_max (llmops.natsserver): its peers drop the node


@dataclass
class Load:
    """What the callers saw: answered request ids, refusals by status, the worst waits."""

    answered: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    why: dict[str, str] = field(default_factory=dict)  # each refusal code's first details
    budget_refusals: int = 0
    slowest_s: float = 0.0
    longest_gap_s: float = 0.0
    last_answer: float = field(default_factory=time.monotonic)

    def answer(self, request_id: str) -> None:
        now = time.monotonic()
        self.answered.append(request_id)
        self.longest_gap_s = max(self.longest_gap_s, now - self.last_answer)
        self.last_answer = now

    def summary(self) -> str:
        return (
            f"{len(self.answered)} answered, refused {dict(self.refused)} {self.why}, "
            f"slowest {self.slowest_s:.2f} s, longest gap {self.longest_gap_s:.2f} s"
        )


async def caller(
    stub: gateway_pb2_grpc.GatewayStub,
    tenant: Tenant,
    load: Load,
    stop: asyncio.Event,
    budgeted: bool = False,
) -> None:
    """Ask one question after another until `stop`; a budget's refusals are counted apart."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            reply = await stub.ChatOnce(
                ask(QUESTION, retrieval_off=True, no_cache=True),
                metadata=tenant.metadata,
                timeout=DEADLINE_S,
            )
            load.answer(reply.final.request_id)
        except grpc.aio.AioRpcError as exc:
            if budgeted and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                load.budget_refusals += 1
                await asyncio.sleep(0.2)
            else:
                load.refused[exc.code().name] += 1
                load.why.setdefault(exc.code().name, str(exc.details()))
                await asyncio.sleep(0.05)
        load.slowest_s = max(load.slowest_s, time.monotonic() - started)


async def publish_docs(platform: Platform, tenant: str, count: int) -> list[str]:
    """One small document a second (each one chunk), retried through NATS outages."""
    client = await DocumentClient.connect(platform.nats_url)
    ids = []
    try:
        for i in range(count):
            doc_id = f"doc-{i}"
            doc = documents_pb2.Document(
                tenant=tenant,
                doc_id=doc_id,
                collection=COLLECTION,
                source=f"{doc_id}.md",
                content=f"# Scaleout note {i}\n\nThe scaleout code of part {i} is Z{i}Q.".encode(),
                format=documents_pb2.DOCUMENT_FORMAT_MARKDOWN,
            )
            for _ in range(60):
                try:
                    await client.publish(doc, msg_id=f"scaleout:{tenant}:{doc_id}")
                    break
                except Exception:  # a node down or electing: the same id is de-duplicated
                    await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"{doc_id} could not be published")
            ids.append(doc_id)
            await asyncio.sleep(1.0)
    finally:
        await client.close()
    return ids


def send_signal(platform: Platform, name: str, sig: int) -> int:
    pid = platform.pid(name)
    os.kill(pid, sig)
    return pid


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Seconds until `check` holds; AssertionError naming `what` past `timeout_s`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not {what} after {timeout_s:.0f} s")
        await asyncio.sleep(0.3)
    return time.monotonic() - started


async def all_ready(platform: Platform) -> bool:
    result = await asyncio.to_thread(platform.cli, "status", "--json")
    return result.returncode == 0


async def restarted(platform: Platform, old: dict[str, int], timeout_s: float = 90) -> float:
    """Seconds until every process in `old` runs with a new pid and all components are ready."""

    async def check() -> bool:
        pids = platform.state()["pids"]
        assert isinstance(pids, dict)
        again = all(pids.get(n) not in (None, p) for n, p in old.items())
        return again and await all_ready(platform)

    return await until(check, timeout_s, f"restarted: {sorted(old)}")


async def run_faults(platform: Platform) -> dict[str, float]:
    """kill -9 a NATS node, then replica 1 of every service, then freeze another node
    for FREEZE_S; seconds until every component was ready again after each."""
    recovered = {}
    node = {"nats-2": send_signal(platform, "nats-2", signal.SIGKILL)}
    recovered["nats-2 killed"] = await restarted(platform, node)
    replicas = {f"{s}-1": send_signal(platform, f"{s}-1", signal.SIGKILL) for s in SERVICES}
    recovered["a replica of each service killed"] = await restarted(platform, replicas)
    frozen = send_signal(platform, "nats-3", signal.SIGSTOP)
    await asyncio.sleep(FREEZE_S)
    os.kill(frozen, signal.SIGCONT)
    recovered[f"nats-3 frozen {FREEZE_S:.0f} s"] = await until(
        lambda: all_ready(platform), 60, "ready after the freeze"
    )
    return recovered


async def rolling_restart(platform: Platform) -> float:
    """SIGTERM replica 1 of every service, wait until all are ready, then replica 2:
    every service keeps one replica serving. The seconds it took."""
    started = time.monotonic()
    for index in (1, 2):
        old = {
            f"{s}-{index}": send_signal(platform, f"{s}-{index}", signal.SIGTERM) for s in SERVICES
        }
        await restarted(platform, old)
    return time.monotonic() - started
