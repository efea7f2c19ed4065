"""The guardrails service under load: checks per second and CPU per check, default policy.

    .venv/bin/python bench/guard_load.py [--clients 8,64] [--duration 10] [--repeat 2]
    .venv/bin/python bench/guard_load.py --py-spy bench/results/guard_load  # + profiles

A real nats-server and the guardrails service (`python -m guardrails`, its own process,
its shipped settings and default policy) on free ports; the load comes from this script
in a second process (bench/loadgen.py's closed loop: N callers, each sending its next
check when the last one is answered). One caller does what the gateway does for one
request of the chat benchmark's proxy part (retrieval off): `input` is the question's
unary `Check`, `output` the answer's `CheckStream` (start, the mock's pieces one message
each, end), `request` both in turn. CPU is the service's user + system time over the
measured window, per request. With `--py-spy`, py-spy samples the service through one
more run of each kind at the highest client count (not counted: sampling slows it), and
the functions its busy samples were in are printed (the raw samples kept in that folder).

The question is the same every time, as in the chat benchmark: the service keeps no
verdict per text, so every check does the work of a new one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

from tests.support import ServiceProcess, nats_server  # noqa: E402

import chat  # noqa: E402
import procs  # noqa: E402
from llmops.grpcutil import channel  # noqa: E402
from llmops.v1 import guardrails_pb2, guardrails_pb2_grpc  # noqa: E402
from loadgen import closed_loop  # noqa: E402
from mock_openai import PIECES  # noqa: E402

QUESTION = chat.QUESTION
TENANT = "default"  # its policy is the default one the service installs
READY = "ready"  # the load process's line when its clock starts
KINDS = ("input", "output", "request")
_LINE = re.compile(r":\d+\)$")  # a frame's line number: functions are counted whole
# Native frames of a thread that waits (a lock, the GIL, a poll): py-spy's --native samples
# them too, and they are no CPU.
_WAITING = (
    "acquire_lock",
    "cond_timedwait",
    "cond_wait",
    "take_gil",
    "epoll_pwait",
    "epoll_wait",
    "poll (libc",
    "select_poll",
    "futex",
)


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """One closed-loop run against the service (the load process)."""
    ch = channel(spec["addr"])
    stub = guardrails_pb2_grpc.GuardrailsStub(ch)
    question = guardrails_pb2.CheckRequest(
        tenant=TENANT, direction=guardrails_pb2.DIRECTION_INPUT, text=QUESTION
    )
    start = guardrails_pb2.StreamCheckRequest(start=guardrails_pb2.StreamStart(tenant=TENANT))
    pieces = [guardrails_pb2.StreamCheckRequest(piece=p) for p in PIECES]
    end = guardrails_pb2.StreamCheckRequest(end=True)

    async def one(_started: float) -> tuple[float | None, dict[str, float] | None]:
        """One request; `unscanned` is 1 when a scanner did not run (over the time budget:
        the default policy fails open, so such a check is fast because it is not done)."""
        verdicts: list[guardrails_pb2.Verdict] = []
        if spec["kind"] in ("input", "request"):
            reply = await stub.Check(question, timeout=10)
            if reply.action != guardrails_pb2.ACTION_ALLOW:
                raise RuntimeError(f"the question was not allowed: {reply}")
            verdicts.extend(reply.verdicts)
        if spec["kind"] in ("output", "request"):
            call = stub.CheckStream(iter([start, *pieces, end]), timeout=10)
            async for out in call:
                if out.blocked:
                    raise RuntimeError(f"the answer was blocked: {out.reason}")
                verdicts.extend(out.verdicts)
        return None, {"unscanned": float(any(v.unscanned for v in verdicts))}

    print(READY, flush=True)
    try:
        result: dict[str, Any] = await closed_loop(
            one, spec["concurrency"], spec["warmup_s"], spec["duration_s"]
        )
        return result
    finally:
        await ch.close()


def load(spec: dict[str, Any], pid: int, profile: Path | None) -> dict[str, Any]:
    """A run in its own process; the service's CPU over the measured window only."""
    chat.wait_quiet(limit_s=5)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--client", json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != READY:
        raise RuntimeError("the load process did not start")
    time.sleep(spec["warmup_s"])
    cpu, ticks, began = procs.cpu_s(pid), procs.machine_ticks(), time.perf_counter()
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(spec["duration_s"])),
                "--rate",
                "100",
                "--format",
                "raw",
                "--native",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(spec["duration_s"])
    used, wall, busy = procs.cpu_s(pid) - cpu, time.perf_counter() - began, procs.busy_cores(ticks)
    out, _ = proc.communicate(timeout=120)
    if spy is not None:
        spy.wait(60)
    if proc.returncode != 0:
        raise RuntimeError("the load process failed")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["kind"] = spec["kind"]
    result["unscanned"] = result["extra_ms"].get("unscanned", {}).get("mean", 0.0)
    result["cpu_ms_per_request"] = used * 1000 / max(result["requests"], 1)
    result["service_cores"] = used / wall
    result["other_cores"] = max(0.0, busy - used / wall - result["loadgen_cpu"])
    if result["errors"]:
        print(f"    errors: {result['errors']}")
    return result


