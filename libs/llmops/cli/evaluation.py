"""`llmops datasets` and `llmops eval`: golden datasets, offline runs, compare/gate, A/B, drift.

Datasets live in the JetStream object store (LLMOPS_NATS_URL, else the local
platform's). Runs go through the gateway with the caller's key (LLMOPS_API_KEY,
else the tenant's local key); compare, runs and ab read ClickHouse through the
analytics SQL API with the same key, so a tenant sees only its own runs.
Tables become tab-separated lines when stdout is not a terminal; progress goes
to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import grpc
import nats
from google.protobuf.json_format import MessageToDict
from nats.js import JetStreamContext
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmops.apikeys import KeyRecord, parse_key
from llmops.bus.topology import API_KEYS_BUCKET
from llmops.evaluation.datasets import DatasetError, DatasetInfo, DatasetStore, parse_jsonl
from llmops.grpcutil import channel
from llmops.prompts.model import PromptError
from llmops.settings import CommonSettings

from .guardrails import _address, _jetstream, _print_json, _print_rows
from .platform import PlatformState

RUN_ITEMS_FAILED = 3  # `eval run` exit code when some items failed (the run still finished)
GATE_FAILED = 1


def _key(tenant: str) -> str:
    """LLMOPS_API_KEY, else the tenant's local key (made on first use)."""
    from .main import _local_key, _running_state, _settings  # main imports this module

    settings = _settings()
    return _local_key(settings, _running_state(settings), tenant)


def _grpc(field: str, service: str) -> str:
    return _address(field, lambda state: _state_address(state, service))


def _state_address(state: PlatformState, service: str) -> str:
    return state.grpc.get(service) or CommonSettings().service_addrs[service]


def _metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")
tenant_option = click.option("--tenant", default="default", show_default=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


# datasets ---------------------------------------------------------------------------


@click.group()
def datasets() -> None:
    """Golden datasets: JSONL questions with expected answers and sources, versioned by content."""


@datasets.command("push")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="the dataset's name")
@tenant_option
@click.option("--by", default="cli", show_default=True, help="who pushed it (recorded)")
@json_option
def datasets_push(path: Path, name: str, tenant: str, by: str, as_json: bool) -> None:
    """Store FILE.jsonl as a version of NAME (identical content: the same version, no copy)."""
    try:
        items = parse_jsonl(path.read_text(encoding="utf-8"))
        info, created = asyncio.run(_push(tenant, name, items, by))
    except DatasetError as exc:
        _fail(f"invalid dataset, nothing stored: {path}: {exc}")
    if as_json:
        _print_json(_info_json(info) | {"created": created})
        return
    state = "stored" if created else "unchanged, already stored as"
    click.echo(f"{state} {info.name}@{info.version} ({info.items} items, tenant {info.tenant})")


async def _push(tenant: str, name: str, items: Any, by: str) -> tuple[DatasetInfo, bool]:
    async with _jetstream() as js:
        store = await DatasetStore.open(js)
        return await store.push(tenant, name, items, by)


