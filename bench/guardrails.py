"""Guardrails benchmark: quality on the shipped public sets, scanner latency, and what the
guardrails cost a request at the gateway (on vs off in one run).

    .venv/bin/python bench/guardrails.py                 # all three parts (~6 minutes)
    .venv/bin/python bench/guardrails.py --only quality  # or: latency, gateway

1. Quality: bench/guard_pii.py (PII spans, ours beside Presidio + spaCy on the same
   texts) and bench/guard_classifiers.py (prompt injection and toxicity), each on the
   test split of its public set under tests/data/guardrails.
2. Latency per scanner in-process (the models the service loads, one thread each), on a
   short question and on a ~500-token text, and a full input check of the default policy
   (normalise, every input scanner, decide) on the 500-token text.
3. The gateway with the default policy vs with an empty one, same platform, same run:
   gRPC `Chat` with retrieval (three documents ingested) and the `mock` alias (a local
   OpenAI-compatible upstream with a fixed delay), at 1 and 16 clients: added latency
   p50/p95 and CPU per request of gateway + guardrails + inference. The input check runs
   beside retrieval, so what it adds is what it takes beyond the search.

Figures are printed and written to bench/results/guardrails.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import chat  # noqa: E402
import procs  # noqa: E402

# services/ first (chat puts bench/ first): `guardrails` is the service, not this script.
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "libs")]

from tests.support import run_platform  # noqa: E402

SHORT = "My name is Jane Roe, my email is jane.roe@example.com. When does my parcel arrive?"
PARAGRAPH = (
    "Our return policy allows customers to send back any unused item within thirty days of "
    "delivery. Items must be in their original packaging, with all tags attached, and a copy "
    "of the receipt. Refunds are issued to the original payment method once the warehouse has "
    "inspected the item, which usually takes three to five working days. Shipping costs are "
    "not refunded unless the item arrived damaged or was not what was ordered. "
)
LONG = PARAGRAPH * 7 + "Please reply to jane.roe@example.com before Friday."  # ~500 tokens
EMPTY_POLICY = "tenant: default\nname: default\ndescription: guardrails off (benchmark)\n"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
    }


# ---------------------------------------------------------------- part 1: quality


def quality_part() -> dict[str, Any]:
    results = {}
    for script in ("guard_pii.py", "guard_classifiers.py"):
        print(f"\n== {script} ==", flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / script)],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=False,
        )
        print(done.stdout)
        if done.returncode != 0:
            raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
        results[script] = done.stdout
    return results


# ---------------------------------------------------------------- part 2: latency


def latency_part(runs: int) -> dict[str, Any]:
    from guardrails.engine import decide, scan_text
    from guardrails.models import load_models
    from guardrails.scanners.base import ScanInput
    from guardrails.scanners.registry import CompiledPolicy
    from guardrails.settings import GuardrailsSettings
    from llmops.guardrails.placeholders import Pseudonyms
    from llmops.guardrails.policy import default_policy, parse_policy

    models = load_models(GuardrailsSettings())
    every = parse_policy(
        "tenant: default\ninput:\n  hidden_text: {}\n  secrets: {}\n  pii: {}\n"
        "  prompt_injection: {}\n  toxicity: {}\n  topics:\n    banned:\n"
        "      - {name: politics, description: 'elections, voting, parties and politicians'}\n"
        "output:\n  groundedness: {}\n  json_schema: {}\n"
    )
    compiled = CompiledPolicy(every, models)
    passages = [PARAGRAPH, PARAGRAPH[:200]]
    texts = {"short": SHORT, "500 tokens": LONG}
    scanners: dict[str, dict[str, Any]] = {}
    for direction in ("input", "output"):
        for run in compiled.runs[direction]:
            for label, text in texts.items():
                item_text = '{"a": 1}' if run.name == "json_schema" else text
                times = []
                for _ in range(runs):
                    item = ScanInput(item_text, passages)
                    began = time.perf_counter()
                    run.scanner.scan(item)
                    times.append((time.perf_counter() - began) * 1000)
                scanners.setdefault(run.name, {})[label] = percentiles(times)
    default = CompiledPolicy(default_policy(), models).runs["input"]
    full: dict[str, dict[str, float]] = {}
    for label, text in texts.items():
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            normalized, verdicts = scan_text(default, text)
            decide(normalized, verdicts, Pseudonyms())
            times.append((time.perf_counter() - began) * 1000)
        full[label] = percentiles(times)
    return {"scanners": scanners, "default_input_check": full, "runs": runs}


def print_latency(latency: dict[str, Any]) -> None:
    print("\n== Scanner latency (ms, one thread, in-process) ==")
    print(f"{'scanner':18}{'short p50':>11}{'p95':>8}{'500 tok p50':>13}{'p95':>8}")
    for name, by in latency["scanners"].items():
        s, long = by["short"], by["500 tokens"]
        print(f"{name:18}{s['p50']:>11.2f}{s['p95']:>8.2f}{long['p50']:>13.2f}{long['p95']:>8.2f}")
    full = latency["default_input_check"]
    print(
        f"{'default input':18}{full['short']['p50']:>11.2f}{full['short']['p95']:>8.2f}"
        f"{full['500 tokens']['p50']:>13.2f}{full['500 tokens']['p95']:>8.2f}"
        "   (normalise + every input scanner of the default policy + decide)"
    )


# ---------------------------------------------------------------- part 3: gateway


def gateway_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    mock, mock_port = chat.start_mock(args.delay_ms)
    try:
        extra_env = {"LLMOPS_ROUTES_FILE": str(chat.write_routes(tmp / "routes.yaml", mock_port))}
        print("starting the platform (llmops up)...", flush=True)
        with run_platform(tmp / "data", triton=True, extra_env=extra_env, timeout_s=300) as p:
            key = (p.data_dir / "api-key").read_text().strip()
            asyncio.run(chat.ingest(p.nats_url))
            time.sleep(2)
            watch = {
                name: p.pid(name) for name in ("gateway", "guardrails", "inference", "retrieval")
            }
            spec = {
                "kind": "gateway",
                "addr": p.addr("gateway"),
                "api_key": key,
                "question": SHORT,
                "model": "mock",
                "duration_s": args.duration,
                "warmup_s": args.warmup,
            }
            runs = []
            off = tmp / "off.yaml"
            off.write_text(EMPTY_POLICY)
            for state in ("on", "off"):
                if state == "off":
                    done = p.cli("guardrails", "set", str(off), "--by", "bench")
                    if done.returncode != 0:
                        raise RuntimeError(done.stderr)
                    time.sleep(1.5)
                for clients in args.clients:
                    print(f"  guardrails {state:3} {clients:>3} clients...", flush=True)
                    result = chat.load({**spec, "concurrency": clients, "watch": dict(watch)})
                    runs.append({"guardrails": state, "clients": clients, **result})
            rss = {name: procs.rss_mb(pid) for name, pid in watch.items()}
    finally:
        mock.terminate()
        mock.wait(10)
    return {"delay_ms": args.delay_ms, "runs": runs, "rss_mb": rss}


def print_gateway(gateway: dict[str, Any]) -> None:
    print(
        f"\n== Gateway, gRPC Chat with retrieval, mock upstream ({gateway['delay_ms']:g} ms):"
        " default policy (on) vs an empty policy (off) =="
    )
    by = {(r["guardrails"], r["clients"]): r for r in gateway["runs"]}
    print(
        f"{'clients':>8}{'on p50':>9}{'off p50':>9}{'added':>8}{'on p95':>9}{'off p95':>9}"
        f"{'added':>8}{'req/s on/off':>15}"
        "   CPU ms/request on vs off (gateway + guardrails + inference)"
    )
    for clients in sorted({c for _, c in by}):
        on, off = by[("on", clients)], by[("off", clients)]
        lon, loff = on["latency_ms"], off["latency_ms"]
        cpu_on = sum(on["cpu_ms_per_request"][n] for n in ("gateway", "guardrails", "inference"))
        cpu_off = sum(off["cpu_ms_per_request"][n] for n in ("gateway", "guardrails", "inference"))
        print(
            f"{clients:>8}{lon['p50']:>9.1f}{loff['p50']:>9.1f}{lon['p50'] - loff['p50']:>+8.1f}"
            f"{lon['p95']:>9.1f}{loff['p95']:>9.1f}{lon['p95'] - loff['p95']:>+8.1f}"
            f"{on['rps']:>8.0f}/{off['rps']:<6.0f}   {cpu_on:.2f} vs {cpu_off:.2f}"
            f" (guardrails {on['cpu_ms_per_request']['guardrails']:.2f})"
        )
    steps = by[("on", 1)].get("extra_ms", {})
    for name in ("step_guardrails.input", "step_retrieval", "step_guardrails.context"):
        if name in steps:
            print(f"  1 client, {name[5:]}: p50 {steps[name]['p50']:.1f} ms")
    print(f"  resident memory after the runs (MB): {gateway['rss_mb']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("quality", "latency", "gateway"))
    parser.add_argument("--runs", type=int, default=50, help="latency samples per scanner")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--clients", type=chat.parse_clients, default=[1, 16])
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "guardrails.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.only in (None, "quality"):
        results["quality"] = quality_part()
    if args.only in (None, "latency"):
        results["latency"] = latency_part(args.runs)
        print_latency(results["latency"])
    if args.only in (None, "gateway"):
        with tempfile.TemporaryDirectory() as tmp:
            results["gateway"] = gateway_part(args, Path(tmp))
        print_gateway(results["gateway"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
