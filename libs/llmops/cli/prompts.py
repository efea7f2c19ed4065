"""`llmops prompts`: push, list, show, diff, label, roll back, split and export prompts.

Straight in NATS KV (`llmops.prompts.store`), like `llmops guardrails`:
LLMOPS_NATS_URL when it is set (a CI job, a remote deployment), else the
running local platform's. Every change is recorded as made by `cli:<os user>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
import nats

from llmops.prompts.catalog import PromptSummary
from llmops.prompts.model import (
    NAME_RE,
    Arm,
    LabelBook,
    PromptError,
    PromptNotFound,
    PromptVersion,
    dump_prompts_file,
    format_arms,
    weights_by_version,
)
from llmops.prompts.store import PromptStore, parse_ref
from llmops.settings import nats_servers

from .guardrails import (
    _checked,
    _checked_tenant,
    _nats_url,
    _print_json,
    _print_rows,
    json_option,
)

T = TypeVar("T")
_SPEC = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<version>v?\d+)|:(?P<label>.+))?$")
_ARM = re.compile(r"^v?(?P<version>\d+)=(?P<weight>-?\d+)$")

tenant_option = click.option(
    "--tenant", default="default", show_default=True, callback=_checked_tenant
)
name_argument = click.argument("name", callback=_checked(NAME_RE))


def _by() -> str:
    return f"cli:{getpass.getuser()}"


def _run(work: Callable[[PromptStore], Awaitable[T]], failed: str = "") -> T:
    """Run one store call; a bad input or an unknown name becomes a clear CLI error
    (after `failed`, when given)."""

    async def run() -> T:
        async with _store() as store:
            return await work(store)

    try:
        return asyncio.run(run())
    except (PromptError, PromptNotFound) as exc:
        raise click.ClickException(f"{failed}{exc}") from None


@contextlib.asynccontextmanager
async def _store() -> AsyncIterator[PromptStore]:
    nc = await nats.connect(nats_servers(_nats_url()), name="llmops-cli")
    try:
        yield await PromptStore.open(nc.jetstream())
    finally:
        await nc.close()


def _arms(arms: list[Arm]) -> list[dict[str, int]]:
    return [arm.model_dump() for arm in arms]


def _label_json(name: str, label: str, book: LabelBook) -> dict[str, Any]:
    return {"name": name, "label": label, "arms": _arms(book.labels.get(label, []))}


def _echo_move(book: LabelBook, label: str, json_out: bool) -> None:
    if json_out:
        _print_json(_label_json(book.name, label, book))
        return
    last = next((m for m in reversed(book.moves) if m.label == label), None)
    before = format_arms(last.before) if last is not None else "-"
    click.echo(f"{book.name}:{label} {before} -> {format_arms(book.labels.get(label, []))}")


@click.group()
def prompts() -> None:
    """Prompt templates: immutable versions, labels (production, staging, ...), A/B splits."""


@prompts.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@json_option
def push(path: Path, tenant: str, as_json: bool) -> None:
    """Store every prompt of a YAML file (nothing at all if any entry is invalid)."""
    text = path.read_text()
    pushed = _run(
        lambda store: store.push_text(text, tenant, _by(), source=str(path)),
        failed="nothing stored: ",
    )
    if as_json:
        _print_json([asdict(p) for p in pushed])
        return
    _print_rows(
        ("name", "version", "stored", "labels moved"),
        [
            (
                p.name,
                f"v{p.version}",
                "new" if p.created else "unchanged",
                ",".join(p.labels) or "-",
            )
            for p in pushed
        ],
    )


def _summary_json(summary: PromptSummary) -> dict[str, Any]:
    labels = {label: _arms(arms) for label, arms in sorted(summary.labels.items())}
    return asdict(summary) | {"labels": labels}


@prompts.command("list")
@tenant_option
@json_option
def list_prompts(tenant: str, as_json: bool) -> None:
    """The tenant's prompts and the baseline ones it inherits, with their labels."""
    summaries = _run(lambda store: store.list(tenant))
    if as_json:
        _print_json([_summary_json(s) for s in summaries])
        return
    _print_rows(
        ("name", "tenant", "latest", "labels", "description"),
        [
            (
                s.name,
                s.tenant,
                f"v{s.latest}",
                " ".join(f"{k}={format_arms(v)}" for k, v in sorted(s.labels.items())) or "-",
                s.description or "-",
            )
            for s in summaries
        ],
    )


