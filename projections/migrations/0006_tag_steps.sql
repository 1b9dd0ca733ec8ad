-- Every evaluation step of the tag engine, in the order it ran: a page of the log the tags processor
-- applied, a timer tick that found timers due, a page of a backfill. Tag history depends on where
-- the log was cut into pages, on how timers and backfills interleaved with them, and on the clock,
-- none of which is in the log; a rebuild follows these steps (read before the database is dropped)
-- and so reproduces tag_changes, tag_membership and tag_timers exactly, with their causes and times.
-- Written only once a workspace has a tag (a definition or a manual tag), after the step applied.
CREATE TABLE IF NOT EXISTS {db}.tag_steps
(
    seq          UInt64 COMMENT 'order of the step',
    kind         LowCardinality(String) COMMENT 'page | tick | backfill',
    position     UInt64 COMMENT 'page: its last log position; tick: the last applied, backfill: the definition',
    now          DateTime64(6, 'UTC') COMMENT 'the clock reading every evaluation of the step used',
    workspace_id LowCardinality(String) COMMENT 'backfill: workspace of the tag',
    tag_id       String COMMENT 'backfill: the tag',
    rule_version UInt32 COMMENT 'backfill: the rule version',
    after        String COMMENT 'backfill: the page starts after this profile id'
)
ENGINE = ReplacingMergeTree
ORDER BY seq;
