"""Scale-out: one process of each service against a cluster of two, same machine, same run.

    .venv/bin/python bench/scaleout.py [--docs 200] [--events 50000] [--duration 15] [--json]

Two platforms, one after the other (Triton off; chat through the inference
service, LLMOPS_ROUTING=remote, to a local OpenAI-compatible mock with a fixed
delay, bench/mock_openai.py; the default guardrail policy on every request):

1. `llmops up`: one NATS server, one process of every service;
2. `llmops up --cluster`: three NATS nodes with R3 streams and buckets, two
   processes of every service (tests/support.run_platform with cluster=True).

On each, the same three throughputs:

- ingest: --docs SciFact abstracts published to the ingestion subject, the
  clock stopping when the last is reported searchable (bench/ingest.py's
  `through_platform`), after a few others warmed the model up; chunks/s;
- chat: --clients closed-loop clients of the gateway's gRPC `Chat`
  (bench/loadgen.py, split over two load processes, each on one gateway of
  the address book, so both configurations get the same client side);
  requests/s over --duration after --warmup, caches and retrieval off;
- analytics: --events InteractionEvents published to the events stream
  (bench/analytics.py's generator and publisher) while the platform runs; the
  clock stops when ClickHouse holds them all (count through `Analytics.Query`);
  events/s.

Then, on the cluster only, tests/cluster.py's fault sequence (kill -9 a NATS
node; kill -9 replica 1 of every service; SIGSTOP another node for 8 s) while
chat callers and a document publisher run: the longest gap between answered
requests (in all, and during each fault), the refusals, and the seconds until
every component was ready again after each fault.

Before each part the event consumers are let drain (what the previous part
left) and the bench waits a little for other work on the shared machine to
end; each figure comes with the platform's CPU per unit of work and the cores
busy with other work on the machine meanwhile. Progress goes to stderr;
the figures to stdout (a table on a terminal, tab-separated lines otherwise,
`--json` for scripts) and to bench/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from bench.analytics import prepublish  # noqa: E402
from bench.chat import start_mock  # noqa: E402
from bench.ingest import load_documents, through_platform  # noqa: E402
from tests.cluster import FREEZE_S, QUESTION, Load, caller, publish_docs, run_faults  # noqa: E402
from tests.e2e.gateway_support import ask, new_tenant  # noqa: E402
from tests.e2e.test_scaleout import ROUTES  # noqa: E402
from tests.support import Platform, run_platform  # noqa: E402

from bench import procs  # noqa: E402
from llmops.bus.topology import EVENTS_STREAM  # noqa: E402
from llmops.cli.localkey import ensure_local_key  # noqa: E402
from llmops.grpcutil import channel  # noqa: E402
from llmops.queryrows import rows_of  # noqa: E402
from llmops.v1 import analytics_pb2, analytics_pb2_grpc, gateway_pb2_grpc  # noqa: E402

LOADGEN = ROOT / "bench" / "loadgen.py"
WARMUP_DOCS = 8  # ingested (and not counted) before the measured documents
QUIET_CORES = 0.2  # a part starts once other work on the machine uses less than this...
QUIET_WAIT_S = 20.0  # ...or after waiting this long
LOAD_PROCESSES = 2  # each on one gateway of the address book (both on the one, single)
# bench/analytics.py's EventMaker gives every event one of the tenants tenant-00..19:
# counted apart from the chat part's own interactions.
EVENTS_SQL = "SELECT count() FROM interactions WHERE startsWith(tenant, 'tenant-')"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- CPU bookkeeping


def _own_cpu_s() -> float:
    """This process and its waited-for children (the load generators, CLI calls)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Cpu:
    """CPU used over one part: by the platform's process tree, by the bench side (this
    process, its load generators, the mock), and the cores of the machine busy meanwhile."""

    platform_pid: int
    mock_pid: int

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.ticks = procs.machine_ticks()
        self.platform0 = procs.cpu_s(self.platform_pid)
        self.bench0 = _own_cpu_s() + procs.cpu_s(self.mock_pid)

    def figures(self, units: float) -> dict[str, float]:
        wall = time.monotonic() - self.started
        machine = procs.busy_cores(self.ticks)
        platform = procs.cpu_s(self.platform_pid) - self.platform0
        bench = _own_cpu_s() + procs.cpu_s(self.mock_pid) - self.bench0
        return {
            "platform_cpu_ms_per_unit": platform * 1000 / max(units, 1),
            "platform_cores": platform / wall,
            "bench_cores": bench / wall,
            "other_cores": max(0.0, machine - (platform + bench) / wall),
        }


# ---------------------------------------------------------------- the three throughputs