@prompts.command()
@click.argument("spec")
@tenant_option
@json_option
def show(spec: str, tenant: str, as_json: bool) -> None:
    """One version as a prompts file: NAME (production), NAME@3 or NAME:LABEL."""
    match = _SPEC.match(spec)
    if match is None:
        raise click.BadParameter(f"{spec!r}: NAME, NAME@VERSION or NAME:LABEL", param_hint="SPEC")
    name, version, label = match["name"], match["version"], match["label"] or ""
    number = parse_ref(version)[0] if version else None
    found, labels = _run(lambda store: store.describe(tenant, name, number, label))
    if as_json:
        _print_json(found.model_dump(mode="json") | {"labels": labels})
        return
    click.echo(_header(found, labels))
    click.echo(dump_prompts_file([found.entry()]), nl=False)


def _header(found: PromptVersion, labels: list[str]) -> str:
    variables = ", ".join(sorted(found.variables)) or "none"
    return (
        f"# {found.tenant}/{found.name} v{found.version}, labels: {', '.join(labels) or '-'}\n"
        f"# created {found.created_at} by {found.created_by}; variables: {variables}"
    )


@prompts.command()
@name_argument
@click.argument("a")
@click.argument("b")
@tenant_option
@json_option
def diff(name: str, a: str, b: str, tenant: str, as_json: bool) -> None:
    """A unified diff between two versions, each a number (3, v3) or a label."""
    text = _run(lambda store: store.diff(tenant, name, a, b))
    if as_json:
        _print_json({"diff": text})
    else:
        click.echo(text or "(identical)", nl=not text)


@prompts.command()
@name_argument
@click.argument("version")
@click.option("--as", "label", required=True, help="the label to point at VERSION")
@tenant_option
@json_option
def label(name: str, version: str, label: str, tenant: str, as_json: bool) -> None:
    """Point a label at a version (the move is recorded)."""
    number = parse_ref(version)[0]
    if number is None:
        raise click.BadParameter(f"{version!r}: a version number (3 or v3)", param_hint="VERSION")
    book = _run(lambda store: store.set_label(tenant, name, label, number, _by()))
    _echo_move(book, label, as_json)


@prompts.command()
@name_argument
@click.argument("label")
@tenant_option
@json_option
def rollback(name: str, label: str, tenant: str, as_json: bool) -> None:
    """Move a label back to where it pointed before its last move."""
    book = _run(lambda store: store.rollback(tenant, name, label, _by()))
    _echo_move(book, label, as_json)


@prompts.command()
@name_argument
@click.argument("label")
@click.argument("arms", nargs=-1, required=True)
@tenant_option
@json_option
def split(name: str, label: str, arms: tuple[str, ...], tenant: str, as_json: bool) -> None:
    """Split a label's traffic between versions, sticky per user: split NAME LABEL v3=50 v4=50."""
    pairs = []
    for arm in arms:
        match = _ARM.match(arm)
        if match is None:
            raise click.BadParameter(f"{arm!r}: VERSION=WEIGHT, like v3=50", param_hint="ARMS")
        pairs.append((int(match["version"]), int(match["weight"])))
    try:
        weights = weights_by_version(pairs)
    except PromptError as exc:
        raise click.BadParameter(str(exc), param_hint="ARMS") from None
    book = _run(lambda store: store.split(tenant, name, label, weights, _by()))
    _echo_move(book, label, as_json)


def _names(ctx: click.Context, param: click.Parameter, names: tuple[str, ...]) -> list[str]:
    return [_checked(NAME_RE)(ctx, param, name) for name in names]


@prompts.command()
@name_argument
@tenant_option
@json_option
def history(name: str, tenant: str, as_json: bool) -> None:
    """Every label move of a prompt, oldest first: when, by whom, from and to."""
    moves = _run(lambda store: store.history(tenant, name))
    if as_json:
        _print_json([m.model_dump(mode="json") for m in moves])
        return
    _print_rows(
        ("at", "by", "label", "action", "from", "to"),
        [
            (m.at, m.by, m.label, m.action, format_arms(m.before), format_arms(m.after))
            for m in moves
        ],
    )


@prompts.command()
@click.argument("names", nargs=-1, callback=_names)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@tenant_option
@json_option
def export(names: list[str], output: Path | None, tenant: str, as_json: bool) -> None:
    """The tenant's prompts (or the named ones) as a YAML file that `push` takes back."""
    text = _run(lambda store: store.export(tenant, names))
    if output is not None:
        output.write_text(text)
    if as_json:
        _print_json({"yaml": text, "output": str(output) if output else None})
    elif output is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output}")
