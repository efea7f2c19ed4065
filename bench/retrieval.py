"""Retrieval quality and search latency on BEIR SciFact, through the real platform.

Ingests the vendored SciFact corpus (``bench/data/scifact``) as one ``Document`` per abstract,
its title in ``Document.title``, over NATS (parse, chunk, embed, index: the real document
path), then scores two query sets through gRPC ``Search`` in dense, hybrid and sparse mode
(nDCG@10 and Recall@100 over documents: chunk hits are folded max-passage): the 300 test
claims, next to the published figures, and the 300 train claims of
``bench/data/scifact-train``, the set the settings were chosen on (docs/retrieval.md).

Before and after, side by side on one index: the platform first runs with the previous
hybrid fusion (``LLMOPS_HYBRID_FUSION=rrf``), is stopped, and comes back on the same data
dir with the shipped default (DBSF); dense and sparse do not depend on it and must agree.
Search latency over gRPC at 1, 8 and 32 concurrent clients is measured after, on queries
asked once each (the corpus titles, never a claim scored before), so every query is
embedded: retrieval keeps the vectors of recent queries, and a repeated query would
measure that cache instead of the search path.

    .venv/bin/python bench/retrieval.py                        # full run, own platform
    .venv/bin/python bench/retrieval.py --limit-queries 20     # smoke run (~500 docs)
    .venv/bin/python bench/retrieval.py --nats-url nats://127.0.0.1:4222 \\
        --retrieval-addr 127.0.0.1:50053                       # a platform already running
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ir_metrics import (  # noqa: E402
    Doc,
    dedupe_docs,
    load_beir,
    load_queries,
    ndcg_at_k,
    recall_at_k,
)
from tests.support import run_platform  # noqa: E402

from bench import procs  # noqa: E402
from llmops.bus.events import status_name  # noqa: E402
from llmops.docclient import DocumentClient  # noqa: E402
from llmops.grpcutil import channel  # noqa: E402
from llmops.v1 import documents_pb2, events_pb2, retrieval_pb2, retrieval_pb2_grpc  # noqa: E402

DATA = ROOT / "bench" / "data" / "scifact"
TUNING = ROOT / "bench" / "data" / "scifact-train"  # train claims on the same corpus
FUSION_ENV = "LLMOPS_HYBRID_FUSION"  # services/retrieval/settings.py: hybrid_fusion
PHASES = {"before": "rrf", "after": "dbsf"}  # the previous fusion, the shipped default
TENANT = "scifact"
MODES = {
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
    "sparse": retrieval_pb2.SEARCH_MODE_SPARSE,
}
MAX_K = 1000  # services/retrieval/settings.py: search_max_k
PUBLISHED_FOR = {"dense": "all-MiniLM-L6-v2", "sparse": "BM25"}  # model name contains this
CLIENTS = (1, 8, 32)  # concurrent clients of the latency runs
LATENCY_TOP_K = 10
WARMUP = 3  # distinct queries per client before the clock starts


def select(
    corpus: dict[str, Doc],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    limit_queries: int | None,
    limit_docs: int | None,
) -> tuple[dict[str, Doc], dict[str, str], dict[str, dict[str, int]]]:
    """The first N queries (BEIR order); every doc they judge, topped up in corpus order."""
    if limit_queries is not None:
        queries = dict(list(queries.items())[:limit_queries])
        qrels = {qid: qrels[qid] for qid in queries}
        limit_docs = limit_docs if limit_docs is not None else 25 * limit_queries
    if limit_docs is None:
        return corpus, queries, qrels
    keep = {d for judged in qrels.values() for d in judged if d in corpus}
    for doc_id in corpus:
        if len(keep) >= limit_docs:
            break
        keep.add(doc_id)
    return {d: doc for d, doc in corpus.items() if d in keep}, queries, qrels


@dataclass
class Ingest:
    total: int
    published: int = 0
    chunks: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # set when every outcome arrived

    def on_outcome(self, event: events_pb2.DocumentEvent) -> None:
        name = status_name(event.status)
        self.statuses[name] = self.statuses.get(name, 0) + 1
        self.chunks += event.chunks
        if event.status == events_pb2.DOCUMENT_STATUS_FAILED:
            self.failed.append(
                {"doc_id": event.doc_id, "stage": event.stage, "reason": event.reason}
            )

    def line(self) -> str:
        done, elapsed = sum(self.statuses.values()), time.monotonic() - self.started
        rate = done / elapsed
        eta = f"{(self.total - done) / rate:.0f} s" if rate > 0 else "?"
        return (
            f"  ingest: published {self.published}/{self.total}, done {done}/{self.total} "
            f"in {elapsed:.0f} s ({rate:.1f} docs/s, {self.chunks / elapsed:.1f} chunks/s), "
            f"ETA {eta}"
        )


async def ingest(nats_url: str, corpus: dict[str, Doc], timeout_s: float) -> Ingest:
    progress = Ingest(total=len(corpus))

    async def report() -> None:
        while True:
            await asyncio.sleep(5)
            print(progress.line(), flush=True)

    client = await DocumentClient.connect(nats_url)
    reporter = asyncio.create_task(report())
    try:
        await client.watch()
        for doc_id, doc in corpus.items():
            content = f"{doc['title']}\n\n{doc['text']}".encode()
            await client.publish(
                documents_pb2.Document(
                    tenant=TENANT,
                    doc_id=doc_id,
                    title=doc["title"],
                    content=content,
                    content_type="text/plain",
                )
            )
            progress.published += 1
        keys = [(TENANT, d) for d in corpus]
        await client.wait_for(keys, timeout_s, on_outcome=progress.on_outcome)
    finally:
        reporter.cancel()
        await client.close()
    progress.seconds = time.monotonic() - progress.started
    print(
        f"  ingest done: {progress.total} docs, {progress.chunks} chunks in "
        f"{progress.seconds:.1f} s ({progress.total / progress.seconds:.1f} docs/s); "
        + ", ".join(f"{n} {s}" for s, n in sorted(progress.statuses.items())),
        flush=True,
    )
    return progress


async def evaluate(
    address: str, queries: dict[str, str], qrels: dict[str, dict[str, int]], k: int
) -> dict[str, dict[str, float]]:
    """Both metrics from one response per query; a query whose `k` chunks hold fewer than
    100 distinct docs is asked again with the server's maximum top_k (see `MAX_K`)."""
    results: dict[str, dict[str, float]] = {}
    async with channel(address) as ch:
        stub = retrieval_pb2_grpc.RetrievalStub(ch)
        for name, mode in MODES.items():
            started, deeper, short = time.monotonic(), 0, 0
            ranked: dict[str, list[str]] = {}
            for qid, text in queries.items():
                top_k = k
                while True:
                    request = retrieval_pb2.SearchRequest(
                        tenant=TENANT, query=text, top_k=top_k, mode=mode
                    )
                    reply = await stub.Search(request, timeout=60)
                    ranked[qid] = dedupe_docs((h.doc_id, h.score) for h in reply.hits)
                    if len(ranked[qid]) >= 100 or len(reply.hits) < top_k or top_k >= MAX_K:
                        break
                    top_k, deeper = MAX_K, deeper + 1
                short += len(ranked[qid]) < 100
            results[name] = {
                "ndcg_at_10": ndcg_at_k(ranked, qrels, 10),
                "recall_at_100": recall_at_k(ranked, qrels, 100),
                "queries_asked_again_with_max_top_k": deeper,
                "queries_with_fewer_than_100_docs": short,
            }
            print(
                f"  {name:<6}: {len(queries)} queries in {time.monotonic() - started:.1f} s; "
                f"{deeper} asked again with top_k={MAX_K}, {short} with < 100 docs in the end"
            )
    return results


