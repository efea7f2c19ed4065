-- One table per event type on llmops.events.>, written only by the analytics service.
-- Every table: partitioned by month, ordered by (tenant, time, event_id) for the
-- common "one tenant, a time range" queries. ReplacingMergeTree keyed by that order
-- is the backstop against a duplicate event; the writer itself never inserts an
-- event twice, so queries need no FINAL. `inserted_at` shows ingestion lag.

CREATE TABLE IF NOT EXISTS interactions
(
    time                   DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant                 LowCardinality(String),
    event_id               String CODEC(ZSTD(1)),
    key_id                 LowCardinality(String),
    request_id             String CODEC(ZSTD(1)),
    trace_id               String CODEC(ZSTD(1)),
    api                    LowCardinality(String) COMMENT 'grpc.chat | grpc.chat_once | openai.chat | openai.embeddings',
    model_requested        LowCardinality(String),
    model_used             LowCardinality(String) COMMENT '<provider>/<model> that answered',
    failed_targets         Array(LowCardinality(String)),
    prompt                 LowCardinality(String),
    prompt_version         LowCardinality(String),
    input_tokens           UInt32,
    output_tokens          UInt32,
    time_to_first_token_ms Float32 CODEC(ZSTD(1)),
    total_ms               Float32 CODEC(ZSTD(1)),
    overhead_ms            Float32 CODEC(ZSTD(1)),
    steps                  Map(LowCardinality(String), Float32) COMMENT 'each pipeline step''s ms',
    cache                  LowCardinality(String) COMMENT 'miss | exact_hit | semantic_hit | bypass',
    cited_doc_ids          Array(String) CODEC(ZSTD(1)),
    cited_chunk_ids        Array(String) CODEC(ZSTD(1)),
    status                 LowCardinality(String) COMMENT 'a gRPC status code name: OK, UNAVAILABLE, ...',
    error                  String CODEC(ZSTD(3)),
    streamed               Bool,
    collection             LowCardinality(String),
    text_retention         LowCardinality(String) COMMENT 'off | redacted | full',
    question               String CODEC(ZSTD(3)),
    answer                 String CODEC(ZSTD(3)),
    inserted_at            DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);

CREATE TABLE IF NOT EXISTS documents
(
    time          DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant        LowCardinality(String),
    event_id      String CODEC(ZSTD(1)),
    doc_id        String CODEC(ZSTD(1)),
    version       Int64,
    stage         LowCardinality(String) COMMENT 'the service that decided the outcome',
    status        LowCardinality(String) COMMENT 'indexed | unchanged | deleted | failed | superseded',
    chunks        UInt32,
    tokens        UInt32 COMMENT 'tokens embedded',
    content_bytes UInt64,
    reason        String CODEC(ZSTD(3)),
    trace_id      String CODEC(ZSTD(1)),
    source        String CODEC(ZSTD(3)),
    collection    LowCardinality(String),
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);

CREATE TABLE IF NOT EXISTS usage
(
    time                DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant              LowCardinality(String),
    event_id            String CODEC(ZSTD(1)),
    key_id              LowCardinality(String),
    request_id          String CODEC(ZSTD(1)),
    model               LowCardinality(String),
    prompt              LowCardinality(String),
    prompt_version      LowCardinality(String),
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens    UInt64,
    cost                Decimal(18, 9) COMMENT 'in currency; 0 with priced = false means unknown, not free',
    currency            LowCardinality(String),
    priced              Bool,
    price_version       LowCardinality(String),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);

CREATE TABLE IF NOT EXISTS guardrail_verdicts
(
    time        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant      LowCardinality(String),
    event_id    String CODEC(ZSTD(1)),
    key_id      LowCardinality(String),
    request_id  String CODEC(ZSTD(1)),
    trace_id    String CODEC(ZSTD(1)),
    guardrail   LowCardinality(String),
    direction   LowCardinality(String) COMMENT 'input | output',
    verdict     LowCardinality(String) COMMENT 'allow | block | redact | flag',
    score       Float32,
    reason      String CODEC(ZSTD(3)),
    latency_ms  Float32,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);

CREATE TABLE IF NOT EXISTS feedback
(
    time        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant      LowCardinality(String),
    event_id    String CODEC(ZSTD(1)),
    key_id      LowCardinality(String),
    request_id  String CODEC(ZSTD(1)),
    trace_id    String CODEC(ZSTD(1)),
    score       Float32,
    label       LowCardinality(String),
    comment     String CODEC(ZSTD(3)),
    source      LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);

CREATE TABLE IF NOT EXISTS evaluations
(
    time           DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    tenant         LowCardinality(String),
    event_id       String CODEC(ZSTD(1)),
    request_id     String CODEC(ZSTD(1)),
    trace_id       String CODEC(ZSTD(1)),
    run_id         LowCardinality(String),
    evaluator      LowCardinality(String),
    score          Float32,
    passed         Bool,
    model          LowCardinality(String),
    prompt         LowCardinality(String),
    prompt_version LowCardinality(String),
    dataset        LowCardinality(String),
    reason         String CODEC(ZSTD(3)),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time, event_id);
