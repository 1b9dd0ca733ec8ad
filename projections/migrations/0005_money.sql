-- Money is exact: profile revenue in Decimal(38, 6) like kpi_facts, from the same money movements
-- (projections/money.py), and the revenue of completed orders before refunds for the average order value.
ALTER TABLE {db}.profiles MODIFY COLUMN revenue Map(String, Decimal(38, 6)) COMMENT 'currency → completed minus refunded revenue';
ALTER TABLE {db}.profiles ADD COLUMN IF NOT EXISTS order_revenue Map(String, Decimal(38, 6)) COMMENT 'currency → revenue of completed orders, before refunds' AFTER order_counts;
-- Computed traits defined once in Python (ProfileView) and stored, so tag rules compare what the profile shows.
ALTER TABLE {db}.profiles ADD COLUMN IF NOT EXISTS average_order_value Map(String, Decimal(38, 6)) COMMENT 'currency → order revenue before refunds ÷ orders' AFTER csat_sum;
ALTER TABLE {db}.profiles ADD COLUMN IF NOT EXISTS average_csat Nullable(Float64) COMMENT 'mean CSAT, 2 places' AFTER average_order_value;