def latency_queries(corpus: dict[str, Doc], asked: set[str]) -> list[str]:
    """Distinct query-length texts no earlier search asked: the corpus titles."""
    titles = dict.fromkeys(t for doc in corpus.values() if (t := doc["title"].strip()))
    return [t for t in titles if t not in asked]


async def latency(
    address: str, queries: list[str], warmup: list[str], clients: int, pids: dict[str, int]
) -> dict[str, float]:
    """Each client has its own channel; all pull from one shared list, each query asked once.

    CPU per query is counted for the processes in `pids` and for this client, so that
    a machine busy with other work still shows what one search costs."""
    work = iter(queries)
    k = LATENCY_TOP_K
    samples: list[float] = []
    request_for = retrieval_pb2.SearchRequest

    async def client(ch: Any) -> None:
        stub = retrieval_pb2_grpc.RetrievalStub(ch)
        for text in work:
            request = request_for(tenant=TENANT, query=text, top_k=k, mode=MODES["hybrid"])
            t0 = time.perf_counter()
            await stub.Search(request, timeout=60)
            samples.append((time.perf_counter() - t0) * 1000)

    async with contextlib.AsyncExitStack() as stack:
        channels = [await stack.enter_async_context(channel(address)) for _ in range(clients)]
        for i, ch in enumerate(channels):  # connect and warm up outside the measurement
            await ch.channel_ready()
            for text in warmup[i * WARMUP : (i + 1) * WARMUP]:
                await retrieval_pb2_grpc.RetrievalStub(ch).Search(
                    request_for(tenant=TENANT, query=text, top_k=k, mode=MODES["hybrid"]),
                    timeout=60,
                )
        cpu0 = {name: procs.cpu_s(pid) for name, pid in pids.items()}
        client0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(ch) for ch in channels))
        wall = time.perf_counter() - started
        cpu = {name: procs.cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
        cpu["client"] = time.process_time() - client0
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "clients": clients,
        "requests": len(samples),
        "p50_ms": cuts[49],
        "p95_ms": cuts[94],
        "p99_ms": cuts[98],
        "qps": len(samples) / wall,
        "wall_s": wall,
        **{f"cpu_ms_per_query_{name}": s * 1000 / len(samples) for name, s in cpu.items()},
    }


