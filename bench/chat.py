"""Chat-path benchmark: the gateway against calling the model directly, and against LiteLLM.

    .venv/bin/python bench/chat.py [--duration 10] [--delay-ms 50] [--only chat|proxy]

The real platform is started once (`llmops up` on free ports: NATS, Triton,
every service, the gateway) with a routes file that adds an alias `mock` for a
local mock OpenAI-compatible upstream (bench/mock_openai.py). Load comes from
bench/loadgen.py in its own process: closed loop, N clients each sending the
next request when the last answer is complete, 2 s warm-up, then the measured
window. Caches are off for every gateway request.

1. Chat over gRPC: `Gateway/Chat` against Triton's `extractive_answerer`
   called directly (`stream_infer`, as the inference service calls it), at
   1, 8 and 32 clients. Three small documents (tests/data/docs) are ingested
   for tenant `default`; the gateway retrieves the top 5 hybrid hits for the
   question and the direct call is given exactly those passages, so both
   produce the same answer (checked). Added latency therefore includes the
   gateway's retrieval call; the gateway's own time (ChatFinal.overhead_ms:
   total minus waiting on upstreams) is shown beside it. A second pair turns
   retrieval off and gives Triton no passages: the gateway + inference hops alone.
2. Overhead against LiteLLM over HTTP: the mock (fixed delay, JSON and SSE
   per the OpenAI wire format, with usage) called directly, through the
   gateway's OpenAI API (`llmops: retrieval off, caches off`, alias `mock`,
   routed in the gateway: LLMOPS_ROUTING=auto) with the default guardrail
   policy (`guarded`) and with guardrails off (`gateway`), through a second
   gateway that sends the alias to the inference service
   (LLMOPS_ROUTING=remote, guardrails off: `remote`), and through the LiteLLM
   proxy (one worker, model `mock` -> the mock; its own venv, see
   bench/litellm_proxy.py), at 1, 16 and 64 clients, non-streaming and
   streaming, the same request body for all. Resident memory of each process
   tree after the runs.

Figures are printed and written to bench/results/chat.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform as host
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from tests.support import (  # noqa: E402
    Platform,
    ServiceProcess,
    free_port,
    run_platform,
    wait_port,
)

import litellm_proxy  # noqa: E402
import procs  # noqa: E402
from llmops.docclient import DocumentClient, document_from_file  # noqa: E402
from llmops.v1 import events_pb2, retrieval_pb2, retrieval_pb2_grpc  # noqa: E402

QUESTION = "how often should I oil my bike chain"
TENANT = "default"  # the tenant of the local API key `llmops up` writes
DOCS = sorted((ROOT / "tests" / "data" / "docs").iterdir())
TOP_K = 5  # the gateway's default_top_k
TRITON_MODEL = "extractive_answerer"
NO_CACHE = {"no_exact": True, "no_semantic": True}
COMPONENTS = ("gateway", "inference", "retrieval", "embedding", "triton", "nats")


# ---------------------------------------------------------------- plumbing


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """One loadgen run in its own process, with the CPU each watched process tree used."""
    watched: dict[str, int] = spec.pop("watch", {})
    waited = wait_quiet()
    before = {name: procs.cpu_s(pid) for name, pid in watched.items()}
    ticks = procs.machine_ticks()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(BENCH / "loadgen.py"), json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=spec["duration_s"] + spec.get("warmup_s", 2) + 120,
        check=False,
    )
    wall = time.perf_counter() - started
    machine = procs.busy_cores(ticks)
    used = {name: procs.cpu_s(pid) - before[name] for name, pid in watched.items()}
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU seconds over the whole run (warm-up included) per request counted in the window,
    # scaled to the window: a good enough per-request cost for comparing processes.
    window = spec["duration_s"] / wall
    result["cpu_ms_per_request"] = {
        name: seconds * window * 1000 / max(result["requests"], 1) for name, seconds in used.items()
    }
    # Cores busy on the whole machine during the run, and the part of it that is neither the
    # watched processes nor the load generator: other work on the machine (noise).
    result["machine_busy_cores"] = machine
    result["other_cores"] = max(0.0, machine - sum(used.values()) / wall - result["loadgen_cpu"])
    result["waited_for_quiet_s"] = waited
    if result["other_cores"] > 0.15:
        print(f"    note: {result['other_cores']:.2f} cores busy with other work during this run")
    if result["errors"]:
        print(f"    errors: {result['errors']}")
    return result


def wait_quiet(limit_s: float = 30.0, threshold: float = 0.15) -> float:
    """Wait (at most limit_s) until the machine is idle between runs; seconds waited."""
    started = time.monotonic()
    while True:
        ticks = procs.machine_ticks()
        time.sleep(1.0)
        busy = procs.busy_cores(ticks)
        waited = time.monotonic() - started
        if busy < threshold:
            return waited
        if waited > limit_s:
            print(f"    note: the machine is busy ({busy:.2f} cores) before this run")
            return waited


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def post(url: str, body: dict[str, Any], key: str) -> bytes:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def check_openai_reply(name: str, raw: bytes, stream: bool) -> str:
    """The answer text of one reply, after checking it is well-formed OpenAI output."""
    if not stream:
        reply = json.loads(raw)
        usage = reply.get("usage") or {}
        if not usage.get("completion_tokens"):
            raise RuntimeError(f"{name}: no usage in {raw[:300]!r}")
        return str(reply["choices"][0]["message"]["content"])
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        raise RuntimeError(f"{name}: the stream did not end with [DONE]: {raw[-300:]!r}")
    text = []
    for event in events[:-1]:
        chunk = json.loads(event)
        for choice in chunk.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def failed(run: dict[str, Any]) -> str:
    count = sum(run["errors"].values())
    return f"   !! {count} failed requests" if count else ""


def ms(stats: dict[str, float], key: str) -> float:
    return float(stats.get(key, float("nan")))


# ---------------------------------------------------------------- part 1: chat over gRPC


async def ingest(nats_url: str) -> None:
    client = await DocumentClient.connect(nats_url)
    try:
        await client.watch()
        docs = [document_from_file(p, p.name, TENANT, "", {}) for p in DOCS]
        for doc in docs:
            await client.publish(doc)
        outcomes = await client.wait_for([(TENANT, d.doc_id) for d in docs], timeout_s=120)
    finally:
        await client.close()
    bad = [e for e in outcomes.values() if e.status != events_pb2.DOCUMENT_STATUS_INDEXED]
    if bad:
        raise RuntimeError(f"documents not indexed: {bad}")


async def search(addr: str) -> list[str]:
    """The passages the gateway will retrieve: the same request it makes (top 5, hybrid)."""
    import grpc

    async with grpc.aio.insecure_channel(addr) as channel:
        found = await retrieval_pb2_grpc.RetrievalStub(channel).Search(
            retrieval_pb2.SearchRequest(
                tenant=TENANT, query=QUESTION, top_k=TOP_K, mode=retrieval_pb2.SEARCH_MODE_HYBRID
            ),
            timeout=30,
        )
    return [hit.text for hit in found.hits]


async def gateway_answer(addr: str, key: str, retrieval: dict[str, Any]) -> tuple[str, Any]:
    import grpc

    from llmops.v1 import gateway_pb2, gateway_pb2_grpc, inference_pb2

    async with grpc.aio.insecure_channel(addr) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        request = gateway_pb2.ChatRequest(
            messages=[inference_pb2.ChatMessage(role="user", content=QUESTION)],
            retrieval=gateway_pb2.RetrievalOptions(**retrieval),
            cache=gateway_pb2.CacheOptions(**NO_CACHE),
        )
        text, final = [], None
        async for response in stub.Chat(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=30
        ):
            if response.HasField("delta"):
                text.append(response.delta.text)
            else:
                final = response.final
    return "".join(text), final, len(text)


async def triton_answer(addr: str, passages: list[str]) -> str:
    import numpy as np
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput

    client = triton_aio.InferenceServerClient(addr)
    question = InferInput("QUESTION", [1], "BYTES")
    question.set_data_from_numpy(np.array([QUESTION.encode()], dtype=np.object_))
    given = InferInput("PASSAGES", [len(passages)], "BYTES")
    given.set_data_from_numpy(np.array([p.encode() for p in passages], dtype=np.object_))

    async def requests() -> Any:
        yield {"model_name": TRITON_MODEL, "inputs": [question, given]}

    text = []
    try:
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                raise RuntimeError(f"Triton: {error}")
            pieces = result.as_numpy("TEXT")
            if pieces is not None:
                text.extend(p.decode() for p in pieces.reshape(-1))
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
    finally:
        await client.close()
    return "".join(text)


def chat_part(p: Platform, key: str, args: argparse.Namespace) -> dict[str, Any]:
    pids = {name: p.pid(name) for name in COMPONENTS}
    gateway_addr = p.env["LLMOPS_GATEWAY_ADDR"]
    triton_addr = p.env["LLMOPS_TRITON_GRPC_ADDR"]
    print(f"ingesting {len(DOCS)} documents for tenant {TENANT!r}...")
    asyncio.run(ingest(p.nats_url))
    passages = asyncio.run(search(p.addr("retrieval")))
    print(f"  the question's top {TOP_K} hybrid hits: {len(passages)} passages")

    variants: dict[str, dict[str, Any]] = {}
    for name, retrieval, given in (
        ("rag", {}, passages),
        ("no_retrieval", {"disabled": True}, []),
    ):
        try:
            via_gateway, final, pieces = asyncio.run(gateway_answer(gateway_addr, key, retrieval))
            direct = asyncio.run(triton_answer(triton_addr, given))
        except Exception as exc:
            print(f"  {name}: skipped, a first request failed: {exc}")
            continue
        same = via_gateway == direct
        print(
            f"  {name}: answers identical: {'yes' if same else 'NO'} ({pieces} streamed pieces); "
            f"gateway model_used={final.model_used}, cache={final.cache}"
        )
        if not same:
            print(f"    gateway: {via_gateway[:200]!r}\n    direct:  {direct[:200]!r}")
        variants[name] = {
            "retrieval": retrieval,
            "passages": given,
            "same_answer": same,
            "answer": direct,
            "pieces": pieces,
        }

    runs: list[dict[str, Any]] = []
    for clients in args.chat_clients:
        for name, variant in variants.items():
            common = {
                "concurrency": clients,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "watch": dict(pids),
            }
            for target, spec in (
                (
                    "triton_direct",
                    {
                        "kind": "triton",
                        "addr": triton_addr,
                        "model": TRITON_MODEL,
                        "question": QUESTION,
                        "passages": variant["passages"],
                    },
                ),
                (
                    "gateway",
                    {
                        "kind": "gateway",
                        "addr": gateway_addr,
                        "api_key": key,
                        "question": QUESTION,
                        "retrieval": variant["retrieval"],
                    },
                ),
            ):
                print(f"  {name:13} {target:14} {clients:>3} clients...", flush=True)
                result = load({**common, **spec})
                runs.append({"variant": name, "target": target, **result})
    return {
        "question": QUESTION,
        "documents": [d.name for d in DOCS],
        "passages": passages,
        "variants": {
            k: {field: v[field] for field in ("same_answer", "answer", "pieces")}
            for k, v in variants.items()
        },
        "runs": runs,
    }


def print_chat(chat: dict[str, Any]) -> None:
    print("\n== Chat over gRPC: Gateway/Chat vs Triton extractive_answerer called directly ==")
    print(f"question {chat['question']!r}; caches off; latency = whole streamed answer")
    print(
        "  rag:          gateway retrieves the top 5 hybrid hits (auth, limits, retrieval, prompt,"
        "\n                inference -> Triton); direct Triton gets exactly those passages"
        "\n  no_retrieval: gateway with retrieval off, direct Triton with no passages"
        "\n                (the gateway + inference hops alone; the answer is 'no answer')"
    )
    head = (
        f"{'variant':13}{'target':15}{'clients':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'ttft50':>8}{'ttft95':>8}{'req/s':>8}{'own50':>7}{'own95':>7}"
    )
    print(head + "  other   (ms; own = gateway overhead_ms; other = cores of other work)")
    by = {(r["variant"], r["target"], r["concurrency"]): r for r in chat["runs"]}
    for r in chat["runs"]:
        lat, ttft = r["latency_ms"], r["ttft_ms"]
        own = r["extra_ms"].get("gateway_overhead", {})
        print(
            f"{r['variant']:13}{r['target']:15}{r['concurrency']:>8}{ms(lat, 'p50'):>8.1f}"
            f"{ms(lat, 'p95'):>8.1f}{ms(lat, 'p99'):>8.1f}{ms(ttft, 'p50'):>8.1f}"
            f"{ms(ttft, 'p95'):>8.1f}{r['rps']:>8.1f}"
            + (f"{ms(own, 'p50'):>7.2f}{ms(own, 'p95'):>7.2f}" if own else " " * 14)
            + f"{r['other_cores']:>7.2f}"
            + failed(r)
        )
    print("added by the gateway (gateway minus direct):")
    for (variant, target, clients), r in by.items():
        if target != "gateway" or (variant, "triton_direct", clients) not in by:
            continue
        d = by[(variant, "triton_direct", clients)]
        lat, dlat = r["latency_ms"], d["latency_ms"]
        steps = {
            k.removeprefix("step_"): v["p50"]
            for k, v in r["extra_ms"].items()
            if k.startswith("step_")
        }
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_request"].items() if v >= 0.05)
        print(
            f"  {variant:13}{clients:>3} clients: p50 +{ms(lat, 'p50') - ms(dlat, 'p50'):.1f} ms, "
            f"p95 +{ms(lat, 'p95') - ms(dlat, 'p95'):.1f} ms, ttft p50 "
            f"+{ms(r['ttft_ms'], 'p50') - ms(d['ttft_ms'], 'p50'):.1f} ms, "
            f"req/s x{r['rps'] / max(d['rps'], 1e-9):.2f}"
        )
        print("      step p50 ms: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
        print(f"      CPU ms/request: {cpu}")
    print("(aim: under 5 ms added p95 at 32 clients)")


# ---------------------------------------------------------------- part 2: overhead vs LiteLLM


NO_GUARD = "unguarded"  # a policy of tenant default with no scanners: guardrails off
NO_GUARD_POLICY = f"tenant: {TENANT}\nname: {NO_GUARD}\ndescription: guardrails off (bench)\n"


def remote_gateway(p: Platform, tmp: Path) -> ServiceProcess:
    """A second gateway on the same platform that sends every alias to the inference service
    (LLMOPS_ROUTING=remote): the router's remote form, measured beside the in-process one."""
    gateway = p.another_gateway(tmp / "remote-gateway", LLMOPS_ROUTING="remote")
    gateway.start()
    return gateway