def _info_json(info: DatasetInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


@datasets.command("list")
@tenant_option
@click.option("--name", default="", help="only this dataset's versions")
@json_option
def datasets_list(tenant: str, name: str, as_json: bool) -> None:
    """Every stored version, newest first."""
    infos = asyncio.run(_list(tenant, name))
    if as_json:
        _print_json([_info_json(i) for i in infos])
        return
    _print_rows(
        ("name", "version", "items", "created_at", "by"),
        [(i.name, i.version, str(i.items), i.created_at, i.created_by) for i in infos],
    )


async def _list(tenant: str, name: str) -> list[DatasetInfo]:
    async with _jetstream() as js:
        return await (await DatasetStore.open(js)).list(tenant, name)


@datasets.command("show")
@click.argument("ref", metavar="NAME[@VERSION]")
@tenant_option
@json_option
def datasets_show(ref: str, tenant: str, as_json: bool) -> None:
    """A version's items (the newest version without @VERSION)."""
    try:
        dataset = asyncio.run(_get_dataset(tenant, ref))
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(
            {
                "name": dataset.name,
                "version": dataset.version,
                "created_at": dataset.created_at,
                "by": dataset.created_by,
                "items": [item.to_json() for item in dataset.items],
            }
        )
        return
    click.echo(f"{dataset.ref}: {len(dataset.items)} items, created {dataset.created_at}")
    _print_rows(
        ("id", "question", "expected_answer", "expected_sources"),
        [
            (i.id, i.question, i.expected_answer or "-", ", ".join(i.expected_sources) or "-")
            for i in dataset.items
        ],
    )


async def _get_dataset(tenant: str, ref: str) -> Any:
    async with _jetstream() as js:
        return await (await DatasetStore.open(js)).get(tenant, ref)


# eval -------------------------------------------------------------------------------


@click.group("eval")
def eval_group() -> None:
    """Offline evaluation runs, run comparison with CI gates, A/B analysis and drift."""


def parse_prompt(spec: str) -> tuple[str, str, str]:
    """`P`, `P@3` (a version) or `P:staging` (a label) -> (name, version, label)."""
    if "@" in spec:
        name, _, version = spec.partition("@")
        if not version.removeprefix("v").isdigit():
            raise click.BadParameter(f"{spec!r}: the version is a number, e.g. {name}@3")
        return name, version.removeprefix("v"), ""
    name, _, label = spec.partition(":")
    return name, "", label


@eval_group.command("run")
@click.option("--dataset", "dataset_ref", required=True, metavar="NAME[@VERSION]")
@click.option(
    "--prompt", "prompt_spec", default="default", show_default=True, metavar="P[@V|:LABEL]"
)
@click.option("--model", default="", help="model alias (default: the routes file's default)")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256))
@click.option("--judge", default="", metavar="MODEL", help="also grade with an LLM judge (alias)")
@click.option("--top-k", default=0, help="passages retrieved (0: the gateway's default, 5)")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "sparse"]), default="hybrid")
@click.option("--collection", default="", help="answer from this collection only")
@click.option("--policy", default="", help="the tenant's guardrail policy (default: default)")
@tenant_option
@json_option
def eval_run(
    dataset_ref: str,
    prompt_spec: str,
    model: str,
    concurrency: int,
    judge: str,
    top_k: int,
    mode: str,
    collection: str,
    policy: str,
    tenant: str,
    as_json: bool,
) -> None:
    """Send every item through the chat path, score it, and print the run id and summary.

    Exit code 0: every item answered; 3: the run finished but some items failed (the
    reason is printed); 2: bad input (unknown dataset, prompt or key).
    """
    from llmops.evaluation.runner import RunSettings

    prompt, version, label = parse_prompt(prompt_spec)
    settings = RunSettings(
        prompt=prompt,
        prompt_version=version,
        prompt_label=label,
        model=model,
        concurrency=concurrency,
        top_k=top_k,
        mode=mode,
        collection=collection,
        guardrail_policy=policy,
    )
    key = _key(tenant)
    try:
        run = asyncio.run(_run(dataset_ref, settings, key, judge))
    except (DatasetError, LookupError, PromptError) as exc:
        _fail(f"cannot run: {exc}")
    if as_json:
        _print_json(dataclasses.asdict(run))
    else:
        _print_run_summary(run)
    if run.failed_items:
        sys.exit(RUN_ITEMS_FAILED)


