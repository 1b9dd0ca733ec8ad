"""The README's tag walk-through: `cdp tags apply` a YAML file, a Segment client sends events, Kafka shows the entry."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition
from segment.analytics.client import Client
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
  - id: complainers
    name: "Complainers: 2 or more complaint tickets in 30 days"
    rule:
      event: Ticket Opened
      where:
        - {property: category, op: "=", value: complaint}
      op: ">="
      value: 2
      within: 30d
"""


def test_apply_a_yaml_file_then_a_segment_client_makes_a_vip(live: Running, tmp_path: Path) -> None:
    s = live.platform.settings
    env = {"CDP_HTTP_HOST": s.http_host, "CDP_HTTP_PORT": str(s.http_port), "CDP_DATA_DIR": str(s.data_dir),
           "CDP_WRITE_KEY": live.write_key, "CDP_READ_KEY": live.read_key, "CDP_ADMIN_KEY": live.admin_key}  # fmt: skip
    path = tmp_path / "tags.yaml"
    path.write_text(TAGS_YAML)
    result = CliRunner().invoke(app, ["tags", "apply", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "tag vip is at rule version 1" in result.output and "complainers v1: 0 members" in result.output

    path.write_text("id: broken\nrule: {event: Order Completed, within: soon}\n")
    refused = CliRunner().invoke(app, ["tags", "apply", str(path)], env=env)
    assert refused.exit_code == 1 and "rule.within: 'soon' is not a duration" in refused.output

    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap_servers, consumer_timeout_ms=500)
    partitions = [TopicPartition("cdp.tag-changes", p) for p in consumer.partitions_for_topic("cdp.tag-changes")]
    consumer.assign(partitions)
    client = Client(write_key=live.write_key, host=str(live.http.base_url).rstrip("/"), sync_mode=True)
    client.track("ann", "Order Completed", {"revenue": 700, "currency": "EUR"})
    client.track("ann", "Order Completed", {"revenue": 400, "currency": "EUR"})
    sent = time.monotonic()
    entered = None
    while entered is None and time.monotonic() - sent < 10:
        for records in consumer.poll(timeout_ms=100).values():
            for record in records:
                message = orjson.loads(record.value)
                if message["tag_id"] == "vip" and message["change"] == "entered":
                    entered = message
    consumer.close()
    assert entered is not None, "no entry on cdp.tag-changes"
    assert time.monotonic() - sent < 5  # the target is 1 s (measured by bench/tags.py); this bounds a shared CI box
    live.wait_caught_up()  # the change is published before membership is written (at least once)
    profile = live.profile("user_id:ann").json()
    assert entered["profile_id"] == profile["profile_id"] and entered["rule_version"] == 1
    assert [t["id"] for t in profile["tags"]] == ["vip"]
