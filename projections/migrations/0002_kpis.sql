-- KPI facts: one row per thing a KPI counts, extracted from the CRM's reserved events
-- (an order, an order line, a refund, an opportunity stage, a ticket step, a feedback answer,
-- a campaign message, a cost, a sales target). Written by the kpis processor as events arrive.
-- Exact under redelivery: ReplacingMergeTree(position) keyed by fact_id, and KPI reads use FINAL.
-- Exact under late events: KPIs group by event time, so a late event lands in the day it belongs to.
-- The person behind a fact is the current owner of its anchor, resolved at read time (see
-- identity_moves), so merged profiles count once and a split re-attributes history.
CREATE TABLE IF NOT EXISTS {db}.kpi_facts
(
    workspace_id LowCardinality(String),
    fact_id      String COMMENT 'event id, or event id/line number for order lines',
    event_id     UUID,
    position     UInt64 COMMENT 'log position of the event',
    anchor       String COMMENT 'anchor identifier of the event: its current owner is the person',
    profile_id   UUID COMMENT 'owner of the anchor when the event was recorded (fallback person)',
    kind         LowCardinality(String) COMMENT 'order | order_line | refund | lead | opportunity | call | meeting | ticket_opened | ticket_assigned | ticket_resolved | feedback | message_sent | message_opened | message_clicked | cost | target',
    timestamp    DateTime64(3, 'UTC') COMMENT 'event time',
    entity_id    String COMMENT 'order, opportunity, ticket, lead id, or target key owner|start|end',
    amount       Decimal(38, 6) COMMENT 'revenue, refund, opportunity amount, cost, target, line price × quantity',
    has_amount   UInt8 COMMENT '0 for a refund of the whole order (amount comes from the order)',
    currency     LowCardinality(String),
    quantity     Int64,
    probability  Float64 COMMENT 'opportunity win probability, 0 to 1',
    stage        String,
    status       LowCardinality(String) COMMENT 'opportunity: open, won or lost',
    csat         Nullable(UInt8) COMMENT '1 to 5',
    nps          Nullable(UInt8) COMMENT '0 to 10',
    complaint    UInt8 COMMENT 'ticket of category complaint',
    channel      LowCardinality(String) COMMENT 'properties.channel, else the event source, email or sms for campaign messages',
    campaign     String COMMENT 'properties.campaign_id, else context.campaign.name',
    product      String COMMENT 'order lines: product_id, else sku, else name',
    owner        String COMMENT 'sales owner or ticket assignee',
    category     LowCardinality(String) COMMENT 'ticket or product category, or cost kind (marketing or sales)',
    priority     LowCardinality(String),
    period_start Date COMMENT 'sales target period',
    period_end   Date
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (workspace_id, kind, fact_id)
SETTINGS index_granularity = 1024;

-- Days on which an anchor was active (any event): retention, cohorts and "customers" counts.
-- Idempotent by key: the same anchor and day again replaces itself (the latest log position wins).
CREATE TABLE IF NOT EXISTS {db}.activity_days
(
    workspace_id LowCardinality(String),
    anchor       String,
    profile_id   UUID COMMENT 'owner of the anchor at the latest event of that day (fallback person)',
    day          Date COMMENT 'event time day (UTC)',
    position     UInt64 COMMENT 'log position of that event'
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (workspace_id, anchor, day)
SETTINGS index_granularity = 1024
;

-- Identifiers that changed owner after they were first linked (merges and splits), with every
-- owner they moved to. An identifier that never moved is still owned by the profile that owned it
-- when an event anchored on it was recorded (the event's profile_id), so a KPI finds a fact's person
-- from this small table instead of the whole identity_history.
CREATE TABLE IF NOT EXISTS {db}.identity_moves
(
    workspace_id LowCardinality(String),
    identifier   String,
    profile_id   UUID COMMENT 'owner from this position on',
    position     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace_id, identifier, position)
