-- Predictions (services/predictions.py): each trained model with its evaluation, and the latest scores of each
-- profile. Not projections of the log: they are computed from the projections on a schedule or on demand, so a
-- rebuild leaves them empty until the next run (`cdp predict`).
CREATE TABLE IF NOT EXISTS {db}.prediction_models
(
    workspace_id LowCardinality(String),
    model        LowCardinality(String) COMMENT 'purchase_propensity | churn_risk | predicted_ltv',
    version      String COMMENT 'when it was trained, as an ISO instant: scores name the version that made them',
    trained_at   DateTime64(3, 'UTC'),
    status       LowCardinality(String) COMMENT 'trained | not_enough_data',
    doc          String COMMENT 'JSON: parameters, features, time split, evaluation metrics, or what is missing'
)
ENGINE = ReplacingMergeTree(trained_at)
ORDER BY (workspace_id, model, version);

-- The latest score of each profile and model; a new run replaces it (one row per key once merged, read FINAL).
CREATE TABLE IF NOT EXISTS {db}.prediction_scores
(
    workspace_id LowCardinality(String),
    profile_id   UUID,
    model        LowCardinality(String),
    version      String,
    scored_at    DateTime64(3, 'UTC'),
    score        Float64 COMMENT 'a probability, or for predicted_ltv the expected purchases in the horizon',
    doc          String COMMENT 'JSON: the score with its details (predicted_ltv: value per currency, probability alive)'
)
ENGINE = ReplacingMergeTree(scored_at)
ORDER BY (workspace_id, profile_id, model)
SETTINGS index_granularity = 256;
