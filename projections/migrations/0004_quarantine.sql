-- Quarantined entries: log entries a projection could not apply, with the reason, so that the
-- rest of the log moves on (streams/pipeline.py). One row per projection and position; a retry
-- writes a newer version (resolved = 1 when it applied). Rebuilt like every other projection.
CREATE TABLE IF NOT EXISTS {db}.quarantine
(
    processor    LowCardinality(String) COMMENT 'the projection (processor) that could not apply the entry',
    position     UInt64 COMMENT 'log position of the entry',
    event_id     String,
    workspace_id LowCardinality(String),
    kind         LowCardinality(String) COMMENT 'event, identity, rules, definition or manual_tag',
    error        String COMMENT 'exception type',
    reason       String COMMENT 'what failed, as the processor reported it',
    attempts     UInt32 COMMENT 'how many times it was tried (1 when first quarantined)',
    resolved     UInt8 COMMENT '1 once a retry applied it',
    at           DateTime64(6, 'UTC') COMMENT 'when this row was written',
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (processor, position);

-- Which log the projections were built from: a fingerprint of its first entry, recorded when the
-- projections start from an empty database (infra/startup_checks.py refuses to serve another log).
CREATE TABLE IF NOT EXISTS {db}.log_origin
(
    log_id       String,
    recorded_at  DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY tuple()