async def wait_quiet(platform_pid: int, mock_pid: int) -> float:
    """Seconds waited (at most QUIET_WAIT_S) until work outside this run (the machine is
    shared) keeps less than QUIET_CORES busy: the platform's idle load does not count."""
    started = time.monotonic()
    while True:
        cpu = Cpu(platform_pid, mock_pid)
        await asyncio.sleep(1.0)
        other = cpu.figures(1)["other_cores"]
        waited = time.monotonic() - started
        if other < QUIET_CORES:
            return waited
        if waited > QUIET_WAIT_S:
            say(f"  note: other work keeps {other:.2f} cores busy")
            return waited


async def drained(platform: Platform, timeout_s: float = 180) -> float:
    """Seconds until every consumer of the events stream has taken and acked everything
    (metering and analytics still working off the previous part would slow the next)."""
    nc = await nats.connect(platform.nats_servers)
    started = time.monotonic()
    try:
        js = nc.jetstream()
        while time.monotonic() - started < timeout_s:
            infos = await js.consumers_info(EVENTS_STREAM.name)
            left = {i.name: (i.num_pending or 0) + (i.num_ack_pending or 0) for i in infos}
            if not any(left.values()):
                return time.monotonic() - started
            await asyncio.sleep(0.5)
        say(f"  note: event consumers not drained after {timeout_s:.0f} s: {left}")
        return time.monotonic() - started
    finally:
        await nc.close()


async def ingest_part(
    platform: Platform, args: argparse.Namespace, mock_pid: int
) -> dict[str, Any]:
    docs = load_documents(args.docs + WARMUP_DOCS)
    warmup, docs = docs[args.docs :], docs[: args.docs]
    say(f"  ingest: {len(warmup)} documents to warm up, then {len(docs)} publish -> searchable...")
    await through_platform(warmup, platform.nats_url)  # the first batches load the model
    cpu = Cpu(platform.proc.pid, mock_pid)
    seconds, chunks = await through_platform(docs, platform.nats_url)
    figures = {"documents": len(docs), "chunks": chunks, "seconds": seconds}
    figures |= {"rate": chunks / seconds, **cpu.figures(chunks)}
    say(f"    {chunks} chunks in {seconds:.1f} s: {figures['rate']:.1f} chunks/s")
    return figures


async def check_chat(platform: Platform) -> None:
    """One answered request first: a broken route should fail here, not as 64 clients' errors."""
    async with channel(platform.addr("gateway")) as ch:
        await gateway_pb2_grpc.GatewayStub(ch).ChatOnce(
            ask(QUESTION, retrieval_off=True, no_cache=True),
            metadata=(("authorization", f"Bearer {platform.api_key}"),),
            timeout=30,
        )