async def _run(dataset_ref: str, settings: Any, key: str, judge_model: str) -> Any:
    from llmops.evaluation.judge import Judge
    from llmops.evaluation.runner import Clients, run_eval
    from llmops.evaluation.scorers import ServiceScorer
    from llmops.pricebook import PriceBook
    from llmops.prompts.mirror import PromptMirror
    from llmops.prompts.store import PromptStore
    from llmops.v1 import (
        embedding_pb2_grpc,
        gateway_pb2_grpc,
        guardrails_pb2_grpc,
        inference_pb2_grpc,
        retrieval_pb2_grpc,
    )

    channels = {
        name: channel(_grpc(f"{name}_addr", name))
        for name in ("gateway", "retrieval", "embedding", "guardrails", "inference")
    }
    mirrors: list[PromptMirror | PriceBook] = []
    try:
        async with _jetstream() as js:
            key_id, tenant = await _identity(js, key)
            dataset = await (await DatasetStore.open(js)).get(tenant, dataset_ref)
            # An unknown prompt, version or label is refused before any item is sent.
            await (await PromptStore.open(js)).get(
                tenant,
                settings.prompt,
                int(settings.prompt_version) if settings.prompt_version else None,
                settings.prompt_label,
            )
            judge = None
            if judge_model:
                prompts, prices = PromptMirror(), PriceBook()
                mirrors += [prompts, prices]
                await prompts.start(js)
                await prices.start(js)
                judge = Judge(
                    inference_pb2_grpc.InferenceStub(channels["inference"]),
                    prompts,
                    prices,
                    judge_model,
                )
            clients = Clients(
                gateway=gateway_pb2_grpc.GatewayStub(channels["gateway"]),
                retrieval=retrieval_pb2_grpc.RetrievalStub(channels["retrieval"]),
                scorer=ServiceScorer(
                    embedding_pb2_grpc.EmbeddingStub(channels["embedding"]),
                    guardrails_pb2_grpc.GuardrailsStub(channels["guardrails"]),
                ),
                js=js,
                api_key=key,
                tenant=tenant,
                key_id=key_id,
                judge=judge,
            )
            with _progress(len(dataset.items), dataset.ref) as progress:
                return await run_eval(dataset, settings, clients, progress)
    finally:
        for mirror in mirrors:
            await mirror.stop()
        for ch in channels.values():
            await ch.close()


async def _identity(js: JetStreamContext, key: str) -> tuple[str, str]:
    """(key id, tenant) of an API key, from the keys bucket; LookupError if unknown."""
    parsed = parse_key(key)
    if parsed is None:
        raise LookupError("the API key is malformed")
    kv = await js.key_value(API_KEYS_BUCKET)
    try:
        entry = await kv.get(parsed[0])
    except nats.js.errors.KeyNotFoundError:
        raise LookupError(f"unknown API key {parsed[0]}") from None
    record = KeyRecord.model_validate_json(entry.value or b"{}")
    if record.revoked:
        raise LookupError(f"API key {parsed[0]} is revoked")
    return record.key_id, record.tenant


