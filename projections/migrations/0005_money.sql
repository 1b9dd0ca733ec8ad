-- Money is exact: profile revenue in Decimal(38, 6) like kpi_facts, from the same money movements
-- (projections/money.py), and the revenue of completed orders before refunds for the average order value.
ALTER TABLE {db}.profiles MODIFY COLUMN revenue Map(String, Decimal(38, 6)) COMMENT 'currency → completed minus refunded revenue';
ALTER TABLE {db}.profiles ADD COLUMN IF NOT EXISTS order_revenue Map(String, Decimal(38, 6)) COMMENT 'currency → revenue of completed orders, before refunds' AFTER order_counts;
