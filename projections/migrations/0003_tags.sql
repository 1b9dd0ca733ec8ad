-- Tags: who is in which tag now, every enter/exit with its cause, timers for time-based changes,
-- the definitions the log recorded and the state of each backfill.

-- Current members. A dynamic tag's members follow its rule; a manual tag's follow the API.
-- version grows with every write; members that left get is_deleted = 1 (FINAL hides them).
CREATE TABLE IF NOT EXISTS {db}.tag_membership
(
    workspace_id LowCardinality(String),
    tag_id       String COMMENT 'id (slug) of the tag, e.g. vip',
    profile_id   UUID,
    kind         LowCardinality(String) COMMENT 'dynamic | manual',
    rule_version UInt32 COMMENT 'version of the rule the profile qualified under (0 for manual tags)',
    since        DateTime64(3, 'UTC') COMMENT 'when the profile entered',
    position     UInt64 COMMENT 'log position the change was decided at',
    version      UInt64,
    is_deleted   UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (workspace_id, tag_id, profile_id)
SETTINGS index_granularity = 256;

-- History: one row per enter or exit, never updated. Key (profile_id, tag_id, position, change).
CREATE TABLE IF NOT EXISTS {db}.tag_changes
(
    workspace_id LowCardinality(String),
    tag_id       String,
    profile_id   UUID,
    change       LowCardinality(String) COMMENT 'entered | exited',
    kind         LowCardinality(String) COMMENT 'dynamic | manual',
    at           DateTime64(3, 'UTC') COMMENT 'when it was decided (the platform clock)',
    rule_version UInt32,
    position     UInt64,
    cause        LowCardinality(String) COMMENT 'event | time | rule | merge | split | manual | deleted',
    reason       String
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace_id, profile_id, tag_id, position, change)
SETTINGS index_granularity = 256;

-- When each (profile, tag) must be evaluated again without a new event: the next time an event
-- leaves a window, or a recency condition flips. due = epoch means no timer.
CREATE TABLE IF NOT EXISTS {db}.tag_timers
(
    workspace_id LowCardinality(String),
    tag_id       String,
    profile_id   UUID,
    due          DateTime64(3, 'UTC'),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, tag_id, profile_id)
SETTINGS index_granularity = 256;

-- Tag and segment definitions as the log recorded them (the processor reloads the latest at start).
CREATE TABLE IF NOT EXISTS {db}.tag_definitions
(
    workspace_id LowCardinality(String),
    kind         LowCardinality(String) COMMENT 'tag | segment',
    tag_id       String,
    rule_version UInt32,
    name         String,
    rule         String COMMENT 'JSON of the rule, empty once deleted',
    deleted      UInt8,
    position     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace_id, kind, tag_id, rule_version);

-- Progress of the evaluation of a tag's rule over every profile, per rule version.
CREATE TABLE IF NOT EXISTS {db}.tag_backfills
(
    workspace_id LowCardinality(String),
    tag_id       String,
    rule_version UInt32,
    state        LowCardinality(String) COMMENT 'running | done | superseded',
    done         UInt64,
    total        UInt64,
    started_at   DateTime64(3, 'UTC'),
    updated_at   DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (workspace_id, tag_id, rule_version);
