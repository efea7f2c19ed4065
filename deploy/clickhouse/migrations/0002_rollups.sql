-- Rollups kept current by materialized views at insert time. Read them with
-- sum()/quantilesMerge() and GROUP BY: the answer is right before and after
-- background merges, so no FINAL is needed.

-- Tokens and cost per tenant x model x prompt version x day, from priced usage events.
CREATE TABLE IF NOT EXISTS usage_daily
(
    day                 Date,
    tenant              LowCardinality(String),
    model               LowCardinality(String),
    prompt              LowCardinality(String),
    prompt_version      LowCardinality(String),
    currency            LowCardinality(String),
    requests            UInt64,
    unpriced_requests   UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens    UInt64,
    cost                Decimal(38, 9)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, day, model, prompt, prompt_version, currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    toDate(time) AS day,
    tenant,
    model,
    prompt,
    prompt_version,
    currency,
    count() AS requests,
    countIf(NOT priced) AS unpriced_requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    toDecimal128(sum(cost), 9) AS cost
FROM usage
GROUP BY day, tenant, model, prompt, prompt_version, currency;

-- Latency and time to first token per tenant x model x hour, from answered
-- requests the model actually ran (cache hits excluded).
CREATE TABLE IF NOT EXISTS latency_hourly
(
    hour     DateTime('UTC'),
    tenant   LowCardinality(String),
    model    LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    total_ms AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float32),
    ttft_ms  AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, model, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_hourly_mv TO latency_hourly AS
SELECT
    toStartOfHour(time) AS hour,
    tenant,
    model_used AS model,
    count() AS requests,
    quantilesState(0.5, 0.9, 0.95, 0.99)(total_ms) AS total_ms,
    quantilesState(0.5, 0.9, 0.95, 0.99)(time_to_first_token_ms) AS ttft_ms
FROM interactions
WHERE status = 'OK' AND cache IN ('miss', 'bypass')
GROUP BY hour, tenant, model;