async def loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LOADGEN),
        json.dumps(spec),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{err.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def chat_part(platform: Platform, args: argparse.Namespace, mock_pid: int) -> dict[str, Any]:
    await check_chat(platform)
    gateways = platform.addr("gateway").split(",")
    say(
        f"  chat: {args.clients} clients over {len(gateways)} gateway(s), "
        f"{args.warmup:g} s warm-up + {args.duration:g} s..."
    )
    specs = [
        {
            "kind": "gateway",
            "addr": gateways[i % len(gateways)],
            "api_key": platform.api_key,
            "question": QUESTION,
            "retrieval": {"disabled": True},
            "concurrency": args.clients // LOAD_PROCESSES + (i < args.clients % LOAD_PROCESSES),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        }
        for i in range(LOAD_PROCESSES)
    ]
    cpu = Cpu(platform.proc.pid, mock_pid)
    runs = await asyncio.gather(*(loadgen(spec) for spec in specs))
    requests = sum(r["requests"] for r in runs)
    errors: dict[str, int] = {}
    for r in runs:
        for what, n in r["errors"].items():
            errors[what] = errors.get(what, 0) + n
    mean = sum(r["latency_ms"].get("mean", 0) * r["requests"] for r in runs) / max(requests, 1)
    figures = {
        "clients": args.clients,
        "gateways": len(gateways),
        "requests": requests,
        "rate": requests / args.duration,
        "mean_ms": mean,
        "p99_ms_worst": max(r["latency_ms"].get("p99", float("nan")) for r in runs),
        "errors": errors,
        "loadgen_cores": sum(r["loadgen_cpu"] for r in runs),
        **cpu.figures(requests),
    }
    say(
        f"    {figures['rate']:.1f} req/s, mean {mean:.0f} ms"
        + (f", errors {errors}" if errors else "")
    )
    return figures


async def event_count(stub: analytics_pb2_grpc.AnalyticsStub, key: str) -> int:
    reply = await stub.Query(
        analytics_pb2.QueryRequest(sql=EVENTS_SQL),
        metadata=(("authorization", f"Bearer {key}"),),
        timeout=30,
    )
    return int(rows_of(reply)[0][0])


async def analytics_part(
    platform: Platform, args: argparse.Namespace, mock_pid: int
) -> dict[str, Any]:
    key = await ensure_local_key(platform.nats_url, platform.data_dir, analyst=True)
    n = args.events
    nc = await nats.connect(platform.nats_servers)
    say(f"  analytics: {n:,} InteractionEvents published while the platform runs...")
    cpu = Cpu(platform.proc.pid, mock_pid)
    started = last = time.monotonic()
    publishing = asyncio.create_task(prepublish(nc.jetstream(), n, int(time.time() * 1000)))
    ch = channel(platform.addr("analytics"))
    stub = analytics_pb2_grpc.AnalyticsStub(ch)
    try:
        while (count := await event_count(stub, key)) < n:
            now = time.monotonic()
            if now - started > args.timeout:
                raise RuntimeError(f"only {count:,} of {n:,} events stored after {args.timeout} s")
            if now - last > 5:
                last = now
                say(f"    {count:,}/{n:,} rows, {count / (now - started):,.0f} events/s")
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        published_s = await publishing
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        await ch.close()
        await nc.close()
    figures = {
        "events": n,
        "seconds": seconds,
        "rate": n / seconds,
        "publish_rate": n / published_s,
        **cpu.figures(n),
    }
    say(f"    {n:,} rows in {seconds:.1f} s: {figures['rate']:,.0f} events/s")
    return figures


PARTS = (("ingest", ingest_part), ("chat", chat_part), ("analytics", analytics_part))


async def measure(platform: Platform, args: argparse.Namespace, mock_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, part in PARTS:
        settle = await drained(platform)
        quiet = await wait_quiet(platform.proc.pid, mock_pid)
        figures = await part(platform, args, mock_pid)
        out[name] = {"drained_before_s": settle, "waited_for_quiet_s": quiet, **figures}
    return out


# ---------------------------------------------------------------- faults


@dataclass
class GapLoad(Load):
    """What the callers saw, and every gap between two answers: (start, end)."""

    gaps: list[tuple[float, float]] = field(default_factory=list)

    def answer(self, request_id: str) -> None:
        self.gaps.append((self.last_answer, time.monotonic()))
        super().answer(request_id)


def gaps_by_fault(
    gaps: list[tuple[float, float]], first_fault: float, recovered: dict[str, float]
) -> dict[str, float]:
    """The longest gap in answers during each fault: from its signal until every component
    was ready again (tests.cluster.run_faults runs them back to back; a freeze also lasts
    FREEZE_S before its recovery is timed). A gap counts for the fault it overlaps most."""
    windows, at = {}, first_fault
    for fault, took in recovered.items():
        end = at + took + (FREEZE_S if "frozen" in fault else 0.0)
        windows[fault] = (at, end)
        at = end
    longest = dict.fromkeys(windows, 0.0)
    for start, end in gaps:
        overlap = {f: min(end, b) - max(start, a) for f, (a, b) in windows.items()}
        fault = max(overlap, key=overlap.__getitem__)
        if overlap[fault] > 0:
            longest[fault] = max(longest[fault], end - start)
    return longest


async def faults_part(
    platform: Platform, args: argparse.Namespace, mock_pid: int
) -> dict[str, Any]:
    await drained(platform)
    await wait_quiet(platform.proc.pid, mock_pid)
    tenant = await new_tenant(platform)
    say(f"  faults: {args.fault_callers} chat callers and a document publisher, then faults...")
    load, stop = GapLoad(), asyncio.Event()
    async with channel(platform.addr("gateway")) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        callers = [
            asyncio.create_task(caller(stub, tenant, load, stop)) for _ in range(args.fault_callers)
        ]
        # One document a second for longer than the faults take; stopped with them.
        publisher = asyncio.create_task(publish_docs(platform, f"docs-{uuid.uuid4().hex[:6]}", 900))
        started = time.monotonic()
        try:
            await asyncio.sleep(3)
            first_fault = time.monotonic()
            recovered = await run_faults(platform)
            await asyncio.sleep(2)
        finally:
            stop.set()
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            await asyncio.gather(*callers)
        seconds = time.monotonic() - started
    gaps = gaps_by_fault(load.gaps, first_fault, recovered)
    for fault, took in recovered.items():
        say(
            f"    {fault}: every component ready again after {took:.1f} s; "
            f"longest gap in answers {gaps[fault]:.2f} s"
        )
    say(f"    {load.summary()}")
    return {
        "callers": args.fault_callers,
        "seconds": seconds,
        "answered": len(load.answered),
        "refused": dict(load.refused),
        "refusal_details": load.why,
        "slowest_s": load.slowest_s,
        "longest_gap_s": load.longest_gap_s,
        "recovered_s": recovered,
        "longest_gap_s_by_fault": gaps,
    }


# ---------------------------------------------------------------- output


def print_rows(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns on a terminal; otherwise a header line and tab-separated lines."""
    if not sys.stdout.isatty():
        for row in (header, *rows):
            print("\t".join(row))
        return
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


FIGURES = (  # part, its figure, format, its unit of work, CPU per unit scaled to ms
    ("ingest", "ingest chunks/s", "{:.1f}", "ms/chunk", 1),
    ("chat", "gateway req/s", "{:.1f}", "ms/request", 1),
    ("analytics", "analytics events/s", "{:,.0f}", "µs/event", 1000),
)


def report(results: dict[str, Any]) -> None:
    single, cluster = results["single"], results["cluster"]
    rows = []
    for part, label, fmt, unit, scale in FIGURES:
        a, b = single[part], cluster[part]
        name = f"{label} at {a['clients']} clients" if part == "chat" else label
        rate = [fmt.format(x["rate"]) for x in (a, b)]
        rows.append([name, *rate, f"{b['rate'] / a['rate']:.2f}"])
        cost = [x["platform_cpu_ms_per_unit"] * scale for x in (a, b)]
        rows.append(
            [
                f"{part}: platform CPU {unit}",
                f"{cost[0]:.2f}",
                f"{cost[1]:.2f}",
                f"{cost[1] / cost[0]:.2f}",
            ]
        )
        cores = [f"{x['platform_cores']:.2f} / {x['other_cores']:.2f}" for x in (a, b)]
        rows.append([f"{part}: cores busy, platform / other work", *cores, ""])
    startup = [f"{x['startup_s']:.1f}" for x in (single, cluster)]
    rows.append(["start-up to ready, s", *startup, ""])
    print_rows(["figure", "single", "cluster", "cluster/single"], rows)

    faults = cluster["faults"]
    fault_rows = [
        [fault, f"{took:.1f}", f"{faults['longest_gap_s_by_fault'][fault]:.2f}"]
        for fault, took in faults["recovered_s"].items()
    ]
    fault_rows.append(
        [f"the whole {faults['seconds']:.0f} s", "", f"{faults['longest_gap_s']:.2f}"]
    )
    print()
    print_rows(
        ["fault (cluster)", "all ready again after, s", "longest gap in answers, s"], fault_rows
    )
    refused = ", ".join(f"{code} {n}" for code, n in faults["refused"].items()) or "none"
    print(
        f"{faults['callers']} callers: {faults['answered']} answered, refused: {refused}; "
        f"slowest call {faults['slowest_s']:.2f} s"
    )
    load = results["load_average"]
    print(f"load average (1/5/15 min): at the start {load['start']}, at the end {load['end']}")


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def platform_up(tmp: Path, routes: Path, cluster: bool) -> Iterator[tuple[Platform, float]]:
    extra = {"LLMOPS_ROUTES_FILE": str(routes), "LLMOPS_ROUTING": "remote"}
    started = time.monotonic()
    name = "cluster" if cluster else "single"
    with run_platform(
        tmp / name, triton=False, extra_env=extra, timeout_s=300, cluster=cluster
    ) as p:
        yield p, time.monotonic() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": len(os.sched_getaffinity(0)),
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "json")},
    }
    mock, port = start_mock(args.delay_ms)
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            routes = tmp / "routes.yaml"
            routes.write_text(ROUTES.format(mock=f"http://127.0.0.1:{port}/v1"))
            for name, cluster in (("single", False), ("cluster", True)):
                say(f"{name}: llmops up{' --cluster' if cluster else ''} (Triton off)...")
                with platform_up(tmp, routes, cluster) as (platform, startup_s):
                    say(f"  ready in {startup_s:.1f} s")
                    figures = {"startup_s": startup_s, **await measure(platform, args, mock.pid)}
                    if cluster:
                        figures["faults"] = await faults_part(platform, args, mock.pid)
                    results[name] = figures
                say(f"  {name} stopped")
    finally:
        mock.terminate()
        mock.wait(10)
    results["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200, help="documents to ingest")
    parser.add_argument("--events", type=int, default=50_000, help="interaction events")
    parser.add_argument("--clients", type=int, default=64, help="concurrent chat clients")
    parser.add_argument("--duration", type=float, default=15.0, help="measured chat seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted chat seconds first")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the mock upstream's delay")
    parser.add_argument("--fault-callers", type=int, default=4, help="chat callers during faults")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a part after")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaleout.json")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    parser.add_argument("--report", type=Path, help="print the figures of an earlier run's JSON")
    args = parser.parse_args()
    if args.report:
        results = json.loads(args.report.read_text())
    else:
        with contextlib.redirect_stdout(sys.stderr):  # the benches' own progress lines
            results = asyncio.run(run(args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        say(f"written to {args.out}")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results)


if __name__ == "__main__":
    main()
