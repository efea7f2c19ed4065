"""`llmops`: start, stop and inspect the local platform; ingest files; search them.

Every command finds the running platform through `<data dir>/platform.json`
(`LLMOPS_DATA_DIR`, default `.llmops/`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import click

from llmops.settings import CommonSettings

from .dlq import dlq
from .docs import docs
from .evaluation import datasets, eval_group
from .guardrails import guardrails
from .platform import PlatformState
from .prompts import prompts


def _settings() -> CommonSettings:
    return CommonSettings()


def _running_state(settings: CommonSettings) -> PlatformState:
    state = PlatformState.read(settings.data_dir)
    if state is None or not state.alive():
        raise click.ClickException(
            f"the platform is not running (no live {settings.data_dir}/platform.json): "
            "start it with `llmops up`"
        )
    return state


@click.group()
def cli() -> None:
    """llmops: RAG ingestion, retrieval and grounded chat on one platform."""


cli.add_command(guardrails)
cli.add_command(prompts)
cli.add_command(datasets)
cli.add_command(eval_group)
cli.add_command(dlq)
cli.add_command(docs)


@cli.command()
@click.option("--timeout", default=180.0, show_default=True, help="seconds to wait for health")
@click.option(
    "--cluster",
    is_flag=True,
    help="three NATS nodes (R3 streams and buckets) and two processes of every service",
)
def up(timeout: float, cluster: bool) -> None:
    """Start NATS, Triton and every service; stop them all with Ctrl-C or `llmops down`."""
    from .up import run_up

    settings = _settings()
    existing = PlatformState.read(settings.data_dir)
    if existing is not None and existing.alive():
        raise click.ClickException(
            f"already running (supervisor pid {existing.supervisor_pid}); `llmops down` first"
        )
    sys.exit(asyncio.run(run_up(settings, timeout, cluster)))


@cli.command()
@click.option("--timeout", default=60.0, show_default=True)
def down(timeout: float) -> None:
    """Stop a platform started by `llmops up`."""
    settings = _settings()
    state = PlatformState.read(settings.data_dir)
    if state is None or not state.alive():
        click.echo("the platform is not running")
        return
    os.kill(state.supervisor_pid, signal.SIGTERM)
    click.echo(f"stopping the platform (supervisor pid {state.supervisor_pid})...")
    deadline = time.monotonic() + timeout
    while state.alive():
        if time.monotonic() > deadline:
            raise click.ClickException(f"supervisor {state.supervisor_pid} still running")
        time.sleep(0.2)
    click.echo("stopped")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(as_json: bool) -> None:
    """Health of every component; exits 0 only when all are ready."""
    from .status import run_status

    sys.exit(asyncio.run(run_status(_settings(), as_json)))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--tenant", default="default", show_default=True)
@click.option("--collection", default="default", show_default=True)
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="metadata on every document")
@click.option("--wait", is_flag=True, help="return when searchable; non-zero if any failed")
@click.option("--timeout", default=600.0, show_default=True, help="seconds --wait waits")
@click.option(
    "--keep-upload", is_flag=True, help="keep a large file's upload in the object store after"
)
def ingest(
    paths: tuple[Path, ...],
    tenant: str,
    collection: str,
    meta: tuple[str, ...],
    wait: bool,
    timeout: float,
    keep_upload: bool,
) -> None:
    """Publish files or folders to the ingestion subject (files over 8 MiB by upload)."""
    from .ingest import IngestOptions, run_ingest

    settings = _settings()
    state = _running_state(settings)
    options = IngestOptions(
        tenant, collection, _pairs(meta), wait, timeout, settings.max_document_bytes, keep_upload
    )
    code = asyncio.run(run_ingest(state.nats_url, list(paths), options))
    sys.exit(code)


def _local_key(settings: CommonSettings, state: PlatformState, tenant: str | None) -> str:
    """LLMOPS_API_KEY, else the tenant's local key, else the local all-tenants key."""
    from .localkey import ensure_local_key

    return os.environ.get("LLMOPS_API_KEY") or asyncio.run(
        ensure_local_key(
            state.nats_url, settings.data_dir, _tenant(tenant or "default"), analyst=tenant is None
        )
    )


@cli.command()
@click.argument("query")
@click.option("--tenant", default="default", show_default=True)
@click.option("-k", "--top-k", default=5, show_default=True)
@click.option("--collection", default="", help="only this collection")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="metadata match")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "sparse"]), default="hybrid")
@click.option("--json", "as_json", is_flag=True)
def search(
    query: str,
    tenant: str,
    top_k: int,
    collection: str,
    filters: tuple[str, ...],
    mode: str,
    as_json: bool,
) -> None:
    """Ranked chunks for QUERY, with scores, source and text."""
    from .search import run_search

    state = _running_state(_settings())
    sys.exit(
        asyncio.run(
            run_search(
                state.grpc["retrieval"],
                query,
                tenant,
                top_k,
                collection,
                _pairs(filters),
                mode,
                as_json,
            )
        )
    )


