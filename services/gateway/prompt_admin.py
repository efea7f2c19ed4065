"""gRPC `llmops.v1.PromptRegistry`: the prompt registry's admin API, on the tenant of the key.

Any valid key reads its tenant's prompts (its own and the baseline ones it
inherits); changing them (push, label, rollback, split) needs a key made with
`--prompt-admin`. Every change is recorded as made by the key's id. Registry
errors become statuses here: bad input INVALID_ARGUMENT, an unknown prompt,
version or label NOT_FOUND.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from llmops.apikeys import KeyDirectory, KeyRecord
from llmops.prompts.model import (
    Arm,
    LabelBook,
    PromptError,
    PromptNotFound,
    PromptVersion,
    weights_by_version,
)
from llmops.prompts.store import PromptStore
from llmops.service import Loaded
from llmops.v1 import inference_pb2, prompts_pb2, prompts_pb2_grpc


def _arms(arms: list[Arm]) -> list[prompts_pb2.Arm]:
    return [prompts_pb2.Arm(version=a.version, weight=a.weight) for a in arms]


def _label_info(book: LabelBook, label: str) -> prompts_pb2.LabelInfo:
    return prompts_pb2.LabelInfo(
        name=book.name, label=label, arms=_arms(book.labels.get(label, []))
    )


def version_info(found: PromptVersion, labels: list[str]) -> prompts_pb2.PromptVersionInfo:
    return prompts_pb2.PromptVersionInfo(
        tenant=found.tenant,
        name=found.name,
        version=found.version,
        system=found.system,
        user=found.user,
        model=found.model,
        params=found.params.apply_to(inference_pb2.GenerationParams()),
        defaults=found.defaults,
        variables=sorted(found.variables),
        description=found.description,
        created_at=found.created_at,
        created_by=found.created_by,
        digest=found.digest,
        labels=labels,
    )


@contextlib.asynccontextmanager
async def _statuses(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    try:
        yield
    except PromptError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except PromptNotFound as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))


class PromptAdmin(prompts_pb2_grpc.PromptRegistryServicer):
    def __init__(self, store: Loaded[PromptStore], keys: KeyDirectory) -> None:
        self._store = store
        self._keys = keys

    async def _key(self, context: grpc.aio.ServicerContext, *, admin: bool) -> KeyRecord:
        record = self._keys.authenticate_call(context.invocation_metadata())
        if record is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown API key: send metadata 'authorization: Bearer <key>'",
            )
        assert record is not None  # abort raised
        if admin and not record.prompt_admin:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"key {record.key_id} may read prompts but not change them: "
                "use a key made with `llmops keys create --prompt-admin`",
            )
        return record

    async def Push(
        self, request: prompts_pb2.PushPromptsRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.PushPromptsReply:
        key = await self._key(context, admin=True)
        async with _statuses(context):
            pushed = await self._store.value.push_text(request.yaml, key.tenant, key.key_id)
        return prompts_pb2.PushPromptsReply(
            prompts=[
                prompts_pb2.PushedPrompt(
                    name=p.name, version=p.version, created=p.created, labels=p.labels
                )
                for p in pushed
            ]
        )

    async def List(
        self, request: prompts_pb2.ListPromptsRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.ListPromptsReply:
        key = await self._key(context, admin=False)
        async with _statuses(context):
            summaries = await self._store.value.list(key.tenant)
        return prompts_pb2.ListPromptsReply(
            prompts=[
                prompts_pb2.PromptSummary(
                    name=s.name,
                    latest=s.latest,
                    labels=[
                        prompts_pb2.LabelInfo(name=s.name, label=label, arms=_arms(arms))
                        for label, arms in sorted(s.labels.items())
                    ],
                    description=s.description,
                    tenant=s.tenant,
                )
                for s in summaries
            ]
        )

    async def Get(
        self, request: prompts_pb2.GetPromptRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.PromptVersionInfo:
        key = await self._key(context, admin=False)
        async with _statuses(context):
            found, labels = await self._store.value.describe(
                key.tenant, request.name, request.version or None, request.label
            )
        return version_info(found, labels)

    async def Diff(
        self, request: prompts_pb2.DiffPromptRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.DiffPromptReply:
        key = await self._key(context, admin=False)
        async with _statuses(context):
            text = await self._store.value.diff(key.tenant, request.name, request.a, request.b)
        return prompts_pb2.DiffPromptReply(diff=text)

    async def SetLabel(
        self, request: prompts_pb2.SetLabelRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.LabelInfo:
        key = await self._key(context, admin=True)
        async with _statuses(context):
            book = await self._store.value.set_label(
                key.tenant, request.name, request.label, request.version, key.key_id
            )
        return _label_info(book, request.label)

    async def Rollback(
        self, request: prompts_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.LabelInfo:
        key = await self._key(context, admin=True)
        async with _statuses(context):
            book = await self._store.value.rollback(
                key.tenant, request.name, request.label, key.key_id
            )
        return _label_info(book, request.label)

    async def Split(
        self, request: prompts_pb2.SplitRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.LabelInfo:
        key = await self._key(context, admin=True)
        async with _statuses(context):
            arms = weights_by_version((a.version, a.weight) for a in request.arms)
            book = await self._store.value.split(
                key.tenant, request.name, request.label, arms, key.key_id
            )
        return _label_info(book, request.label)

    async def History(
        self, request: prompts_pb2.PromptHistoryRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.PromptHistoryReply:
        key = await self._key(context, admin=False)
        async with _statuses(context):
            moves = await self._store.value.history(key.tenant, request.name)
        return prompts_pb2.PromptHistoryReply(
            moves=[
                prompts_pb2.LabelMove(
                    at=m.at,
                    by=m.by,
                    label=m.label,
                    before=_arms(m.before),
                    after=_arms(m.after),
                    action=m.action,
                )
                for m in moves
            ]
        )

    async def Export(
        self, request: prompts_pb2.ExportPromptsRequest, context: grpc.aio.ServicerContext
    ) -> prompts_pb2.ExportPromptsReply:
        key = await self._key(context, admin=False)
        async with _statuses(context):
            text = await self._store.value.export(key.tenant, request.names)
        return prompts_pb2.ExportPromptsReply(yaml=text)