def published_figure(name: str) -> dict[str, Any] | None:
    model = PUBLISHED_FOR.get(name)
    rows: list[dict[str, Any]] = json.loads((DATA / "published.json").read_text())
    return next((r for r in rows if model and model in r["model"]), None)


def fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "—"


QuerySets = dict[str, tuple[dict[str, str], dict[str, dict[str, int]]]]
Quality = dict[str, dict[str, dict[str, float]]]  # query set -> mode -> metric -> value


def query_sets(
    corpus: dict[str, Doc],
    test: tuple[dict[str, str], dict[str, dict[str, int]]],
    limit: int | None,
) -> QuerySets:
    """The test claims and the tuning claims; on a subset, the tuning claims it judges fully."""
    queries, qrels = load_queries(TUNING, "dev")
    judged = [q for q in queries if all(d in corpus for d in qrels[q])][:limit]
    return {
        "test": test,
        "tuning": ({q: queries[q] for q in judged}, {q: qrels[q] for q in judged}),
    }


async def measure(address: str, sets: QuerySets, k: int) -> Quality:
    quality: Quality = {}
    for name, (queries, qrels) in sets.items():
        print(f" {name} queries ({len(queries)})", flush=True)
        quality[name] = await evaluate(address, queries, qrels, k)
    return quality


