"""Keys and what they open (domain/access.py), and the rate of each key (services/rate_limit.py)."""

from __future__ import annotations

import pytest

from domain.access import READ_SCOPES, KeyGrant, KeyTable, checked_scopes, hash_key, needs
from domain.errors import TooMany
from services.rate_limit import RateLimit


def test_each_kind_opens_what_it_says() -> None:
    write, admin = KeyGrant("ws", "write"), KeyGrant("ws", "admin")
    kpis_only = KeyGrant("ws", "read", scopes=frozenset({"kpis"}))
    assert write.allows("write") and not any(write.allows(r) for r in ("read", "read:kpis", "admin"))
    assert admin.allows("admin") and all(admin.allows(f"read:{s}") for s in READ_SCOPES) and not admin.allows("write")
    assert kpis_only.allows("read:kpis") and kpis_only.allows("read") and not kpis_only.allows("read:profiles")
    assert not kpis_only.allows("admin")


def test_requirements_and_scopes_are_checked() -> None:
    assert needs("read:sql") == ("read", "sql") and needs("admin") == ("admin", "")
    for bad in ("owner", "read:everything", "admin:kpis"):
        with pytest.raises(ValueError):
            needs(bad)
    assert checked_scopes("read", None) == frozenset(READ_SCOPES)
    assert checked_scopes("read", ["kpis"]) == {"kpis"}
    with pytest.raises(ValueError, match="unknown scope"):
        checked_scopes("read", ["kpis", "pii"])
    with pytest.raises(ValueError, match="only read keys have scopes"):
        checked_scopes("admin", ["kpis"])


def test_expiry_is_a_moment() -> None:
    grant = KeyGrant("ws", "read", expires_at=100.0)
    assert not grant.expired(99.9) and grant.expired(100.0)
    assert not KeyGrant("ws", "read").expired(1e12)


def test_a_revoked_key_leaves_the_table() -> None:
    table = KeyTable()
    table.add(hash_key("rk_1"), KeyGrant("ws", "read", "key_1"))
    assert table.grant("rk_1") is not None and table.of_workspace("ws")[0].key_id == "key_1"
    table.revoke("key_1")
    assert table.grant("rk_1") is None and table.of_workspace("ws") == []
    table.revoke("key_unknown")  # nothing to do


def test_a_bucket_per_key_refills_with_time() -> None:
    now = [0.0]
    limit = RateLimit(2, burst=2, clock=lambda: now[0])
    limit.take("a")
    limit.take("a")
    with pytest.raises(TooMany) as refused:
        limit.take("a")
    assert refused.value.retry_after == pytest.approx(0.5)
    limit.take("b")  # another key's own bucket
    now[0] = 0.5
    limit.take("a")  # one token back after half a second at 2 a second
    RateLimit(0).take("a")  # 0: no limit
