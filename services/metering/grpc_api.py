"""gRPC `llmops.v1.Metering`: usage from the spend counters, and budgets."""

from __future__ import annotations

import datetime as dt

import grpc
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from llmops.apikeys import KeyDirectory, KeyRecord, check_tenant
from llmops.kvmirror import KvMirror
from llmops.service import Loaded
from llmops.spend import Budget, Period, Spend, budget_key, period_start
from llmops.v1 import metering_pb2, metering_pb2_grpc

_PERIODS: dict[int, Period] = {
    metering_pb2.PERIOD_UNSPECIFIED: "day",
    metering_pb2.PERIOD_DAY: "day",
    metering_pb2.PERIOD_MONTH: "month",
}


class MeteringError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MeteringServicer(metering_pb2_grpc.MeteringServicer):
    def __init__(
        self, keys: KeyDirectory, spend: Loaded[KeyValue], budgets: KvMirror[Budget]
    ) -> None:
        self._keys = keys
        self._spend = spend
        self._budgets = budgets

    def _caller(self, context: grpc.aio.ServicerContext) -> KeyRecord:
        record = self._keys.authenticate_call(context.invocation_metadata())
        if record is None:
            raise MeteringError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown API key: send metadata 'authorization: Bearer <key>'",
            )
        return record

    def _admin(self, context: grpc.aio.ServicerContext) -> KeyRecord:
        record = self._caller(context)
        if record.analytics_scope != "all":
            raise MeteringError(
                grpc.StatusCode.PERMISSION_DENIED,
                "budgets are set with a key made with --all-tenants",
            )
        return record

    async def GetUsage(
        self, request: metering_pb2.UsageRequest, context: grpc.aio.ServicerContext
    ) -> metering_pb2.UsageReply:
        try:
            caller = self._caller(context)
            tenant = request.tenant
            if caller.analytics_scope != "all":
                if tenant and tenant != caller.tenant:
                    raise MeteringError(
                        grpc.StatusCode.PERMISSION_DENIED, "a tenant's key sees its own usage"
                    )
                tenant = caller.tenant
            reply = await self._usage(tenant, request.key_id, _PERIODS[request.period])
        except MeteringError as exc:
            await context.abort(exc.code, exc.message)
        return reply

    async def _usage(self, tenant: str, key_id: str, period: Period) -> metering_pb2.UsageReply:
        start = period_start(period, dt.datetime.now(dt.UTC))
        kv = self._spend.value
        try:
            names = await kv.keys()
        except NoKeysError:
            names = []
        reply = metering_pb2.UsageReply()
        unpriced: set[str] = set()
        for name in sorted(names):
            scope, _, rest = name.partition(".")
            ident, _, when = rest.partition(".")
            if when != f"{period}.{start}" or (key_id and (scope, ident) != ("key", key_id)):
                continue
            try:
                entry = await kv.get(name)
            except KeyNotFoundError:
                continue
            spend = Spend.model_validate_json(entry.value or b"{}")
            if tenant and spend.tenant != tenant:
                continue
            unpriced.update(spend.unpriced_models)
            budget = self._budgets.get(budget_key(spend.tenant, spend.key_id))
            for currency in sorted(spend.spend) or ["USD"]:
                reply.lines.add(
                    tenant=spend.tenant,
                    key_id=spend.key_id,
                    period_start=start,
                    currency=currency,
                    spend_nanos=spend.spend.get(currency, 0),
                    requests=spend.requests,
                    unpriced_requests=spend.unpriced,
                    input_tokens=spend.input_tokens,
                    output_tokens=spend.output_tokens,
                    limit_nanos=budget.limit(period)
                    if budget and budget.currency == currency
                    else 0,
                )
        reply.unpriced_models.extend(sorted(unpriced))
        return reply

    async def SetBudget(
        self, request: metering_pb2.SetBudgetRequest, context: grpc.aio.ServicerContext
    ) -> metering_pb2.Budget:
        try:
            self._admin(context)
            b = request.budget
            tenant = b.tenant
            if b.key_id:
                key = self._keys.record(b.key_id)
                if key is None:
                    raise MeteringError(grpc.StatusCode.NOT_FOUND, f"no API key {b.key_id!r}")
                tenant = key.tenant
            try:
                check_tenant(tenant)
            except ValueError as exc:
                raise MeteringError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            if any(not 0 < a < 1 for a in b.alert_at):
                raise MeteringError(
                    grpc.StatusCode.INVALID_ARGUMENT, "alert_at fractions are between 0 and 1"
                )
            budget = Budget(
                tenant=tenant,
                key_id=b.key_id,
                currency=b.currency or "USD",
                daily_limit_nanos=max(0, b.daily_limit_nanos),
                monthly_limit_nanos=max(0, b.monthly_limit_nanos),
                alert_at=sorted(b.alert_at) or [0.8],
            )
            await self._budgets.put(budget.key, budget)
        except MeteringError as exc:
            await context.abort(exc.code, exc.message)
        return _budget_pb(budget)

    async def ListBudgets(
        self, request: metering_pb2.ListBudgetsRequest, context: grpc.aio.ServicerContext
    ) -> metering_pb2.ListBudgetsReply:
        try:
            self._admin(context)
        except MeteringError as exc:
            await context.abort(exc.code, exc.message)
        budgets = sorted(self._budgets.items.values(), key=lambda b: (b.tenant, b.key_id))
        return metering_pb2.ListBudgetsReply(
            budgets=[
                _budget_pb(b) for b in budgets if not request.tenant or b.tenant == request.tenant
            ]
        )


def _budget_pb(budget: Budget) -> metering_pb2.Budget:
    return metering_pb2.Budget(
        tenant=budget.tenant,
        key_id=budget.key_id,
        currency=budget.currency,
        daily_limit_nanos=budget.daily_limit_nanos,
        monthly_limit_nanos=budget.monthly_limit_nanos,
        alert_at=budget.alert_at,
    )
