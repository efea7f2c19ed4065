-- ClickHouse reads the events themselves (issue 14): the writer sends each batch's
-- protobuf messages as they came (FORMAT Protobuf, the schema generated from the
-- messages' descriptors: services/analytics/tables.py) into `<table>_input`, a Null
-- table whose columns are the message's fields by name (nested ones as
-- `usage_input_tokens`, repeated messages as arrays `steps_step`); its view reshapes
-- them into the event table's row, whose own views (the rollups) then run as before.
-- Timestamps become milliseconds (floor), enums their lowercase short names
-- ('unspecified' for a value unknown here), negative counts 0, thumbs their sign,
-- nanos of currency exact decimals. Nothing is stored in a Null table.

CREATE TABLE IF NOT EXISTS interactions_input
(
    event_id                    String,
    time_seconds                Int64,
    time_nanos                  Int32,
    tenant                      String,
    key_id                      String,
    request_id                  String,
    trace_id                    String,
    api                         String,
    model_requested             String,
    model_used                  String,
    failed_targets              Array(String),
    prompt                      String,
    prompt_version              String,
    usage_input_tokens          Int32,
    usage_output_tokens         Int32,
    steps_step                  Array(String),
    steps_ms                    Array(Float64),
    time_to_first_token_ms      Float64,
    total_ms                    Float64,
    overhead_ms                 Float64,
    cache                       Int32,
    citations_doc_id            Array(String),
    citations_chunk_id          Array(String),
    status                      String,
    error                       String,
    streamed                    Bool,
    collection                  String,
    text_retention              Int32,
    question                    String,
    answer                      String,
    guardrails_policy           String,
    guardrails_policy_version   Int64,
    guardrails_input_action     String,
    guardrails_output_action    String,
    guardrails_fired            Array(String),
    guardrails_input_ms         Float64,
    guardrails_output_ms        Float64,
    guardrails_blocked_passages Int32,
    prompt_label                String,
    prompt_arm                  String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS interactions_input_mv TO interactions AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    key_id,
    request_id,
    trace_id,
    api,
    model_requested,
    model_used,
    failed_targets,
    prompt,
    prompt_version,
    greatest(usage_input_tokens, 0) AS input_tokens,
    greatest(usage_output_tokens, 0) AS output_tokens,
    time_to_first_token_ms,
    total_ms,
    overhead_ms,
    mapFromArrays(steps_step, steps_ms) AS steps,
    transform(cache, [1, 2, 3, 4], ['miss', 'exact_hit', 'semantic_hit', 'bypass'], 'unspecified') AS cache,
    citations_doc_id AS cited_doc_ids,
    citations_chunk_id AS cited_chunk_ids,
    status,
    error,
    streamed,
    collection,
    transform(text_retention, [1, 2, 3], ['off', 'redacted', 'full'], 'unspecified') AS text_retention,
    question,
    answer,
    guardrails_policy AS guardrail_policy,
    guardrails_policy_version AS guardrail_policy_version,
    guardrails_input_action AS guardrail_input_action,
    guardrails_output_action AS guardrail_output_action,
    guardrails_fired AS guardrail_fired,
    guardrails_input_ms AS guardrail_input_ms,
    guardrails_output_ms AS guardrail_output_ms,
    greatest(guardrails_blocked_passages, 0) AS guardrail_blocked_passages,
    prompt_label,
    prompt_arm
FROM interactions_input;

CREATE TABLE IF NOT EXISTS documents_input
(
    event_id      String,
    time_seconds  Int64,
    time_nanos    Int32,
    tenant        String,
    doc_id        String,
    version       Int64,
    stage         String,
    status        Int32,
    chunks        Int32,
    reason        String,
    trace_id      String,
    source        String,
    collection    String,
    content_bytes Int64,
    tokens        Int32
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS documents_input_mv TO documents AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    doc_id,
    version,
    stage,
    transform(status, [1, 2, 3, 4, 5], ['indexed', 'unchanged', 'deleted', 'failed', 'superseded'], 'unspecified') AS status,
    greatest(chunks, 0) AS chunks,
    greatest(tokens, 0) AS tokens,
    greatest(content_bytes, 0) AS content_bytes,
    reason,
    trace_id,
    source,
    collection
FROM documents_input;

CREATE TABLE IF NOT EXISTS usage_input
(
    event_id            String,
    time_seconds        Int64,
    time_nanos          Int32,
    tenant              String,
    key_id              String,
    request_id          String,
    model               String,
    prompt              String,
    prompt_version      String,
    input_tokens        Int64,
    output_tokens       Int64,
    cached_input_tokens Int64,
    reasoning_tokens    Int64,
    cost_nanos          Int64,
    currency            String,
    priced              Bool,
    price_version       String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_input_mv TO usage AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    key_id,
    request_id,
    model,
    prompt,
    prompt_version,
    greatest(input_tokens, 0) AS input_tokens,
    greatest(output_tokens, 0) AS output_tokens,
    greatest(cached_input_tokens, 0) AS cached_input_tokens,
    greatest(reasoning_tokens, 0) AS reasoning_tokens,
    toDecimal128(cost_nanos, 9) / 1000000000 AS cost,
    currency,
    priced,
    price_version
FROM usage_input;

CREATE TABLE IF NOT EXISTS guardrail_verdicts_input
(
    event_id       String,
    time_seconds   Int64,
    time_nanos     Int32,
    tenant         String,
    key_id         String,
    request_id     String,
    trace_id       String,
    guardrail      String,
    direction      String,
    verdict        String,
    score          Float64,
    reason         String,
    latency_ms     Float64,
    policy         String,
    policy_version Int64,
    shadow         Bool,
    span_types     Array(String),
    unscanned      Bool,
    action         String,
    passed         Bool,
    api            String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS guardrail_verdicts_input_mv TO guardrail_verdicts AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    key_id,
    request_id,
    trace_id,
    guardrail,
    direction,
    verdict,
    score,
    reason,
    latency_ms,
    policy,
    policy_version,
    shadow,
    span_types,
    unscanned,
    action,
    passed,
    api
FROM guardrail_verdicts_input;

-- given_at unset (NULL: the message is absent) reads `time`, as the writer did before.
CREATE TABLE IF NOT EXISTS feedback_input
(
    event_id     String,
    time_seconds Int64,
    time_nanos   Int32,
    tenant       String,
    key_id       String,
    request_id   String,
    trace_id     String,
    score        Float64,
    label        String,
    comment      String,
    source       String,
    thumbs       Int32,
    given_at     Nullable(Tuple(seconds Int64, nanos Int32))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_input_mv TO feedback AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    key_id,
    request_id,
    trace_id,
    score,
    label,
    comment,
    source,
    sign(thumbs) AS thumbs,
    if(
        isNull(given_at),
        time,
        fromUnixTimestamp64Milli(given_at.seconds * 1000 + intDiv(given_at.nanos, 1000000), 'UTC')
    ) AS given_at
FROM feedback_input;

CREATE TABLE IF NOT EXISTS evaluations_input
(
    event_id        String,
    time_seconds    Int64,
    time_nanos      Int32,
    tenant          String,
    request_id      String,
    trace_id        String,
    run_id          String,
    evaluator       String,
    score           Float64,
    passed          Bool,
    model           String,
    prompt          String,
    prompt_version  String,
    dataset         String,
    reason          String,
    item_id         String,
    dataset_version String,
    prompt_label    String,
    prompt_arm      String,
    kind            String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS evaluations_input_mv TO evaluations AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    request_id,
    trace_id,
    run_id,
    evaluator,
    score,
    passed,
    model,
    prompt,
    prompt_version,
    dataset,
    reason,
    item_id,
    dataset_version,
    prompt_label,
    prompt_arm,
    kind
FROM evaluations_input;

CREATE TABLE IF NOT EXISTS budget_alerts_input
(
    event_id     String,
    time_seconds Int64,
    time_nanos   Int32,
    tenant       String,
    key_id       String,
    period       String,
    period_start String,
    threshold    Float64,
    spend_nanos  Int64,
    limit_nanos  Int64,
    currency     String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS budget_alerts_input_mv TO budget_alerts AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    key_id,
    period,
    period_start,
    threshold,
    toDecimal128(spend_nanos, 9) / 1000000000 AS spend,
    toDecimal128(limit_nanos, 9) / 1000000000 AS limit_amount,
    currency
FROM budget_alerts_input;

CREATE TABLE IF NOT EXISTS eval_runs_input
(
    event_id            String,
    time_seconds        Int64,
    time_nanos          Int32,
    tenant              String,
    key_id              String,
    status              String,
    dataset             String,
    dataset_version     String,
    prompt              String,
    prompt_version      String,
    model               String,
    settings            Map(String, String),
    items               Int32,
    failed_items        Int32,
    finished_at_seconds Int64,
    finished_at_nanos   Int32,
    summary             Map(String, Float64),
    judge_input_tokens  Int64,
    judge_output_tokens Int64,
    judge_cost_nanos    Int64,
    currency            String,
    reason              String,
    concurrency         Int32,
    evaluations         Int32
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS eval_runs_input_mv TO eval_runs AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    key_id,
    status,
    dataset,
    dataset_version,
    prompt,
    prompt_version,
    model,
    settings,
    greatest(items, 0) AS items,
    greatest(failed_items, 0) AS failed_items,
    fromUnixTimestamp64Milli(finished_at_seconds * 1000 + intDiv(finished_at_nanos, 1000000), 'UTC') AS finished_at,
    summary,
    greatest(judge_input_tokens, 0) AS judge_input_tokens,
    greatest(judge_output_tokens, 0) AS judge_output_tokens,
    toDecimal128(judge_cost_nanos, 9) / 1000000000 AS judge_cost,
    currency,
    reason,
    greatest(concurrency, 0) AS concurrency,
    greatest(evaluations, 0) AS evaluations
FROM eval_runs_input;

CREATE TABLE IF NOT EXISTS drift_events_input
(
    event_id                String,
    time_seconds            Int64,
    time_nanos              Int32,
    tenant                  String,
    signal                  String,
    method                  String,
    statistic               Float64,
    p_value                 Float64,
    threshold               Float64,
    drifted                 Bool,
    reference_start_seconds Int64,
    reference_start_nanos   Int32,
    reference_end_seconds   Int64,
    reference_end_nanos     Int32,
    recent_start_seconds    Int64,
    recent_start_nanos      Int32,
    recent_end_seconds      Int64,
    recent_end_nanos        Int32,
    n_reference             Int32,
    n_recent                Int32
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS drift_events_input_mv TO drift_events AS
SELECT
    fromUnixTimestamp64Milli(time_seconds * 1000 + intDiv(time_nanos, 1000000), 'UTC') AS time,
    tenant,
    event_id,
    signal,
    method,
    statistic,
    p_value,
    threshold,
    drifted,
    fromUnixTimestamp64Milli(reference_start_seconds * 1000 + intDiv(reference_start_nanos, 1000000), 'UTC') AS reference_start,
    fromUnixTimestamp64Milli(reference_end_seconds * 1000 + intDiv(reference_end_nanos, 1000000), 'UTC') AS reference_end,
    fromUnixTimestamp64Milli(recent_start_seconds * 1000 + intDiv(recent_start_nanos, 1000000), 'UTC') AS recent_start,
    fromUnixTimestamp64Milli(recent_end_seconds * 1000 + intDiv(recent_end_nanos, 1000000), 'UTC') AS recent_end,
    greatest(n_reference, 0) AS n_reference,
    greatest(n_recent, 0) AS n_recent
FROM drift_events_input;