@cli.command()
@click.argument("question")
@click.option("--tenant", default="default", show_default=True, help="uses a local key of it")
@click.option("--model", default="", help="model alias (default: the routes file's default)")
@click.option("--prompt", default="", help="prompt template name (default: default)")
@click.option("--collection", default="", help="answer from this collection only")
@click.option("--no-retrieval", is_flag=True, help="answer without retrieved context")
@click.option("--no-cache", is_flag=True, help="skip the exact and semantic caches")
def chat(
    question: str,
    tenant: str,
    model: str,
    prompt: str,
    collection: str,
    no_retrieval: bool,
    no_cache: bool,
) -> None:
    """Ask QUESTION; the answer streams, then its citations, tokens and latency.

    The key is LLMOPS_API_KEY if set, else the tenant's local key (made on first use).
    """
    from .chat import run_chat

    settings = _settings()
    state = _running_state(settings)
    key = _local_key(settings, state, tenant)
    sys.exit(
        asyncio.run(
            run_chat(
                state.grpc["gateway"],
                key,
                question,
                model,
                prompt,
                collection,
                no_retrieval,
                no_cache,
            )
        )
    )


@cli.command()
@click.argument("query")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option("--tenant", default=None, help="only this tenant's rows (uses its local key)")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="{NAME:Type} in SQL")
@click.option("--max-rows", default=0, help="0: the server's limit (10,000 by default)")
@click.option("--timeout", default=30.0, show_default=True, help="seconds (capped by the server)")
def sql(
    query: str,
    output: str,
    tenant: str | None,
    params: tuple[str, ...],
    max_rows: int,
    timeout: float,
) -> None:
    """Run read-only ClickHouse SQL over the analytics tables (interactions, usage, ...).

    The key is LLMOPS_API_KEY if set, else a local key: the tenant's with --tenant,
    otherwise the local analyst key, which sees every tenant.
    """
    from .sql import run_sql

    settings = _settings()
    state = _running_state(settings)
    key = _local_key(settings, state, tenant)
    sys.exit(
        asyncio.run(
            run_sql(state.grpc["analytics"], key, query, _pairs(params), output, max_rows, timeout)
        )
    )


@cli.command()
@click.option("--tenant", default="", help="one tenant (default: every tenant)")
@click.option("--key", "key_id", default="", help="one API key's id")
@click.option("--period", type=click.Choice(["day", "month"]), default="day", show_default=True)
@click.option("--reconcile", is_flag=True, help="beside the same sums from ClickHouse")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (nanos)")
def usage(tenant: str, key_id: str, period: str, reconcile: bool, as_json: bool) -> None:
    """Spend, budget, requests and tokens of the current UTC day or month."""
    from .metering import run_usage

    settings = _settings()
    state = _running_state(settings)
    key = _local_key(settings, state, None)
    sys.exit(
        asyncio.run(
            run_usage(
                state.grpc["metering"],
                state.grpc["analytics"],
                key,
                tenant,
                key_id,
                period,
                reconcile,
                as_json,
            )
        )
    )


@cli.group()
def budget() -> None:
    """Spend limits per tenant or key: hard limits refuse requests, alerts warn before."""


@budget.command("set")
@click.option("--tenant", default="", help="the tenant's budget")
@click.option("--key", "key_id", default="", help="one API key's budget (by its id)")
@click.option("--daily", default="0", help="daily limit in the currency, e.g. 5 or 0.25 (0: none)")
@click.option("--monthly", default="0", help="monthly limit (0: none)")
@click.option("--alert-at", default="0.8", show_default=True, help="fractions, comma-separated")
@click.option("--currency", default="USD", show_default=True)
def budget_set(
    tenant: str, key_id: str, daily: str, monthly: str, alert_at: str, currency: str
) -> None:
    """Set a budget (limits of 0 clear it); requests are refused once a limit is spent."""
    from llmops.v1 import metering_pb2

    from .metering import run_budget_set

    if bool(tenant) == bool(key_id):
        raise click.BadParameter("give --tenant or --key")
    settings = _settings()
    state = _running_state(settings)
    request = metering_pb2.Budget(
        tenant=tenant,
        key_id=key_id,
        currency=currency,
        daily_limit_nanos=_nanos(daily),
        monthly_limit_nanos=_nanos(monthly),
        alert_at=[float(a) for a in alert_at.split(",") if a.strip()],
    )
    key = _local_key(settings, state, None)
    sys.exit(asyncio.run(run_budget_set(state.grpc["metering"], key, request)))


@budget.command("list")
@click.option("--tenant", default="", help="only this tenant's budgets")
def budget_list(tenant: str) -> None:
    """Every budget."""
    from .metering import run_budget_list

    settings = _settings()
    state = _running_state(settings)
    sys.exit(
        asyncio.run(
            run_budget_list(state.grpc["metering"], _local_key(settings, state, None), tenant)
        )
    )


