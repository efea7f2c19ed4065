"""`llmops guardrails`: store, show, list and diff policies, and try one on a text.

Policies are read and written straight in NATS KV (`llmops.guardrails.store`):
LLMOPS_NATS_URL when it is set (a remote deployment, a CI job), else the running
local platform's. `test` calls the guardrails service (LLMOPS_GUARDRAILS_ADDR,
else the local platform's). Tables become tab-separated lines when stdout is
not a terminal, so they can be piped into `cut` or `grep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import click
import grpc
import nats
from google.protobuf.json_format import MessageToDict
from nats.js import JetStreamContext
from rich.console import Console
from rich.table import Table

from llmops.grpcutil import channel
from llmops.guardrails.policy import (
    DEFAULT_POLICY,
    POLICY_NAME_RE,
    Policy,
    PolicyError,
    parse_policy,
)
from llmops.guardrails.store import PolicyStore
from llmops.ids import check_tenant
from llmops.settings import CommonSettings, nats_servers
from llmops.v1 import guardrails_pb2, guardrails_pb2_grpc

from .platform import PlatformState

_STORED_FIELDS = {"version", "updated_at", "updated_by"}
_DIRECTIONS = ("input", "output", "context", "document")


def _address(field: str, from_state: Callable[[PlatformState], str]) -> str:
    """The setting when its LLMOPS_ variable is set, else the running local platform's."""
    settings = CommonSettings()
    if field in settings.model_fields_set:
        return str(getattr(settings, field))
    from .main import _running_state  # main imports this module

    return from_state(_running_state(settings))


def _nats_url() -> str:
    return _address("nats_url", lambda state: state.nats_url)


@contextlib.asynccontextmanager
async def _jetstream() -> AsyncIterator[JetStreamContext]:
    """JetStream on the running platform's NATS, closed afterwards (shared by the CLI groups)."""
    nc = await nats.connect(nats_servers(_nats_url()), name="llmops-cli")
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def _store() -> AsyncIterator[PolicyStore]:
    async with _jetstream() as js:
        yield await PolicyStore.open(js)


