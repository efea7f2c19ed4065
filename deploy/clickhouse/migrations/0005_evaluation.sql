-- Evaluation (issue 12): the prompt label and A/B arm on interactions, thumbs on
-- feedback, offline-run and online-scoring fields on evaluations, and two new
-- tables: eval_runs (one row per offline run) and drift_events. Rows stored
-- before this read '' / 0 in the new columns (feedback's given_at reads `time`,
-- which was when it was given before feedback took the interaction's time).

ALTER TABLE interactions
    ADD COLUMN IF NOT EXISTS prompt_label LowCardinality(String) COMMENT 'the label that chose the version, "" when one was named' AFTER guardrail_blocked_passages,
    ADD COLUMN IF NOT EXISTS prompt_arm   LowCardinality(String) COMMENT 'the A/B arm (v<version>) of a split label, "" otherwise' AFTER prompt_label;

ALTER TABLE feedback
    ADD COLUMN IF NOT EXISTS thumbs   Int8 COMMENT '+1 up, -1 down, 0 none' AFTER source,
    ADD COLUMN IF NOT EXISTS given_at DateTime64(3, 'UTC') DEFAULT time COMMENT 'when the judgement was made; the latest one per event_id counts' CODEC(Delta, ZSTD(1)) AFTER thumbs,
    COMMENT COLUMN time 'the judged interaction''s time: a repeated judgement (same event_id) replaces the earlier';

ALTER TABLE evaluations
    ADD COLUMN IF NOT EXISTS item_id         String COMMENT 'the dataset item (offline runs)' CODEC(ZSTD(1)) AFTER reason,
    ADD COLUMN IF NOT EXISTS dataset_version LowCardinality(String) AFTER item_id,
    ADD COLUMN IF NOT EXISTS prompt_label    LowCardinality(String) AFTER dataset_version,
    ADD COLUMN IF NOT EXISTS prompt_arm      LowCardinality(String) AFTER prompt_label,
    ADD COLUMN IF NOT EXISTS kind            LowCardinality(String) COMMENT 'offline | online | judge' AFTER prompt_arm;

-- One row per offline run: the start (status running) and the end (finished |
-- failed) share event_id = run id and `time` = the start; the version column
-- finished_at (1970 while running) makes the end win whatever the insert order.
-- Read it with FINAL.
CREATE TABLE IF NOT EXISTS eval_runs
(
    time                DateTime64(3, 'UTC') COMMENT 'when the run started' CODEC(Delta, ZSTD(1)),
    tenant              LowCardinality(String),
    event_id            String COMMENT 'the run id' CODEC(ZSTD(1)),
    key_id              LowCardinality(String),
    status              LowCardinality(String) COMMENT 'running | finished | failed',
    dataset             LowCardinality(String),
    dataset_version     LowCardinality(String),
    prompt              LowCardinality(String),
    prompt_version      LowCardinality(String),
    model               LowCardinality(String),
    settings            Map(String, String) COMMENT 'what shaped the answers: top_k, params, policy ...',
    items               UInt32,
    failed_items        UInt32,
    finished_at         DateTime64(3, 'UTC') COMMENT '1970-01-01 while running',
    summary             Map(String, Float64) COMMENT 'each metric''s mean over scored items',
    judge_input_tokens  UInt64,
    judge_output_tokens UInt64,
    judge_cost          Decimal(18, 9) COMMENT 'what the LLM judge cost, in currency',
    currency            LowCardinality(String),
    reason              String CODEC(ZSTD(3)),
    concurrency         UInt32,
    evaluations         UInt32 COMMENT 'evaluation rows the run published: a reader knows it has them all',
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(finished_at)
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);

-- One row per drift check of one signal of one tenant.
CREATE TABLE IF NOT EXISTS drift_events
(
    time            DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant          LowCardinality(String),
    event_id        String CODEC(ZSTD(1)),
    signal          LowCardinality(String) COMMENT 'questions | score:<evaluator>',
    method          LowCardinality(String) COMMENT 'mmd | psi | ks',
    statistic       Float64,
    p_value         Float64 COMMENT '-1 where the method has none (psi)',
    threshold       Float64,
    drifted         Bool,
    reference_start DateTime64(3, 'UTC'),
    reference_end   DateTime64(3, 'UTC'),
    recent_start    DateTime64(3, 'UTC'),
    recent_end      DateTime64(3, 'UTC'),
    n_reference     UInt32,
    n_recent        UInt32,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);