def report(
    phases: dict[str, Quality], sets: QuerySets, lat: list[dict[str, float]], subset: bool
) -> None:
    names = list(phases)
    for set_name, (queries, _) in sets.items():
        what = "SciFact test" if set_name == "test" else "SciFact train claims (tuning set)"
        print(f"\n{what}, {len(queries)} queries: nDCG@10 / Recall@100 over documents")
        header = " | ".join(f"{n:<13}" for n in names)
        extra = " | published, same model: nDCG@10, R@100" if set_name == "test" else ""
        print(f"{'mode':<8} | {header}{extra}")
        print("-" * (11 + 16 * len(names) + len(extra)))
        for mode in MODES:
            cells = " | ".join(
                f"{phases[n][set_name][mode]['ndcg_at_10']:.3f} / "
                f"{phases[n][set_name][mode]['recall_at_100']:.3f}"
                for n in names
            )
            ref = ""
            if set_name == "test":
                pub = published_figure(mode)
                ref = (
                    f" | {pub['model']}: {fmt(pub.get('ndcg_at_10'))}, "
                    f"{fmt(pub.get('recall_at_100'))}"
                    if pub
                    else " | none published (see the dense and sparse rows)"
                )
            print(f"{mode:<8} | {cells}{ref}")
    print(
        "published: whole abstracts, exact search; here: 200-token chunks in Qdrant, top doc chunk"
    )
    if "before" in phases:
        print(f"before: {FUSION_ENV}={PHASES['before']}; after: {PHASES['after']} (the default)")
    if subset:
        print("NOTE: a subset of queries/docs: NOT comparable to the published figures")
    print("\nSearch latency over gRPC (hybrid, top_k=10, distinct queries, measured by the client)")
    cpu = [key for key in lat[0] if key.startswith("cpu_ms_per_query_")]
    names = ", ".join(key.removeprefix("cpu_ms_per_query_") for key in cpu)
    print(f"clients | requests |  p50 ms |  p95 ms |  p99 ms |    q/s | CPU ms/query: {names}")
    print("-" * (76 + len(names)))
    for r in lat:
        print(
            f"{r['clients']:>7} | {r['requests']:>8} | {r['p50_ms']:>7.1f} | {r['p95_ms']:>7.1f} "
            f"| {r['p99_ms']:>7.1f} | {r['qps']:>6.1f} | "
            + " / ".join(f"{r[key]:.2f}" for key in cpu)
        )


async def ingest_all(args: argparse.Namespace, nats_url: str, corpus: dict[str, Doc]) -> Ingest:
    print(f"SciFact: ingesting {len(corpus)} docs", flush=True)
    ing = await ingest(nats_url, corpus, args.ingest_timeout)
    for f in ing.failed:
        print(f"  FAILED {f['doc_id']} at {f['stage']}: {f['reason']}")
    # Retrieval optimises its index once ingestion has been quiet for a few seconds
    # (LLMOPS_OPTIMIZE_IDLE_S); measure the steady state, not the minutes after a bulk load.
    print(f"settling {args.settle_s:g}s (the index is optimised when ingestion goes quiet)")
    await asyncio.sleep(args.settle_s)
    return ing