def _print_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on a terminal; otherwise a header line and one tab-separated line per row."""
    console = Console()
    if not console.is_terminal:
        for row in (header, *rows):
            click.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _dump(policy: Policy) -> dict[str, Any]:
    return policy.model_dump(mode="json", by_alias=True)


@click.group()
def guardrails() -> None:
    """Guardrail policies: which scanners run on questions, passages, answers and documents."""


def _checked(pattern: re.Pattern[str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def check(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not pattern.match(value):
            raise click.BadParameter(
                f"{value!r}: 1-63 of a-z 0-9 _ - (starting with a letter or digit)"
            )
        return value

    return check


def checked_by(
    check: Callable[[str], str],
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback applying a check (llmops.ids's grammar, a dead-letter filter ...):
    its ValueError becomes the option's error, in the check's own words."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        try:
            return None if value is None else check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


# A `--tenant` callback: llmops.ids's grammar and wording, as every entry point.
_checked_tenant = checked_by(check_tenant)


tenant_option = click.option(
    "--tenant", default="default", show_default=True, callback=_checked_tenant
)
name_option = click.option(
    "--name",
    default=DEFAULT_POLICY,
    show_default=True,
    help="policy",
    callback=_checked(POLICY_NAME_RE),
)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@guardrails.command("set")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", default="cli", show_default=True, help="who changed it (a key id, a name)")
def set_policy(path: Path, by: str) -> None:
    """Validate a policy file and store it as the next version of its tenant and name."""
    try:
        stored = asyncio.run(_set(parse_policy(path.read_text(), str(path)), by))
    except PolicyError as exc:
        click.echo(f"invalid policy, nothing stored: {exc}", err=True)
        sys.exit(2)
    click.echo(f"stored {stored.policy_id} version {stored.version}")


async def _set(policy: Policy, by: str) -> Policy:
    async with _store() as store:
        if policy.shadow and await store.get(policy.tenant, policy.shadow) is None:
            click.echo(
                f"warning: shadow {policy.tenant}/{policy.shadow} does not exist (yet); "
                "nothing runs beside this policy until it does",
                err=True,
            )
        return await store.put(policy, by)


@guardrails.command()
@tenant_option
@name_option
@click.option("--version", type=int, default=None, help="a past version (default: the current)")
@json_option
def show(tenant: str, name: str, version: int | None, as_json: bool) -> None:
    """A policy as YAML (ready to edit and `set` again)."""
    policy = asyncio.run(_get(tenant, name, version))
    if policy is None:
        which = f" version {version}" if version is not None else ""
        raise click.ClickException(f"no policy {tenant}/{name}{which}")
    if as_json:
        _print_json(_dump(policy))
    else:
        click.echo(policy.to_yaml(), nl=False)


async def _get(tenant: str, name: str, version: int | None) -> Policy | None:
    async with _store() as store:
        return await store.get(tenant, name, version)


@guardrails.command("list")
@click.option(
    "--tenant",
    default=None,
    help="only this tenant's policies (default: all)",
    callback=_checked_tenant,
)
@json_option
def list_policies(tenant: str | None, as_json: bool) -> None:
    """The current version of every policy."""
    policies = asyncio.run(_list(tenant))
    if as_json:
        _print_json([_dump(p) for p in policies])
        return
    header = ("tenant", "name", "version", "updated_at", "updated_by", "fail_mode", "shadow")
    _print_rows(
        (*header, "scanners"),
        [
            (
                p.tenant,
                p.name,
                str(p.version),
                p.updated_at,
                p.updated_by,
                p.fail_mode,
                p.shadow or "-",
                scanners_summary(p),
            )
            for p in policies
        ],
    )


async def _list(tenant: str | None) -> list[Policy]:
    async with _store() as store:
        return await store.list(tenant)


def scanners_summary(policy: Policy) -> str:
    """`in:pii,secrets ctx:prompt_injection out:groundedness` (directions without any left out)."""
    parts = []
    for label, rules in (
        ("in", policy.input),
        ("ctx", policy.context),
        ("out", policy.output),
        ("doc", policy.documents),
    ):
        names = list(rules.scanners())
        if names:
            parts.append(f"{label}:{','.join(names)}")
    return " ".join(parts) or "-"


@guardrails.command()
@tenant_option
@name_option
@json_option
def history(tenant: str, name: str, as_json: bool) -> None:
    """Every kept version, oldest first, with what changed from the one before."""
    versions = asyncio.run(_history(tenant, name))
    if not versions:
        raise click.ClickException(f"no policy {tenant}/{name}")
    summaries = ["created"] + [
        "; ".join(policy_changes(before, after)) or "no change"
        for before, after in itertools.pairwise(versions)
    ]
    if as_json:
        _print_json(
            [
                {"version": p.version, "updated_at": p.updated_at, "updated_by": p.updated_by}
                | {"changes": s}
                for p, s in zip(versions, summaries, strict=True)
            ]
        )
        return
    _print_rows(
        ("version", "updated_at", "updated_by", "changes"),
        [
            (str(p.version), p.updated_at, p.updated_by, s)
            for p, s in zip(versions, summaries, strict=True)
        ],
    )


async def _history(tenant: str, name: str) -> list[Policy]:
    async with _store() as store:
        return await store.history(tenant, name)


def policy_changes(before: Policy, after: Policy) -> list[str]:
    """What changed, one item per setting: `input.pii.threshold 0.5 -> 0.7`, `+output.toxicity`."""

    def content(p: Policy) -> dict[str, Any]:
        return p.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=_STORED_FIELDS)

    return _diff(content(before), content(after), "")


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in dict.fromkeys([*old, *new]):
            where = f"{path}.{key}" if path else key
            if key not in old:
                out.append(f"+{where}")
            elif key not in new:
                out.append(f"-{where}")
            else:
                out += _diff(old[key], new[key], where)
        return out
    if old == new:
        return []
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and all(isinstance(v, str) for v in old + new)
    ):
        added = [f"+{v}" for v in new if v not in old]
        removed = [f"-{v}" for v in old if v not in new]
        return [f"{path} {' '.join(added + removed) or 'reordered'}"]
    return [f"{path} {_show(old)} -> {_show(new)}"]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@guardrails.command("test")
@click.argument("text")
@tenant_option
@name_option
@click.option("--direction", type=click.Choice(_DIRECTIONS), default="input", show_default=True)
@click.option(
    "--passage",
    "passages",
    multiple=True,
    help="a retrieved passage (output: what the answer rests on; context: checked after TEXT)",
)
@json_option
def try_policy(
    text: str, tenant: str, name: str, direction: str, passages: tuple[str, ...], as_json: bool
) -> None:
    """Run a policy over TEXT on the running guardrails service and show every verdict."""
    is_context = direction == "context"
    request = guardrails_pb2.CheckRequest(
        tenant=tenant,
        policy=name,
        direction=guardrails_pb2.Direction.Value(f"DIRECTION_{direction.upper()}"),
        text="" if is_context else text,
        passages=[text, *passages] if is_context else list(passages),
        request_id="llmops-cli-test",
    )
    address = _address("guardrails_addr", lambda state: state.grpc["guardrails"])
    sys.exit(asyncio.run(_check(address, request, as_json)))


async def _check(address: str, request: guardrails_pb2.CheckRequest, as_json: bool) -> int:
    try:
        async with channel(address) as ch:
            reply = await guardrails_pb2_grpc.GuardrailsStub(ch).Check(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        click.echo(f"check failed: {exc.code().name}: {exc.details()}", err=True)
        return 1
    reply.restore.clear()  # the original values: never printed
    if as_json:
        _print_json(MessageToDict(reply, preserving_proto_field_name=True))
        return 0
    head, rows = check_report(
        reply, per_passage=request.direction == guardrails_pb2.DIRECTION_CONTEXT
    )
    for line in head:
        click.echo(line)
    _print_rows(VERDICT_HEADER, rows)
    return 0


VERDICT_HEADER = ("scanner", "passed", "score", "action", "latency", "spans", "reason")


def check_report(
    reply: guardrails_pb2.CheckResponse, per_passage: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The outcome's lines (action, policy, redacted text) and one row per verdict.

    `per_passage` (a context check): each scanner name carries its passage, `pii#2`.
    """
    action = guardrails_pb2.Action.Name(reply.action).removeprefix("ACTION_").lower()
    head = [
        f"action: {action} (policy {reply.policy_id} version {reply.policy_version}, "
        f"{reply.latency_ms:.1f} ms)"
    ]
    if reply.reason:
        head.append(f"reason: {reply.reason}")
    if reply.action == guardrails_pb2.ACTION_REDACT:
        head.append(f"redacted: {reply.text}")
    if reply.blocked_passages:
        head.append("blocked passages: " + ", ".join(str(i) for i in reply.blocked_passages))
    rows = [
        [
            v.scanner + (f"#{v.passage}" if per_passage else ""),
            "unscanned" if v.unscanned else "yes" if v.passed else "no",
            f"{v.score:.3f}",
            "-" if v.passed or not v.action else v.action,
            f"{v.latency_ms:.1f} ms",
            ", ".join(f"{s.type} {s.start}-{s.end}" for s in v.spans) or "-",
            v.reason or "-",
        ]
        for v in reply.verdicts
    ]
    return head, rows
