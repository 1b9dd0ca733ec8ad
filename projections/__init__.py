"""ClickHouse schema, migrations and writers of the projections built from the event log."""
