-- Budget alerts from metering (llmops.events.budget): one row per threshold
-- crossed, per budget and period.

CREATE TABLE IF NOT EXISTS budget_alerts
(
    time         DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant       LowCardinality(String),
    event_id     String CODEC(ZSTD(1)),
    key_id       LowCardinality(String) COMMENT '"" for a tenant''s budget',
    period       LowCardinality(String) COMMENT 'day | month',
    period_start LowCardinality(String),
    threshold    Float32 COMMENT 'fraction of the limit crossed; 1 = the hard limit',
    spend        Decimal(18, 9),
    limit_amount Decimal(18, 9),
    currency     LowCardinality(String),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);