@contextlib.contextmanager
def _progress(total: int, what: str) -> Any:
    """A rich progress bar on a terminal (stderr); otherwise one plain line per item."""
    console = Console(stderr=True)
    if not console.is_terminal:

        def line(done: int, total: int, item: Any) -> None:
            outcome = f"failed: {item.error}" if item.failed else "ok"
            click.echo(f"[{done}/{total}] {item.item_id} {outcome}", err=True)

        yield line
        return
    with Progress(
        TextColumn(f"evaluating {what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("run", total=total, failed=0)
        failed = 0

        def advance(done: int, total: int, item: Any) -> None:
            nonlocal failed
            failed += item.failed
            bar.update(task, completed=done, failed=failed)

        yield advance


def _print_run_summary(run: Any) -> None:
    click.echo(f"run {run.run_id} {run.status}")
    click.echo(
        f"dataset {run.dataset}@{run.dataset_version} · prompt {run.prompt}@{run.prompt_version}"
        f" · model {run.settings.get('model_used') or run.model or 'default'}"
        f" · {len(run.items)} items, {run.failed_items} failed"
    )
    if run.reason:
        click.echo(f"reason: {run.reason}")
    if run.judge_input_tokens or run.judge_output_tokens:
        click.echo(
            f"judge: {run.judge_input_tokens} in / {run.judge_output_tokens} out tokens, "
            f"{run.judge_cost_nanos / 1e9:.6f} {run.currency}"
        )
    _print_rows(("metric", "mean"), [(m, f"{v:.4f}") for m, v in run.summary.items()])


@eval_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--fail-under", "fail_under", multiple=True, metavar="METRIC=VALUE")
@click.option("--no-regression", "no_regression", multiple=True, metavar="METRIC[:MARGIN]")
@click.option("--markdown", "markdown", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", default="default", show_default=True, help="uses a local key of it")
@json_option
def eval_compare(
    run_a: str,
    run_b: str,
    fail_under: tuple[str, ...],
    no_regression: tuple[str, ...],
    markdown: Path | None,
    tenant: str,
    as_json: bool,
) -> None:
    """RUN_B against RUN_A per metric: paired delta, bootstrap 95% CI, p, verdict.

    Exit code 1 when a gate fails: --fail-under METRIC=VALUE (run B's mean below VALUE),
    --no-regression METRIC[:MARGIN] (the CI's lower bound below -MARGIN; for latency,
    tokens, cost and refusal the upper bound above MARGIN).
    """
    from llmops.evaluation.compare import (
        CompareError,
        check_gates,
        compare_runs,
        load_run,
        markdown_report,
        parse_fail_under,
        parse_no_regression,
    )

    try:
        gates = [parse_fail_under(g) for g in fail_under]
        gates += [parse_no_regression(g) for g in no_regression]
        a, b = asyncio.run(_load_runs(load_run, _key(tenant), run_a, run_b))
    except CompareError as exc:
        _fail(f"cannot compare: {exc}")
    except grpc.aio.AioRpcError as exc:
        _fail(f"cannot compare: {exc.code().name}: {exc.details()}")
    comparisons = compare_runs(a, b)
    results = check_gates(comparisons, b, gates)
    if markdown is not None:
        markdown.write_text(markdown_report(a, b, comparisons, results), encoding="utf-8")
    if as_json:
        _print_json(
            {
                "run_a": a.run_id,
                "run_b": b.run_id,
                "metrics": [
                    dataclasses.asdict(c.stats) | {"verdict": c.verdict} for c in comparisons
                ],
                "gates": [
                    {"gate": str(r.gate), "passed": r.passed, "detail": r.detail} for r in results
                ],
            }
        )
    else:
        _print_rows(
            ("metric", "n", "A", "B", "delta", "95% CI", "p", "test", "verdict"),
            [
                (
                    c.stats.metric,
                    str(c.stats.n),
                    f"{c.stats.mean_a:.4f}",
                    f"{c.stats.mean_b:.4f}",
                    f"{c.stats.delta:+.4f}",
                    f"[{c.stats.ci_low:+.4f}, {c.stats.ci_high:+.4f}]",
                    f"{c.stats.p_value:.3g}",
                    c.stats.test,
                    c.verdict,
                )
                for c in comparisons
            ],
        )
        for r in results:
            click.echo(f"{'PASS' if r.passed else 'FAIL'} {r.gate}: {r.detail}")
    if any(not r.passed for r in results):
        sys.exit(GATE_FAILED)


async def _load_runs(load_run: Callable[..., Any], key: str, run_a: str, run_b: str) -> Any:
    from llmops.v1 import analytics_pb2_grpc

    async with channel(_grpc("analytics_addr", "analytics")) as ch:
        stub = analytics_pb2_grpc.AnalyticsStub(ch)
        return await load_run(stub, key, run_a), await load_run(stub, key, run_b)


@eval_group.command("runs")
@click.option("--since", default="7d", show_default=True, help="e.g. 7d, 12h, 30m")
@click.option("--tenant", default="default", show_default=True, help="uses a local key of it")
@json_option
def eval_runs(since: str, tenant: str, as_json: bool) -> None:
    """Recent offline runs, newest first."""
    from llmops.evaluation.ab import parse_since
    from llmops.evaluation.compare import query
    from llmops.evaluation.queries import RUNS_SQL, time_param
    from llmops.v1 import analytics_pb2_grpc

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def rows() -> list[dict[str, Any]]:
        async with channel(_grpc("analytics_addr", "analytics")) as ch:
            stub = analytics_pb2_grpc.AnalyticsStub(ch)
            return await query(stub, _key(tenant), RUNS_SQL, {"since": time_param(start)})

    found = asyncio.run(rows())
    if as_json:
        _print_json(found)
        return
    _print_rows(
        ("run", "started_at", "status", "dataset", "prompt", "model", "items", "failed", "reason"),
        [
            (
                r["run_id"],
                str(r["started_at"]),
                r["status"],
                f"{r['dataset']}@{r['dataset_version']}",
                f"{r['prompt']}@{r['prompt_version']}",
                r["model"] or "default",
                str(r["items"]),
                str(r["failed_items"]),
                r["reason"] or "-",
            )
            for r in found
        ],
    )


@eval_group.command("ab")
@click.option("--prompt", required=True, help="the prompt whose label splits traffic")
@click.option("--label", default="", help="one label (default: every split label)")
@click.option("--since", default="7d", show_default=True, help="e.g. 7d, 12h, 30m")
@click.option("--min-sample", default=100, show_default=True, help="requests per arm for a verdict")
@click.option("--tenant", default="default", show_default=True, help="uses a local key of it")
@json_option
def eval_ab(
    prompt: str, label: str, since: str, min_sample: int, tenant: str, as_json: bool
) -> None:
    """Each arm's requests, online scores, thumbs-up, p95 latency and cost, against the first."""
    from llmops.evaluation.ab import analyse, load_arms, parse_since
    from llmops.v1 import analytics_pb2_grpc

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def arms() -> Any:
        async with channel(_grpc("analytics_addr", "analytics")) as ch:
            stub = analytics_pb2_grpc.AnalyticsStub(ch)
            return await load_arms(stub, _key(tenant), prompt, label, start)

    found = asyncio.run(arms())
    verdicts = analyse(found, min_sample)
    if as_json:
        _print_json(
            {
                "arms": [dataclasses.asdict(a) for a in found],
                "comparisons": [
                    dataclasses.asdict(v) | {"arm": v.arm.arm, "baseline": v.baseline.arm}
                    for v in verdicts
                ],
            }
        )
        return
    if not found:
        click.echo(f"no A/B traffic for prompt {prompt!r} since {since}")
        return

    def opt(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    _print_rows(
        (
            "label",
            "arm",
            "requests",
            "errors",
            "thumbs_up",
            "rated",
            "p95_ms",
            "cost/req",
            "scores",
        ),
        [
            (
                a.label,
                a.arm,
                str(a.requests),
                str(a.errors),
                opt(a.thumbs_up_rate, ".3f"),
                str(a.ratings),
                opt(a.p95_ms, ".1f"),
                opt(a.cost_per_request, ".6f"),
                " ".join(f"{k}={v:.3f}" for k, v in sorted(a.online_scores.items())) or "-",
            )
            for a in found
        ],
    )
    for v in verdicts:
        tests = []
        if v.thumbs_p is not None:
            tests.append(f"thumbs-up p {v.thumbs_p:.3g} (sequential {v.sequential_p:.3g})")
        tests += [f"{s.evaluator} {s.delta:+.3f} p {s.p_value:.3g}" for s in v.scores]
        click.echo(f"{v.arm.label} {v.arm.arm} vs {v.baseline.arm}: {v.verdict}")
        if tests:
            click.echo("  " + "; ".join(tests))


@eval_group.command("drift")
@tenant_option
@click.option("--publish", is_flag=True, help="also publish the outcomes as drift events")
@json_option
def eval_drift(tenant: str, publish: bool, as_json: bool) -> None:
    """Check drift now: recent questions and online scores against the reference window.

    Exit code 1 when a signal drifted.
    """
    from llmops.v1 import evaluation_pb2, evaluation_pb2_grpc

    async def check() -> Any:
        async with channel(_grpc("evaluation_addr", "evaluation")) as ch:
            stub = evaluation_pb2_grpc.EvaluationStub(ch)
            return await stub.CheckDrift(
                evaluation_pb2.CheckDriftRequest(tenant=tenant, publish=publish),
                metadata=_metadata(_key(tenant)),
                timeout=120,
            )

    try:
        reply = asyncio.run(check())
    except grpc.aio.AioRpcError as exc:
        _fail(f"drift check failed: {exc.code().name}: {exc.details()}", 1)
    if as_json:
        _print_json(MessageToDict(reply, preserving_proto_field_name=True))
    else:
        _print_rows(
            (
                "signal",
                "method",
                "statistic",
                "p_value",
                "threshold",
                "drifted",
                "n_ref",
                "n_recent",
            ),
            [
                (
                    r.signal,
                    r.method,
                    f"{r.statistic:.4f}",
                    "-" if r.p_value < 0 else f"{r.p_value:.4g}",
                    f"{r.threshold:g}",
                    "yes" if r.drifted else "no",
                    str(r.n_reference),
                    str(r.n_recent),
                )
                for r in reply.results
            ],
        )
        for skipped in reply.skipped:
            click.echo(f"skipped: {skipped}")
    if any(r.drifted for r in reply.results):
        sys.exit(1)