@cli.group()
def prices() -> None:
    """The price table: every model's prices, each from its effective time."""


@prices.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--effective",
    default="",
    help="when they apply (ISO 8601, UTC); default: the next minute (history is never rewritten)",
)
def prices_import(path: Path, effective: str) -> None:
    """Add prices from LiteLLM's model_prices_and_context_window.json or a prices YAML."""
    import datetime as dt

    from llmops.pricing import PriceError

    from .metering import run_prices_import

    now = dt.datetime.now(dt.UTC)
    when = (
        dt.datetime.fromisoformat(effective).astimezone(dt.UTC)
        if effective
        else now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    )
    try:
        sys.exit(asyncio.run(run_prices_import(_running_state(_settings()).nats_url, path, when)))
    except PriceError as exc:
        raise click.ClickException(str(exc)) from None


@prices.command("list")
@click.option("--model", default="", help="only models whose name contains this")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def prices_list(model: str, as_json: bool) -> None:
    """Every entry of the price table."""
    from .metering import run_prices_list

    sys.exit(asyncio.run(run_prices_list(_running_state(_settings()).nats_url, model, as_json)))


@cli.group()
def keys() -> None:
    """API keys: create (printed once), list, revoke."""


@keys.command("create")
@click.option("--tenant", required=True, help="the tenant the key acts for (created if new)")
@click.option("--name", default="", help="a label for people")
@click.option("--rpm", default=0, show_default=True, help="requests per minute; 0 = unlimited")
@click.option("--tpm", default=0, show_default=True, help="tokens per minute; 0 = unlimited")
@click.option(
    "--all-tenants",
    is_flag=True,
    help="sees and manages every tenant: SQL, usage, budgets (finance, owners)",
)
@click.option(
    "--prompt-admin",
    is_flag=True,
    help="may change the tenant's prompts over the gateway's admin API",
)
def keys_create(
    tenant: str, name: str, rpm: int, tpm: int, all_tenants: bool, prompt_admin: bool
) -> None:
    """Create a key; it is printed once and stored only as a SHA-256."""
    from .keys import create_key

    tenant = _tenant(tenant)  # a bad tenant is a usage error, platform running or not
    state = _running_state(_settings())
    key = asyncio.run(create_key(state.nats_url, tenant, name, rpm, tpm, all_tenants, prompt_admin))
    click.echo(key)
    click.echo("Store it now: it cannot be shown again.", err=True)


@keys.command("list")
@click.option("--tenant", default=None, help="only this tenant's keys")
def keys_list(tenant: str | None) -> None:
    """Keys with their tenant, limits and state (never the keys themselves)."""
    from .keys import list_keys

    asyncio.run(list_keys(_running_state(_settings()).nats_url, tenant))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after `llmops-`); gateways refuse it within a moment."""
    from .keys import revoke_key

    try:
        asyncio.run(revoke_key(_running_state(_settings()).nats_url, key_id))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {key_id}")


@cli.group()
def tenants() -> None:
    """Tenant settings."""


@tenants.command("set")
@click.argument("tenant")
@click.option("--exact-cache/--no-exact-cache", default=None, help="answer from the exact cache")
@click.option(
    "--semantic-cache/--no-semantic-cache", default=None, help="answer from similar questions"
)
@click.option("--rpm", type=int, default=None, help="requests per minute, all keys; 0 = no limit")
@click.option("--tpm", type=int, default=None, help="tokens per minute, all keys; 0 = no limit")
def tenants_set(
    tenant: str,
    exact_cache: bool | None,
    semantic_cache: bool | None,
    rpm: int | None,
    tpm: int | None,
) -> None:
    """A tenant's cache switches and per-minute quotas (over all of its keys)."""
    from llmops.apikeys import Limits

    from .keys import set_tenant

    tenant = _tenant(tenant)  # a bad tenant is a usage error, platform running or not
    limits = None
    if rpm is not None or tpm is not None:
        limits = Limits(requests_per_minute=rpm or 0, tokens_per_minute=tpm or 0)
    record = asyncio.run(
        set_tenant(
            _running_state(_settings()).nats_url,
            tenant,
            exact_cache,
            semantic_cache,
            limits,
        )
    )
    click.echo(
        f"{record.tenant}: exact cache {'on' if record.exact_cache else 'off'}, "
        f"semantic cache {'on' if record.semantic_cache else 'off'}, "
        f"{record.limits.requests_per_minute or 'unlimited'} requests and "
        f"{record.limits.tokens_per_minute or 'unlimited'} tokens per minute"
    )


def _tenant(tenant: str) -> str:
    from llmops.ids import check_tenant

    try:
        return check_tenant(tenant)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _nanos(amount: str) -> int:
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise click.BadParameter(f"{amount!r} is not an amount") from None
    if value < 0:
        raise click.BadParameter("limits are not negative")
    return int(value * 1_000_000_000)


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        cli()
