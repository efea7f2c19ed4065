"""`llmops usage`, `llmops budget` and `llmops prices`: spend, budgets and the price table."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import grpc
import nats
from rich.console import Console
from rich.table import Table

from llmops.bus.topology import PRICES_BUCKET
from llmops.grpcutil import channel
from llmops.pricebook import TABLE_KEY, add_prices
from llmops.pricing import Price, PriceTable, from_litellm, load_price_file
from llmops.settings import nats_servers
from llmops.spend import money
from llmops.v1 import analytics_pb2, analytics_pb2_grpc, metering_pb2, metering_pb2_grpc

_PERIODS = {"day": metering_pb2.PERIOD_DAY, "month": metering_pb2.PERIOD_MONTH}
_NANOS = 1_000_000_000


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def run_usage(
    metering_addr: str,
    analytics_addr: str,
    key: str,
    tenant: str,
    key_id: str,
    period: str,
    reconcile: bool,
    as_json: bool = False,
) -> int:
    request = metering_pb2.UsageRequest(tenant=tenant, key_id=key_id, period=_PERIODS[period])
    console, errors = Console(), Console(stderr=True)
    try:
        async with channel(metering_addr) as ch:
            reply = await metering_pb2_grpc.MeteringStub(ch).GetUsage(
                request, metadata=_auth(key), timeout=30
            )
        in_clickhouse = (
            await _clickhouse_spend(analytics_addr, key, period, reply) if reconcile else {}
        )
    except grpc.aio.AioRpcError as exc:
        errors.print(f"[red]usage failed: {exc.code().name}: {exc.details()}[/red]")
        return 1
    if as_json:
        return _usage_json(reply, in_clickhouse, reconcile)
    columns = ["tenant", "key", period, "spend", "budget", "requests", "unpriced", "tokens in/out"]
    if reconcile:
        columns += ["ClickHouse", "difference"]
    table = Table(*columns)
    differences = 0
    for line in reply.lines:
        row = [
            line.tenant,
            line.key_id or "(all keys)",
            line.period_start,
            money(line.spend_nanos, line.currency),
            money(line.limit_nanos, line.currency) if line.limit_nanos else "-",
            str(line.requests),
            str(line.unpriced_requests),
            f"{line.input_tokens:,}/{line.output_tokens:,}",
        ]
        if reconcile:
            seen = in_clickhouse.get((line.tenant, line.key_id, line.currency), (0, 0))
            diff = line.spend_nanos - seen[0]
            differences += diff != 0 or line.requests != seen[1]
            row += [
                f"{money(seen[0], line.currency)} ({seen[1]} req)",
                money(diff, line.currency) if diff else "0",
            ]
        table.add_row(*row)
    console.print(table)
    if reply.unpriced_models:
        errors.print(
            "[yellow]no price for: " + ", ".join(reply.unpriced_models) + " — their requests "
            "are counted as unpriced, not as free (`llmops prices import`)[/yellow]"
        )
    if reconcile:
        errors.print(
            "reconciled: NATS KV and ClickHouse agree"
            if not differences
            else f"[yellow]{differences} lines differ (events still on their way to "
            "ClickHouse show up as a difference for a moment)[/yellow]"
        )
    return 0


def _usage_json(
    reply: metering_pb2.UsageReply,
    in_clickhouse: dict[tuple[str, str, str], tuple[int, int]],
    reconcile: bool,
) -> int:
    """`--json`: every line with its figures in nanos (and ClickHouse's, reconciling)."""
    lines = []
    agree = True
    for line in reply.lines:
        row: dict[str, object] = {
            "tenant": line.tenant,
            "key_id": line.key_id,
            "period_start": line.period_start,
            "currency": line.currency,
            "spend_nanos": line.spend_nanos,
            "limit_nanos": line.limit_nanos,
            "requests": line.requests,
            "unpriced_requests": line.unpriced_requests,
            "input_tokens": line.input_tokens,
            "output_tokens": line.output_tokens,
        }
        if reconcile:
            nanos, requests = in_clickhouse.get((line.tenant, line.key_id, line.currency), (0, 0))
            row |= {"clickhouse_nanos": nanos, "clickhouse_requests": requests}
            agree = agree and (nanos, requests) == (line.spend_nanos, line.requests)
        lines.append(row)
    out: dict[str, object] = {"lines": lines, "unpriced_models": list(reply.unpriced_models)}
    if reconcile:
        out["agree"] = agree
    click.echo(json.dumps(out))
    return 0


async def _clickhouse_spend(
    address: str, key: str, period: str, reply: metering_pb2.UsageReply
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """The same sums from the `usage` table: (tenant, key or "", currency) -> (nanos, requests)."""
    if not reply.lines:
        return {}
    start = reply.lines[0].period_start
    bound = (
        "toDate(time) = toDate({start:String})"
        if period == "day"
        else "toStartOfMonth(time) = toDate(concat({start:String}, '-01'))"
    )
    sql = (
        "SELECT tenant, key_id, currency, toString(sum(cost)), count() FROM usage "
        f"WHERE {bound} GROUP BY GROUPING SETS ((tenant, currency), (tenant, key_id, currency))"
    )
    async with channel(address) as ch:
        result = await analytics_pb2_grpc.AnalyticsStub(ch).Query(
            analytics_pb2.QueryRequest(sql=sql, parameters={"start": start}, max_rows=10_000),
            metadata=_auth(key),
            timeout=30,
        )
    sums = {}
    for row in result.rows:
        tenant, key_id, currency, cost, count = list(row)
        nanos = int(Decimal(str(cost)) * _NANOS)
        sums[(str(tenant), str(key_id), str(currency))] = (nanos, int(count))
    return sums


async def run_budget_set(address: str, key: str, budget: metering_pb2.Budget) -> int:
    try:
        async with channel(address) as ch:
            saved = await metering_pb2_grpc.MeteringStub(ch).SetBudget(
                metering_pb2.SetBudgetRequest(budget=budget), metadata=_auth(key), timeout=30
            )
    except grpc.aio.AioRpcError as exc:
        Console(stderr=True).print(f"[red]budget failed: {exc.code().name}: {exc.details()}[/red]")
        return 1
    _print_budgets([saved])
    return 0


async def run_budget_list(address: str, key: str, tenant: str) -> int:
    try:
        async with channel(address) as ch:
            reply = await metering_pb2_grpc.MeteringStub(ch).ListBudgets(
                metering_pb2.ListBudgetsRequest(tenant=tenant), metadata=_auth(key), timeout=30
            )
    except grpc.aio.AioRpcError as exc:
        Console(stderr=True).print(f"[red]budgets failed: {exc.code().name}: {exc.details()}[/red]")
        return 1
    _print_budgets(list(reply.budgets))
    return 0


def _print_budgets(budgets: list[metering_pb2.Budget]) -> None:
    table = Table("tenant", "key", "daily", "monthly", "alerts at")
    for b in budgets:
        table.add_row(
            b.tenant,
            b.key_id or "(tenant)",
            money(b.daily_limit_nanos, b.currency) if b.daily_limit_nanos else "-",
            money(b.monthly_limit_nanos, b.currency) if b.monthly_limit_nanos else "-",
            ", ".join(f"{a:.0%}" for a in b.alert_at),
        )
    Console().print(table)


def read_price_file(path: Path, effective_from: dt.datetime) -> tuple[list[Price], int]:
    """Prices from LiteLLM's JSON (at `effective_from`) or our YAML; and how many were skipped."""
    if path.suffix.lower() == ".json":
        data: Any = json.loads(path.read_text())
        prices = from_litellm(data, effective_from)
        return list(prices), len(prices.skipped)
    return load_price_file(path), 0


async def run_prices_import(nats_url: str, path: Path, effective_from: dt.datetime) -> int:
    prices, skipped = read_price_file(path, effective_from)
    nc = await nats.connect(nats_servers(nats_url), name="llmops-cli")
    try:
        table = await add_prices(nc.jetstream(), prices)
    finally:
        await nc.close()
    Console(stderr=True).print(
        f"{len(prices)} prices from {path} (skipped {skipped}: not chat/embedding or no price); "
        f"the table now holds {len(table)} entries"
    )
    return 0


async def run_prices_list(nats_url: str, model: str, as_json: bool) -> int:
    nc = await nats.connect(nats_servers(nats_url), name="llmops-cli")
    try:
        kv = await nc.jetstream().key_value(PRICES_BUCKET)
        table = PriceTable.from_json((await kv.get(TABLE_KEY)).value or b"")
    finally:
        await nc.close()
    entries = [p for p in table.entries() if not model or model in p.model]
    if as_json:
        print(json.dumps([p.model_dump(mode="json", exclude_none=True) for p in entries], indent=2))
        return 0
    out = Table(
        "model", "from", "input/M", "output/M", "cached in/M", "reasoning/M", "GPU s", "source"
    )
    for p in entries:
        out.add_row(
            p.model,
            f"{p.effective_from:%Y-%m-%d %H:%M}",
            f"{p.input_per_mtok}",
            f"{p.output_per_mtok}",
            "=" if p.cached_input_per_mtok is None else f"{p.cached_input_per_mtok}",
            "=" if p.reasoning_per_mtok is None else f"{p.reasoning_per_mtok}",
            "-" if p.gpu_second is None else f"{p.gpu_second}",
            p.source,
        )
    Console().print(out)
    return 0