def start_litellm(
    mock_port: int, mock_pid: int, tmp: Path
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """The LiteLLM proxy in front of the mock, up and answering, and its bench target."""
    port = free_port()
    config = litellm_proxy.write_config(tmp / "litellm.yaml", f"http://127.0.0.1:{mock_port}/v1")
    print(f"starting the LiteLLM proxy {litellm_proxy.LITELLM_VERSION} (one worker)...")
    litellm = litellm_proxy.start(config, port, tmp / "litellm.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180, litellm)
    except Exception:
        print((tmp / "litellm.log").read_text(errors="replace")[-3000:])
        raise
    target = {
        "url": f"http://127.0.0.1:{port}/v1/chat/completions",
        "key": litellm_proxy.MASTER_KEY,
        "watch": {"litellm": litellm.pid, "mock": mock_pid},
    }
    return litellm, target


def proxy_part(
    p: Platform, key: str, mock_port: int, mock_pid: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    gateway_http = p.env["LLMOPS_GATEWAY_HTTP_ADDR"]
    done = p.cli(
        "guardrails", "set", str(_write(tmp / "off.yaml", NO_GUARD_POLICY)), "--by", "bench"
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not store the empty policy: {done.stderr}")
    started = time.perf_counter()
    remote = remote_gateway(p, tmp)
    asyncio.run(remote.wait_healthy())
    startup_s = {"gateway": time.perf_counter() - started}  # process start to gRPC SERVING
    on_path = {"gateway": p.pid("gateway"), "inference": p.pid("inference"), "mock": mock_pid}
    targets: dict[str, dict[str, Any]] = {
        "direct": {
            "url": f"http://127.0.0.1:{mock_port}/v1/chat/completions",
            "key": "sk-direct-unused",
            "watch": {"mock": mock_pid},
        },
        # The default policy on every request, routing in the gateway (LLMOPS_ROUTING=auto).
        "guarded": {
            "url": f"http://{gateway_http}/v1/chat/completions",
            "key": key,
            "watch": {**on_path, "guardrails": p.pid("guardrails")},
        },
        # The same gateway with guardrails off for the request.
        "gateway": {
            "url": f"http://{gateway_http}/v1/chat/completions",
            "key": key,
            "policy": NO_GUARD,
            "watch": on_path,
        },
        # Guardrails off, every alias through the inference service: the second hop's cost.
        "remote": {
            "url": f"http://{remote.env['LLMOPS_GATEWAY_HTTP_ADDR']}/v1/chat/completions",
            "key": key,
            "policy": NO_GUARD,
            "watch": {**on_path, "gateway": remote.pid},
        },
    }
    litellm: subprocess.Popen[bytes] | None = None
    if not args.no_litellm:
        started = time.perf_counter()
        litellm, targets["litellm"] = start_litellm(mock_port, mock_pid, tmp)
        startup_s["litellm"] = time.perf_counter() - started
    try:
        runs: list[dict[str, Any]] = []
        bodies = {}
        for mode in args.modes:
            stream = mode == "sse"
            body: dict[str, Any] = {
                "model": "mock",
                "messages": [{"role": "user", "content": QUESTION}],
                "stream": stream,
                "llmops": {"retrieval": {"disabled": True}, "cache": NO_CACHE},
            }
            if stream:
                body["stream_options"] = {"include_usage": True}
            bodies[mode] = body
            for name, target in targets.items():
                raw = post(target["url"], body_for(body, target), target["key"])
                text = check_openai_reply(name, raw, stream)
                print(f"  {mode}: {name} answers {text[:60]!r}")
            for clients in args.proxy_clients:
                for name, target in targets.items():
                    print(f"  {mode:5}{name:9}{clients:>3} clients...", flush=True)
                    result = load(
                        {
                            "kind": "http",
                            "url": target["url"],
                            "headers": {"Authorization": f"Bearer {target['key']}"},
                            "body": body_for(body, target),
                            "concurrency": clients,
                            "duration_s": args.duration,
                            "warmup_s": args.warmup,
                            "watch": dict(target["watch"]),
                        }
                    )
                    runs.append({"mode": mode, "target": name, **result})
        measured = {
            "gateway": p.pid("gateway"),
            "guardrails": p.pid("guardrails"),
            "remote gateway": remote.pid,
            "inference": p.pid("inference"),
        }
        if litellm is not None:
            measured["litellm"] = litellm.pid
        memory = {name: procs.rss_mb(pid) for name, pid in measured.items()}
        pss = {name: procs.pss_mb(pid) for name, pid in measured.items()}
    finally:
        remote.stop()
        asyncio.run(remote.close())
        if litellm is not None:
            litellm.terminate()
            try:
                litellm.wait(20)
            except subprocess.TimeoutExpired:
                litellm.kill()
                litellm.wait()
    return {
        "delay_ms": args.delay_ms,
        "litellm_version": None if args.no_litellm else litellm_proxy.LITELLM_VERSION,
        "bodies": bodies,
        "runs": runs,
        "rss_mb": memory,
        "pss_mb": pss,
        "startup_s": startup_s,
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def body_for(body: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The mode's body, with the target's guardrail policy (gateway targets) if it names one."""
    if "policy" not in target:
        return body
    return {**body, "llmops": {**body["llmops"], "guardrail_policy": target["policy"]}}


def print_proxy(proxy: dict[str, Any]) -> dict[str, Any]:
    print(
        f"\n== Proxy overhead: mock OpenAI upstream ({proxy['delay_ms']:g} ms fixed delay) direct,"
        " through the gateway's OpenAI API, through LiteLLM =="
    )
    print(
        "gateway: POST /v1/chat/completions, llmops.retrieval off, caches off, alias mock ->"
        " the openai provider in the gateway (LLMOPS_ROUTING=auto) -> mock; guarded: the"
        " default guardrail policy, gateway: guardrails off (an empty policy); remote:"
        " guardrails off, a second gateway with LLMOPS_ROUTING=remote -> inference -> mock"
    )
    print("litellm: one worker, model mock -> openai/mock at the mock; same body for all three")
    by = {(r["mode"], r["target"], r["concurrency"]): r for r in proxy["runs"]}
    print(
        f"{'mode':6}{'target':9}{'clients':>8}{'req/s':>9}{'p50':>8}{'p99':>8}{'+p50':>8}"
        f"{'+p99':>8}{'ttft50':>8}{'x direct':>9}{'other':>7}   CPU ms/request"
    )
    for (mode, target, clients), r in by.items():
        d = by[(mode, "direct", clients)]
        lat, dlat = r["latency_ms"], d["latency_ms"]
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_request"].items())
        print(
            f"{mode:6}{target:9}{clients:>8}{r['rps']:>9.1f}{ms(lat, 'p50'):>8.1f}"
            f"{ms(lat, 'p99'):>8.1f}{ms(lat, 'p50') - ms(dlat, 'p50'):>8.1f}"
            f"{ms(lat, 'p99') - ms(dlat, 'p99'):>8.1f}"
            f"{ms(r['ttft_ms'], 'p50'):>8.1f}{r['rps'] / d['rps']:>9.2f}"
            f"{r['other_cores']:>7.2f}   {cpu}"
            f", loadgen {r['loadgen_cpu'] * 1000 / max(r['rps'], 1e-9):.2f}" + failed(r)
        )
    summary: dict[str, Any] = {}
    top = max(c for _, _, c in by)
    for mode in dict.fromkeys(m for m, _, _ in by):
        d = by[(mode, "direct", top)]
        line = {}
        for target in dict.fromkeys(t for _, t, _ in by if t != "direct"):
            if (mode, target, top) in by:
                r = by[(mode, target, top)]
                line[target] = {
                    "rps_ratio": r["rps"] / d["rps"],
                    "added_p50_ms": ms(r["latency_ms"], "p50") - ms(d["latency_ms"], "p50"),
                    "added_p99_ms": ms(r["latency_ms"], "p99") - ms(d["latency_ms"], "p99"),
                    "failed_requests": sum(r["errors"].values()),
                }
        summary[mode] = line
        parts = [
            f"rps({t})/rps(direct) = {v['rps_ratio']:.2f}, added p99 {v['added_p99_ms']:.1f} ms"
            for t, v in line.items()
        ]
        print(f"{mode} at {top} clients: " + "; ".join(parts))
    print("(aim: gateway >= 0.8; LiteLLM is expected around 0.09)")
    startup = proxy.get("startup_s", {})
    if startup:
        print(
            "start-up to ready (process start to health SERVING, platform already up): "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in startup.items())
        )
    rss, pss = proxy["rss_mb"], proxy["pss_mb"]
    print(
        "resident memory after the runs, RSS of each process tree [PSS]: "
        + ", ".join(f"{name} {rss[name]:.0f} MB [{pss[name]:.0f}]" for name in rss)
    )
    print(
        f"on the path: gateway {rss['gateway']:.0f} MB (guardrails off), "
        f"+ guardrails {rss['gateway'] + rss['guardrails']:.0f} MB (on); "
        f"remote form: gateway + inference {rss['remote gateway'] + rss['inference']:.0f} MB"
    )
    return summary


# ---------------------------------------------------------------- main


def start_mock(delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "mock_openai.py"), "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "port":
        raise RuntimeError(f"the mock did not start: {line}")
    port = int(line[1])
    wait_port(port)
    return proc, port


def write_routes(path: Path, mock_port: int) -> Path:
    path.write_text(
        f"""default: answerer
aliases:
  answerer:
    - {{provider: triton, model: {TRITON_MODEL}, timeout_s: 10}}
  mock:
    - {{provider: openai, model: mock, base_url: "http://127.0.0.1:{mock_port}/v1", timeout_s: 10}}
"""
    )
    return path


def parse_clients(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the mock upstream's delay")
    parser.add_argument("--chat-clients", type=parse_clients, default=[1, 8, 32])
    parser.add_argument("--proxy-clients", type=parse_clients, default=[1, 16, 64])
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["json", "sse"])
    parser.add_argument("--only", choices=("chat", "proxy"))
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "chat.json")
    parser.add_argument("--report", type=Path, help="print the figures of an earlier run's JSON")
    args = parser.parse_args()
    if args.report:
        earlier = json.loads(args.report.read_text())
        if "chat" in earlier:
            print_chat(earlier["chat"])
        if "proxy" in earlier:
            print_proxy(earlier["proxy"])
        return

    if not args.no_litellm and args.only != "chat":
        litellm_proxy.ensure_venv()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{host.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        mock, mock_port = start_mock(args.delay_ms)
        try:
            extra_env = {
                "LLMOPS_ROUTES_FILE": str(write_routes(tmp / "routes.yaml", mock_port)),
                "LLMOPS_GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
                "LLMOPS_GATEWAY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                "LLMOPS_GATEWAY_METRICS_PORT": str(free_port()),
            }
            print("starting the platform (llmops up: NATS, Triton, services, gateway)...")
            with run_platform(tmp / "data", triton=True, extra_env=extra_env, timeout_s=300) as p:
                key = (p.data_dir / "api-key").read_text().strip()
                if args.only != "proxy":
                    results["chat"] = chat_part(p, key, args)
                if args.only != "chat":
                    results["proxy"] = proxy_part(p, key, mock_port, mock.pid, args, tmp)
        finally:
            mock.terminate()
            mock.wait(10)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    if "chat" in results:
        print_chat(results["chat"])
    if "proxy" in results:
        results["proxy"]["summary"] = print_proxy(results["proxy"])
        args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
