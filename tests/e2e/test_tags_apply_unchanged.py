"""Applying a tag file again, or PUTting the same definition, records nothing: no version, no backfill."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from infra.cli import app
from tests.conftest import Running

TAGS_YAML = """\
tags:
  - id: vip
    name: "VIP: revenue over 1000 in 90 days"
    rule:
      event: Order Completed
      measure: sum(revenue)
      op: ">"
      value: 1000
      within: 90d
  - id: pros
    rule: {trait: plan, op: "=", value: pro}
"""


def test_an_unchanged_file_or_definition_records_nothing(live: Running, tmp_path: Path) -> None:
    s = live.platform.settings
    # No CDP_ADMIN_KEY: `cdp tags apply` takes the admin key from the data dir's keys.json.
    env = {"CDP_HTTP_HOST": s.http_host, "CDP_HTTP_PORT": str(s.http_port), "CDP_DATA_DIR": str(s.data_dir),
           "CDP_WRITE_KEY": live.write_key, "CDP_READ_KEY": live.read_key}  # fmt: skip
    path = tmp_path / "tags.yaml"
    path.write_text(TAGS_YAML)
    first = CliRunner().invoke(app, ["tags", "apply", str(path)], env=env)
    assert first.exit_code == 0, first.output
    assert "tag vip is at rule version 1" in first.output and "tag pros is at rule version 1" in first.output
    live.settle()
    position = live.platform.app.last_position()

    again = CliRunner().invoke(app, ["tags", "apply", str(path)], env=env)
    assert again.exit_code == 0, again.output
    assert "tag vip is unchanged at rule version 1" in again.output
    assert "tag pros is unchanged at rule version 1" in again.output
    assert "backfill" not in again.output
    assert live.platform.app.last_position() == position  # no version recorded, so no message and no backfill
    assert not live.platform.tags.backfills_pending  # type: ignore[union-attr]

    # The same definition over HTTP, spelt otherwise (key order, 1000.0, the default name written out):
    # the existing version comes back and nothing is recorded.
    write = live.admin_headers  # changing tags needs the admin key
    same = {"rule": {"within": "90d", "value": 1000.0, "op": ">", "measure": "sum(revenue)", "event": "Order Completed"},
            "name": "VIP: revenue over 1000 in 90 days", "description": ""}  # fmt: skip
    response = live.http.put("/v1/tags/vip", json=same, headers=write)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rule_version"] == 1 and body["backfill"]["rule_version"] == 1 and body["backfill"]["state"] == "done"
    response = live.http.put("/v1/tags/pros", json={"id": "pros", "name": "pros", "rule": {"trait": "plan", "op": "=",
                                                                                         "value": "pro"}}, headers=write)  # fmt: skip
    assert response.status_code == 200 and response.json()["rule_version"] == 1, response.text
    live.settle()
    assert live.platform.app.last_position() == position

    # A changed name, description or rule is a new version; so is defining a deleted tag again.
    for change in ({**same, "name": "VIPs"}, {**same, "name": "VIPs", "description": "big spenders"},
                   {**same, "name": "VIPs", "description": "big spenders", "rule": {**same["rule"], "value": 2000}}):
        response = live.http.put("/v1/tags/vip", json=change, headers=write)
        assert response.status_code == 200, response.text
    assert response.json()["rule_version"] == 4
    assert live.http.delete("/v1/tags/pros", headers=write).status_code == 200
    response = live.http.put("/v1/tags/pros", json={"rule": {"trait": "plan", "op": "=", "value": "pro"}}, headers=write)
    assert response.status_code == 200 and response.json()["rule_version"] == 3, response.text
    live.settle()
    assert live.platform.app.last_position() == position + 5
