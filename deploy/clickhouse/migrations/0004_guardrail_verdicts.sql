-- Guardrails (issue 11): which policy (and version) decided, shadow policies' verdicts
-- beside the live ones, what was found (span types only, never the values), and the
-- per-request summary on interactions. Rows stored before this read the defaults
-- ('' / 0 / false / []): no policy recorded.

ALTER TABLE guardrail_verdicts
    ADD COLUMN IF NOT EXISTS policy         LowCardinality(String) COMMENT '"<tenant>/<name>" of the policy that applied' AFTER latency_ms,
    ADD COLUMN IF NOT EXISTS policy_version Int64 AFTER policy,
    ADD COLUMN IF NOT EXISTS shadow         Bool COMMENT 'a shadow policy''s verdict: it changed nothing' AFTER policy_version,
    ADD COLUMN IF NOT EXISTS span_types     Array(LowCardinality(String)) COMMENT 'what was found: EMAIL_ADDRESS, PERSON, AWS_KEY, ...' AFTER shadow,
    ADD COLUMN IF NOT EXISTS unscanned      Bool COMMENT 'the scanner did not run (error, time budget)' AFTER span_types,
    ADD COLUMN IF NOT EXISTS action         LowCardinality(String) COMMENT 'what the whole check did: allow | redact | block' AFTER unscanned,
    ADD COLUMN IF NOT EXISTS passed         Bool COMMENT 'the score stayed below the rule''s threshold' AFTER action,
    ADD COLUMN IF NOT EXISTS api            LowCardinality(String) COMMENT 'who asked: gateway | ingestion | admin' AFTER passed,
    COMMENT COLUMN direction 'input | context | output | document',
    COMMENT COLUMN verdict 'this scanner''s rule: allow | block | redact | flag';

ALTER TABLE interactions
    ADD COLUMN IF NOT EXISTS guardrail_policy           LowCardinality(String) COMMENT '"<tenant>/<name>", empty when no check ran' AFTER answer,
    ADD COLUMN IF NOT EXISTS guardrail_policy_version   Int64 AFTER guardrail_policy,
    ADD COLUMN IF NOT EXISTS guardrail_input_action     LowCardinality(String) COMMENT 'allow | redact | block | unscanned, empty when no check ran' AFTER guardrail_policy_version,
    ADD COLUMN IF NOT EXISTS guardrail_output_action    LowCardinality(String) COMMENT 'allow | redact | block | unscanned, empty when no check ran' AFTER guardrail_input_action,
    ADD COLUMN IF NOT EXISTS guardrail_fired            Array(LowCardinality(String)) COMMENT 'scanners whose rule fired (block, redact or flag)' AFTER guardrail_output_action,
    ADD COLUMN IF NOT EXISTS guardrail_input_ms         Float32 CODEC(ZSTD(1)) AFTER guardrail_fired,
    ADD COLUMN IF NOT EXISTS guardrail_output_ms        Float32 CODEC(ZSTD(1)) AFTER guardrail_input_ms,
    ADD COLUMN IF NOT EXISTS guardrail_blocked_passages UInt32 COMMENT 'retrieved passages left out (injections)' AFTER guardrail_output_ms;