def top_entries(raw: Path, n: int = 12) -> list[tuple[str, float]]:
    """Where the busy samples were, by the innermost Python function on each stack (with the
    native code it called: ONNX Runtime's kernels count to `Session.run`)."""
    total, counts = 0, dict[str, int]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(w in f for f in frames[-4:] for w in _WAITING):
            continue
        frames = [_LINE.sub(")", f) for f in frames if ".py" in f]
        total += int(count)
        if frames:
            counts[frames[-1]] = counts.get(frames[-1], 0) + int(count)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [(frame, samples / max(total, 1)) for frame, samples in ranked[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=chat.parse_clients, default=[8, 64])
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2, help="runs per point")
    parser.add_argument("--py-spy", type=Path, help="folder for py-spy's raw samples")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "guard_load.json")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client(json.loads(args.client)))), flush=True)
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, nats_server(Path(tmp) / "nats") as url:
        service = ServiceProcess("guardrails", url, Path(tmp) / "guardrails")
        service.start()
        try:
            asyncio.run(_healthy(service))
            for kind in args.kinds:
                spec = {
                    "addr": service.addr,
                    "kind": kind,
                    "warmup_s": args.warmup,
                    "duration_s": args.duration,
                }
                for clients in args.clients:
                    for i in range(args.repeat):
                        r = load({**spec, "concurrency": clients}, service.pid, None)
                        runs.append({"kind": kind, "clients": clients, "run": i + 1, **r})
                        _print(f"run {i + 1}", r)
                if args.py_spy:  # a run of its own: sampling slows the service down
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    clients = max(args.clients)
                    profile = args.py_spy / f"{kind}-{clients}.txt"
                    _print("py-spy", load({**spec, "concurrency": clients}, service.pid, profile))
                    for frame, share in top_entries(profile):
                        print(f"      {share:6.1%}  {frame[:150]}")
        finally:
            service.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": runs}))
    print(f"written to {args.out}")


def _print(label: str, r: dict[str, Any]) -> None:
    print(
        f"{r['kind']:7}{r['concurrency']:>4} clients  {label}: {r['rps']:7.1f} req/s"
        f"  guardrails CPU {r['cpu_ms_per_request']:6.2f} ms/req ({r['service_cores']:.2f} cores)"
        f"  p50 {r['latency_ms'].get('p50', 0):6.1f} ms  unscanned {r['unscanned']:4.0%}"
        f"  other work {r['other_cores']:.2f} cores",
        flush=True,
    )


async def _healthy(service: ServiceProcess) -> None:
    await service.wait_healthy(timeout_s=180)
    await service.close()


if __name__ == "__main__":
    main()
