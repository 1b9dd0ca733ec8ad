-- One row per accepted event, flat enough for analysts' SQL.
-- ReplacingMergeTree(position) drops redelivered copies at merge time; exact reads use FINAL.
CREATE TABLE IF NOT EXISTS {db}.events
(
    workspace_id       LowCardinality(String),
    event_id           UUID,
    message_id         String,
    profile_id         UUID COMMENT 'profile the event was attributed to when it was recorded (see profile_fragments)',
    position           UInt64 COMMENT 'position in the event store notification log',
    type               LowCardinality(String) COMMENT 'identify | track | page | screen | group | alias',
    event              String COMMENT 'track event name',
    name               String COMMENT 'page / screen name',
    user_id            String,
    anonymous_id       String,
    email              String,
    group_id           String,
    previous_id        String,
    timestamp          DateTime64(3, 'UTC') COMMENT 'event time, corrected for client clock skew',
    original_timestamp DateTime64(3, 'UTC'),
    sent_at            Nullable(DateTime64(3, 'UTC')),
    received_at        DateTime64(3, 'UTC'),
    properties         String COMMENT 'JSON object',
    traits             String COMMENT 'JSON object',
    context            String COMMENT 'JSON object'
)
ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (workspace_id, profile_id, timestamp, event_id);

-- identifier → surviving profile; the row with the highest log position wins.
CREATE TABLE IF NOT EXISTS {db}.identities
(
    workspace_id LowCardinality(String),
    identifier   String COMMENT 'type:value, e.g. user_id:42, email:ann@example.com',
    profile_id   UUID,
    position     UInt64
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (workspace_id, identifier);

-- Every profile ever created (a fragment) → the profile it now belongs to after merges.
CREATE TABLE IF NOT EXISTS {db}.profile_fragments
(
    workspace_id LowCardinality(String),
    fragment_id  UUID,
    profile_id   UUID,
    position     UInt64
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (workspace_id, fragment_id);

-- The identifiers each fragment brought in (a profile's identifiers are its fragments' ones).
CREATE TABLE IF NOT EXISTS {db}.fragment_identifiers
(
    workspace_id LowCardinality(String),
    fragment_id  UUID,
    identifier   String,
    position     UInt64
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (workspace_id, fragment_id, identifier);

-- The unified profile, recomputed from events for every profile a batch touches.
-- version grows with every recompute; merged-away profiles get is_deleted = 1.
CREATE TABLE IF NOT EXISTS {db}.profiles
(
    workspace_id LowCardinality(String),
    profile_id   UUID,
    identifiers  Array(String),
    fragments    Array(UUID) COMMENT 'every profile merged into this one, itself included',
    traits       Map(String, String) COMMENT 'trait → JSON value, latest by event time',
    trait_times  Map(String, DateTime64(3, 'UTC')),
    first_seen   DateTime64(3, 'UTC'),
    last_seen    DateTime64(3, 'UTC'),
    event_count  UInt64,
    counts       Map(String, UInt64) COMMENT 'events by type',
    position     UInt64 COMMENT 'highest log position applied to this profile',
    version      UInt64,
    is_deleted   UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (workspace_id, profile_id);

-- The last log position each projection (and partition) has applied.
CREATE TABLE IF NOT EXISTS {db}.positions
(
    name       LowCardinality(String),
    partition  Int32,
    position   UInt64,
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (name, partition);