async def quality_and_latency(
    args: argparse.Namespace,
    address: str,
    corpus: dict[str, Doc],
    sets: QuerySets,
    pids: dict[str, int],
) -> tuple[Quality, list[dict[str, float]]]:
    print(f"evaluating (top_k={args.eval_k} chunks per query)", flush=True)
    quality = await measure(address, sets, args.eval_k)
    asked = {text for queries, _ in sets.values() for text in queries.values()}
    pool = latency_queries(corpus, asked)
    warmup, pool = pool[: WARMUP * max(CLIENTS)], pool[WARMUP * max(CLIENTS) :]
    n = min(args.latency_queries, len(pool) // len(CLIENTS))
    lat = []
    for i, clients in enumerate(CLIENTS):
        print(f"latency: {clients} client(s), {n} distinct queries", flush=True)
        queries = pool[i * n : (i + 1) * n]
        lat.append(await latency(address, queries, warmup, clients, pids))
    return quality, lat


def run(args: argparse.Namespace, corpus: dict[str, Doc], sets: QuerySets) -> dict[str, Any]:
    """Ingest once; on an own platform measure `before`, restart with the default, `after`."""
    phases: dict[str, Quality] = {}
    with contextlib.ExitStack() as stack:
        if args.nats_url:
            ing = asyncio.run(ingest_all(args, args.nats_url, corpus))
            phases["as configured"], lat = asyncio.run(
                quality_and_latency(args, args.retrieval_addr, corpus, sets, {})
            )
        else:
            data_dir = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            print(f"starting the platform (llmops up, no Triton) in {data_dir}", flush=True)
            first = PHASES["after"] if args.skip_before else PHASES["before"]
            extra = {FUSION_ENV: first}
            with run_platform(data_dir, triton=False, extra_env=extra, timeout_s=300) as platform:
                ing = asyncio.run(ingest_all(args, platform.nats_url, corpus))
                env, address = platform.env, platform.addr("retrieval")
                if not args.skip_before:
                    print(f"before: {FUSION_ENV}={first}", flush=True)
                    phases["before"] = asyncio.run(measure(address, sets, args.eval_k))
            if not args.skip_before:
                print(f"restarting on the same data dir with {FUSION_ENV}={PHASES['after']}")
            restart = {**env, FUSION_ENV: PHASES["after"]}
            with run_platform(data_dir, env=restart, timeout_s=300) as platform:
                pids = {name: platform.pid(name) for name in ("retrieval", "embedding")}
                phases["after"], lat = asyncio.run(
                    quality_and_latency(args, platform.addr("retrieval"), corpus, sets, pids)
                )
    subset = args.limit_queries is not None or args.limit_docs is not None
    report(phases, sets, lat, subset)
    return {
        "dataset": "BEIR SciFact test; tuning set: SciFact train claims (bench/data/scifact-train)",
        "subset": subset,
        "docs": len(corpus),
        "queries": {name: len(queries) for name, (queries, _) in sets.items()},
        "ingest": {
            "outcomes": ing.statuses,
            "failed": ing.failed,
            "chunks": ing.chunks,
            "seconds": ing.seconds,
            "docs_per_s": len(corpus) / ing.seconds,
        },
        "eval_top_k_chunks": args.eval_k,
        "settings": {"before": {FUSION_ENV: PHASES["before"]}, "after": {FUSION_ENV: "default"}},
        "quality": phases,
        "published": json.loads((DATA / "published.json").read_text()),
        "latency": {
            "mode": "hybrid",
            "top_k": LATENCY_TOP_K,
            "queries": "distinct corpus titles, each asked once",
            "runs": lat,
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="platform data dir (default: a temp dir)")
    p.add_argument("--nats-url", help="use a running platform (with --retrieval-addr)")
    p.add_argument("--retrieval-addr", help="its retrieval gRPC address, host:port")
    p.add_argument("--limit-queries", type=int, help="first N test queries (implies ~25N docs)")
    p.add_argument("--limit-docs", type=int, help="N docs, always keeping the judged ones")
    p.add_argument("--eval-k", type=int, default=300, help="chunks per query for quality")
    p.add_argument(
        "--latency-queries", type=int, default=1000, help="distinct queries per client count"
    )
    p.add_argument("--ingest-timeout", type=float, default=3600.0)
    p.add_argument("--settle-s", type=float, default=15.0, help="quiet time after ingesting")
    p.add_argument("--skip-before", action="store_true", help="only the shipped defaults")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    args = p.parse_args()
    if (args.nats_url is None) != (args.retrieval_addr is None):
        p.error("--nats-url and --retrieval-addr go together")
    corpus, queries, qrels = select(*load_beir(DATA), args.limit_queries, args.limit_docs)
    sets = query_sets(corpus, (queries, qrels), args.limit_queries)
    results = run(args, corpus, sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 1 if results["ingest"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
