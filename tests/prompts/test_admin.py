"""The gateway's PromptRegistry servicer on an in-process gRPC server, with real API keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

import grpc
import pytest
from nats.js import JetStreamContext

from gateway.prompt_admin import PromptAdmin
from llmops.apikeys import KeyAdmin, KeyDirectory
from llmops.grpcutil import channel
from llmops.prompts.store import PromptStore
from llmops.service import Loaded
from llmops.v1 import prompts_pb2, prompts_pb2_grpc

FILE = """\
prompts:
  - name: faq
    params: {temperature: 0.5, max_tokens: 64}
    defaults: {product: the heat pump}
    user: "About {product}: {question}"
"""


@dataclass
class Admin:
    stub: prompts_pb2_grpc.PromptRegistryStub
    tenant: str
    admin_key: str
    admin_id: str
    reader_key: str
    other_key: str  # an admin of another tenant

    @staticmethod
    def auth(key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
async def admin(js: JetStreamContext) -> AsyncIterator[Admin]:
    tenant, other = f"a{uuid.uuid4().hex[:10]}", f"b{uuid.uuid4().hex[:10]}"
    keys = KeyAdmin(js)
    admin_key = await keys.create_key(tenant, "ops", prompt_admin=True)
    reader_key = await keys.create_key(tenant, "app")
    other_key = await keys.create_key(other, "ops", prompt_admin=True)
    directory = KeyDirectory()
    await directory.start(js)
    store: Loaded[PromptStore] = Loaded("the prompt registry")
    store.set(await PromptStore.open(js))
    server = grpc.aio.server()
    prompts_pb2_grpc.add_PromptRegistryServicer_to_server(PromptAdmin(store, directory), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with channel(f"127.0.0.1:{port}") as ch:
        yield Admin(
            prompts_pb2_grpc.PromptRegistryStub(ch),
            tenant,
            admin_key.key,
            admin_key.record.key_id,
            reader_key.key,
            other_key.key,
        )
    await server.stop(None)
    await directory.stop()


async def _code(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_an_admin_key_manages_its_tenants_prompts(admin: Admin) -> None:
    s, auth = admin.stub, admin.auth(admin.admin_key)
    pushed = await s.Push(prompts_pb2.PushPromptsRequest(yaml=FILE), metadata=auth)
    assert [(p.name, p.version, p.created, list(p.labels)) for p in pushed.prompts] == [
        ("faq", 1, True, ["production"])
    ]
    v2 = FILE.replace("About", "On")
    await s.Push(prompts_pb2.PushPromptsRequest(yaml=v2), metadata=auth)

    got = await s.Get(prompts_pb2.GetPromptRequest(name="faq"), metadata=auth)
    assert (got.tenant, got.version, got.user, list(got.labels)) == (
        admin.tenant,
        1,
        "About {product}: {question}",
        ["production"],
    )
    assert (got.params.max_tokens, round(got.params.temperature, 3)) == (64, 0.5)
    assert not got.params.HasField("top_p")
    assert (dict(got.defaults), list(got.variables), got.created_by) == (
        {"product": "the heat pump"},
        ["product"],
        admin.admin_id,
    )
    latest = await s.Get(prompts_pb2.GetPromptRequest(name="faq", label="latest"), metadata=auth)
    assert (latest.version, list(latest.labels)) == (2, ["latest"])

    diff = await s.Diff(prompts_pb2.DiffPromptRequest(name="faq", a="1", b="latest"), metadata=auth)
    assert "-  user: 'About {product}: {question}'" in diff.diff

    moved = await s.SetLabel(
        prompts_pb2.SetLabelRequest(name="faq", label="production", version=2), metadata=auth
    )
    assert [(a.version, a.weight) for a in moved.arms] == [(2, 100)]
    split = await s.Split(
        prompts_pb2.SplitRequest(
            name="faq",
            label="ab",
            arms=[prompts_pb2.Arm(version=1, weight=50), prompts_pb2.Arm(version=2, weight=50)],
        ),
        metadata=auth,
    )
    assert [(a.version, a.weight) for a in split.arms] == [(1, 50), (2, 50)]
    rolled = await s.Rollback(
        prompts_pb2.RollbackRequest(name="faq", label="production"), metadata=auth
    )
    assert [a.version for a in rolled.arms] == [1]

    history = await s.History(prompts_pb2.PromptHistoryRequest(name="faq"), metadata=auth)
    assert [(m.label, m.action, m.by) for m in history.moves] == [
        ("production", "push", admin.admin_id),
        ("production", "label", admin.admin_id),
        ("ab", "split", admin.admin_id),
        ("production", "rollback", admin.admin_id),
    ]
    assert [a.version for a in history.moves[1].before] == [1]
    listed = await s.List(prompts_pb2.ListPromptsRequest(), metadata=auth)
    faq = next(p for p in listed.prompts if p.name == "faq")
    assert (faq.tenant, faq.latest) == (admin.tenant, 2)
    assert {i.label: [a.version for a in i.arms] for i in faq.labels} == {
        "ab": [1, 2],
        "production": [1],
    }
    exported = await s.Export(prompts_pb2.ExportPromptsRequest(names=["faq"]), metadata=auth)
    assert "name: faq" in exported.yaml and "On {product}" in exported.yaml


async def test_errors_map_to_status_codes(admin: Admin) -> None:
    s, auth = admin.stub, admin.auth(admin.admin_key)
    await s.Push(prompts_pb2.PushPromptsRequest(yaml=FILE), metadata=auth)
    cases = [
        (
            s.Push(prompts_pb2.PushPromptsRequest(yaml="prompts: [\n"), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not YAML",
        ),
        (
            s.Get(prompts_pb2.GetPromptRequest(name="faq", version=42), metadata=auth),
            grpc.StatusCode.NOT_FOUND,
            "no version 42",
        ),
        (
            s.Split(
                prompts_pb2.SplitRequest(
                    name="faq",
                    label="ab",
                    arms=[prompts_pb2.Arm(version=1, weight=50)] * 2,
                ),
                metadata=auth,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "version 1 is named twice",
        ),
        (
            s.List(prompts_pb2.ListPromptsRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
            "Bearer",
        ),
    ]
    for call, code, message in cases:
        got, details = await _code(call)
        assert got == code and message in details, (got, details)


async def test_a_reader_key_reads_but_cannot_change(admin: Admin) -> None:
    s, reader = admin.stub, admin.auth(admin.reader_key)
    await s.Push(prompts_pb2.PushPromptsRequest(yaml=FILE), metadata=admin.auth(admin.admin_key))
    got = await s.Get(prompts_pb2.GetPromptRequest(name="faq"), metadata=reader)
    assert got.tenant == admin.tenant
    for call in (
        s.Push(prompts_pb2.PushPromptsRequest(yaml=FILE.replace("About", "Re")), metadata=reader),
        s.SetLabel(prompts_pb2.SetLabelRequest(name="faq", label="x", version=1), metadata=reader),
        s.Rollback(prompts_pb2.RollbackRequest(name="faq", label="production"), metadata=reader),
    ):
        code, details = await _code(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "--prompt-admin" in details
    latest = await s.Get(prompts_pb2.GetPromptRequest(name="faq", label="latest"), metadata=reader)
    assert not latest.user.startswith("Re")  # the refused push stored nothing


async def test_tenants_are_isolated(admin: Admin) -> None:
    s, other = admin.stub, admin.auth(admin.other_key)
    await s.Push(prompts_pb2.PushPromptsRequest(yaml=FILE), metadata=admin.auth(admin.admin_key))
    listed = await s.List(prompts_pb2.ListPromptsRequest(), metadata=other)
    assert "faq" not in {p.name for p in listed.prompts}
    for call in (
        s.Get(prompts_pb2.GetPromptRequest(name="faq"), metadata=other),
        s.SetLabel(prompts_pb2.SetLabelRequest(name="faq", label="x", version=1), metadata=other),
        s.History(prompts_pb2.PromptHistoryRequest(name="faq"), metadata=other),
    ):
        code, details = await _code(call)
        assert code == grpc.StatusCode.NOT_FOUND and "faq" in details, details
    mine = await s.Push(
        prompts_pb2.PushPromptsRequest(yaml=FILE.replace("About", "Other")), metadata=other
    )
    assert [(p.version, p.created) for p in mine.prompts] == [(1, True)]  # its own numbering
    theirs = await s.Get(
        prompts_pb2.GetPromptRequest(name="faq"), metadata=admin.auth(admin.admin_key)
    )
    assert theirs.user.startswith("About")
