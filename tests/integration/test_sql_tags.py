"""Tag tables through POST /v1/sql: current members, the history of enters and exits, and the definitions,
each confined to the caller's workspace."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Running

OTHER_WRITE_KEY, OTHER_READ_KEY, OTHER_ADMIN_KEY = "wk_sql_tags_other", "rk_sql_tags_other", "ak_sql_tags_other"


def _identify(r: Running, user: str, plan: str, key: str | None = None) -> None:
    call = {"type": "identify", "userId": user, "traits": {"plan": plan}, "messageId": uuid.uuid4().hex}
    response = r.http.post("/v1/batch", json={"batch": [call]}, auth=(key or r.write_key, ""))
    assert response.status_code == 200, response.text


def _put_tag(r: Running, slug: str, body: dict[str, Any], key: str | None = None) -> None:
    response = r.http.put(f"/v1/tags/{slug}", json=body, headers={"Authorization": f"Bearer {key or r.admin_key}"})
    assert response.status_code == 200, response.text


def _rows(r: Running, query: str, key: str | None = None) -> list[list[Any]]:
    response = r.http.post("/v1/sql", json={"query": query}, headers={"Authorization": f"Bearer {key or r.read_key}"})
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def test_tag_members_history_and_definitions_are_readable_per_workspace(running: Running) -> None:
    other = running.platform.app.ensure_workspace("initech")
    running.platform.app.grant_key(other, "write", OTHER_WRITE_KEY)
    running.platform.app.grant_key(other, "read", OTHER_READ_KEY)
    running.platform.app.grant_key(other, "admin", OTHER_ADMIN_KEY)
    pro = {"name": "Pro plan", "rule": {"trait": "plan", "op": "=", "value": "pro"}}
    _put_tag(running, "pros", pro)
    _put_tag(running, "pros", {**pro, "description": "customers on the pro plan"})  # version 2
    _put_tag(running, "pros", pro, key=OTHER_ADMIN_KEY)
    for user in ("ann", "bob", "cleo"):
        _identify(running, user, "pro")
    _identify(running, "dan", "pro", key=OTHER_WRITE_KEY)
    running.settle()
    _identify(running, "bob", "free")  # bob leaves: his membership row is deleted, his exit is history
    running.settle()
    ann = running.profile("user_id:ann").json()["profile_id"]
    bob = running.profile("user_id:bob").json()["profile_id"]
    cleo = running.profile("user_id:cleo").json()["profile_id"]
    manual = running.http.post("/v1/profiles/user_id:ann/tags", json={"tag": "beta-tester"},
                               headers=running.admin_headers)  # fmt: skip
    assert manual.status_code == 201, manual.text
    running.settle()

    members = _rows(running, "SELECT tag_id, toString(profile_id) AS p, kind FROM tag_membership ORDER BY tag_id, p")
    assert members == sorted([["beta-tester", ann, "manual"], ["pros", ann, "dynamic"], ["pros", cleo, "dynamic"]])
    assert _rows(running, "SELECT count() FROM tag_membership WHERE is_deleted = 1") == [[0]]

    changes = _rows(running, "SELECT toString(profile_id) AS p, change, cause FROM tag_changes "
                             "WHERE tag_id = 'pros' ORDER BY position, p")  # fmt: skip
    assert sorted(c[:2] for c in changes) == sorted([[ann, "entered"], [bob, "entered"], [cleo, "entered"],
                                                     [bob, "exited"]])  # fmt: skip
    assert changes[-1] == [bob, "exited", "event"]

    definitions = _rows(running, "SELECT kind, tag_id, rule_version, name, deleted FROM tag_definitions "
                                 "ORDER BY rule_version")  # fmt: skip
    assert definitions == [["tag", "pros", 1, "Pro plan", 0], ["tag", "pros", 2, "Pro plan", 0]]
    latest = _rows(running, "SELECT tag_id, argMax(rule_version, rule_version), "
                            "JSONExtractString(argMax(rule, rule_version), 'trait') FROM tag_definitions GROUP BY tag_id")
    assert latest == [["pros", 2, "plan"]]

    # The other workspace sees its own tag, member and history only.
    dan = running.http.get("/v1/profiles/user_id:dan", headers={"Authorization": f"Bearer {OTHER_READ_KEY}"}).json()
    theirs = "SELECT toString(profile_id) FROM tag_membership UNION ALL SELECT toString(profile_id) FROM tag_changes"
    assert _rows(running, theirs, key=OTHER_READ_KEY) == [[dan["profile_id"]], [dan["profile_id"]]]
    assert _rows(running, "SELECT tag_id, rule_version FROM tag_definitions", key=OTHER_READ_KEY) == [["pros", 1]]
    joined = _rows(running, "SELECT count() FROM tag_membership AS m JOIN profiles AS p ON m.profile_id = p.profile_id")
    assert joined == [[3]]
