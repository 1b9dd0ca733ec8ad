-- One row per accepted event, flat enough for analysts' SQL.
-- An event belongs to whichever profile owns its anchor identifier (see identity_history),
-- so merges and splits move history without rewriting events.
-- ReplacingMergeTree(position) drops redelivered copies at merge time; exact reads use FINAL.
-- Not partitioned by time: one batch may span years of late events, and ClickHouse caps the
-- partitions a single insert may touch.
CREATE TABLE IF NOT EXISTS {db}.events
(
    workspace_id       LowCardinality(String),
    event_id           UUID,
    message_id         String,
    anchor             String COMMENT 'strongest identifier of the event (type:value), whose owner is the profile of the event',
    profile_id         UUID COMMENT 'owner of the anchor when the event was recorded',
    position           UInt64 COMMENT 'position in the event store notification log',
    type               LowCardinality(String) COMMENT 'identify | track | page | screen | group | alias',
    event              String COMMENT 'track event name',
    name               String COMMENT 'page / screen name',
    source             LowCardinality(String) COMMENT 'context.source, else context.library.name',
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
ORDER BY (workspace_id, anchor, timestamp, event_id)
SETTINGS index_granularity = 1024;

-- Every change of an identifier's owner; the row with the highest position is the owner now,
-- the highest at or before a time is the owner then (time travel).
CREATE TABLE IF NOT EXISTS {db}.identity_history
(
    workspace_id LowCardinality(String),
    identifier   String COMMENT 'type:value, e.g. user_id:42, email:ann@example.com, phone:+4915123456789',
    profile_id   UUID,
    position     UInt64,
    recorded_at  DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace_id, identifier, position)
SETTINGS index_granularity = 256;

-- A profile's identifiers now (rows of identifiers that moved away are deleted).
CREATE TABLE IF NOT EXISTS {db}.profile_identifiers
(
    workspace_id LowCardinality(String),
    profile_id   UUID,
    identifier   String,
    position     UInt64,
    is_deleted   UInt8
)
ENGINE = ReplacingMergeTree(position, is_deleted)
ORDER BY (workspace_id, profile_id, identifier)
SETTINGS index_granularity = 256;

-- Identity history per profile: created, linked, absorbed, merged_into, merge_refused, split_apart.
CREATE TABLE IF NOT EXISTS {db}.profile_changes
(
    workspace_id     LowCardinality(String),
    profile_id       UUID,
    position         UInt64,
    change           LowCardinality(String),
    other_profile_id String,
    identifiers      Array(String),
    cause_event_id   String,
    reason           String,
    recorded_at      DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace_id, profile_id, position, change, other_profile_id)
SETTINGS index_granularity = 256;

-- Lookup tables use index_granularity 256: a point lookup reads 256 rows per key, not 8192.
-- The unified profile with its computed traits, recomputed from events for every profile a batch touches.
-- version grows with every recompute; merged-away profiles get is_deleted = 1.
CREATE TABLE IF NOT EXISTS {db}.profiles
(
    workspace_id   LowCardinality(String),
    profile_id     UUID,
    identifiers    Array(String),
    traits         Map(String, String) COMMENT 'trait → JSON value, chosen by the trait precedence of the workspace',
    trait_times    Map(String, DateTime64(3, 'UTC')),
    trait_sources  Map(String, String),
    first_seen     DateTime64(3, 'UTC'),
    last_seen      DateTime64(3, 'UTC'),
    event_count    UInt64,
    counts         Map(String, UInt64) COMMENT 'events by type',
    track_counts   Map(String, UInt64) COMMENT 'track events by name',
    orders_count   UInt64,
    order_counts   Map(String, UInt64) COMMENT 'currency → completed orders',
    revenue        Map(String, Float64) COMMENT 'currency → completed minus refunded revenue',
    last_order_at  Nullable(DateTime64(3, 'UTC')),
    open_tickets   UInt32,
    csat_count     UInt32,
    csat_sum       Float64,
    position       UInt64 COMMENT 'highest log position among the events of the profile',
    doc            String COMMENT 'the whole profile as JSON, with its identity changes: one column for API reads',
    version        UInt64,
    is_deleted     UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (workspace_id, profile_id)
SETTINGS index_granularity = 256;

-- Every version of each workspace's identity and trait rules, as the log recorded them.
CREATE TABLE IF NOT EXISTS {db}.workspace_rules
(
    workspace_id LowCardinality(String),
    version      UInt32,
    rules        String COMMENT 'JSON of IdentityRules',
    position     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace_id, version);

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
