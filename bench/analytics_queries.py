"""docs/analytics.md's "Cost analysis with SQL" queries, each beside its bare-chDB equivalent.

`sql` is read from that doc itself (tests/analytics/readme.py), so the
benchmark times exactly what the doc shows and the tests check; it runs on
the analytics schema, rollups included. `bare_sql` asks the same question of
plain MergeTree tables holding only the raw event rows (no rollups, no
partitioning, no LowCardinality or codecs): the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.analytics.readme import doc_queries


@dataclass(frozen=True)
class CostQuery:
    name: str
    sql: str
    bare_sql: str


_BARE = {
    "cost per tenant per day": (
        "SELECT tenant, toDate(time) AS day, currency, sum(cost) AS cost, count() AS requests, "
        "countIf(NOT priced) AS unpriced FROM usage WHERE time >= today() - 30 "
        "GROUP BY tenant, day, currency ORDER BY day, tenant"
    ),
    "top 10 most expensive prompts": (
        "SELECT prompt, prompt_version, currency, sum(cost) AS cost, count() AS requests "
        "FROM usage WHERE time >= today() - 30 GROUP BY prompt, prompt_version, currency "
        "ORDER BY cost DESC LIMIT 10"
    ),
    "p95 latency and time to first token per model": (
        "SELECT model_used AS model, quantile(0.95)(total_ms) AS p95_ms, "
        "quantile(0.95)(time_to_first_token_ms) AS p95_ttft_ms, count() AS requests "
        "FROM interactions WHERE status = 'OK' AND cache IN ('miss', 'bypass') "
        "AND toStartOfHour(time) >= now() - INTERVAL 7 DAY GROUP BY model ORDER BY model"
    ),
    "cache hit rate": (
        "SELECT tenant, countIf(cache IN ('exact_hit', 'semantic_hit')) / count() AS hit_rate, "
        "count() AS requests FROM interactions WHERE time >= now() - INTERVAL 7 DAY "
        "AND api != 'openai.embeddings' GROUP BY tenant ORDER BY tenant"
    ),
    "error rate by code": (
        "SELECT status, count() AS requests, count() / sum(count()) OVER () AS share "
        "FROM interactions WHERE time >= now() - INTERVAL 7 DAY "
        "GROUP BY status ORDER BY requests DESC"
    ),
    "tokens per document ingested": (
        "SELECT tenant, count() AS documents, sum(tokens) AS total_tokens, "
        "avg(tokens) AS tokens_per_document FROM documents "
        "WHERE status = 'indexed' AND time >= now() - INTERVAL 30 DAY "
        "GROUP BY tenant ORDER BY tenant"
    ),
}


def with_bare() -> tuple[CostQuery, ...]:
    queries = doc_queries()
    missing = set(queries) ^ set(_BARE)
    if missing:
        raise SystemExit(f"doc queries and bare equivalents differ: {sorted(missing)}")
    return tuple(CostQuery(name, sql, _BARE[name]) for name, sql in queries.items())


COST_QUERIES = with_bare()
