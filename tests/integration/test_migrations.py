from infra.clickhouse import clickhouse_client
from infra.config import Settings
from projections.migrate import migrate, migrations


def test_migrations_apply_once_and_create_every_table(settings: Settings) -> None:
    client = clickhouse_client(settings)
    db = settings.clickhouse_database
    versions = [v for v, _, _ in migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert migrate(client, db) == versions
    assert migrate(client, db) == []  # a restart applies nothing again
    tables = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = {d:String}",
                                         parameters={"d": db}).result_rows}  # fmt: skip
    assert {"events", "identity_history", "profile_identifiers", "profile_changes", "profiles", "workspace_rules",
            "positions", "schema_migrations"} <= tables  # fmt: skip
    columns = {r[0] for r in client.query(
        "SELECT table FROM system.columns WHERE database = {d:String} AND name = 'workspace_id'",
        parameters={"d": db}).result_rows}  # fmt: skip
    assert {"events", "identity_history", "profile_identifiers", "profile_changes", "profiles",
            "workspace_rules"} <= columns  # fmt: skip
