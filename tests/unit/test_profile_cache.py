"""The profile cache answers what the exact ClickHouse read would: highest position / version wins."""

from projections.profile_cache import ProfileCache


def test_owner_keeps_the_highest_position_whatever_the_order() -> None:
    cache = ProfileCache()
    cache.learn_new = True
    cache.put_owners([("ws", "email:a@x.io", "p2", 50)])
    cache.put_owners([("ws", "email:a@x.io", "p1", 10)])  # a redelivery of an older row
    assert cache.owner("ws", "email:a@x.io") == "p2"
    cache.fill_owner("ws", "email:a@x.io", "p1", 10, cache.owner_writes)
    assert cache.owner("ws", "email:a@x.io") == "p2"


def test_owners_are_learnt_from_writes_only_when_the_log_is_applied_in_order() -> None:
    cache = ProfileCache()
    cache.put_owners([("ws", "user_id:1", "p1", 10)])
    assert cache.owner("ws", "user_id:1") is None  # ClickHouse may hold a higher position from another partition
    cache.fill_owner("ws", "user_id:1", "p2", 60, cache.owner_writes)
    cache.put_owners([("ws", "user_id:1", "p1", 10)])
    assert cache.owner("ws", "user_id:1") == "p2"
    cache.put_owners([("ws", "user_id:1", "p3", 70)])
    assert cache.owner("ws", "user_id:1") == "p3"


def test_a_read_that_raced_a_write_does_not_fill() -> None:
    cache = ProfileCache()
    before = cache.owner_writes
    cache.put_owners([("ws", "user_id:1", "p2", 60)])  # skipped: not known yet
    cache.fill_owner("ws", "user_id:1", "p1", 10, before)  # read before that write
    assert cache.owner("ws", "user_id:1") is None


def test_profiles_keep_the_highest_version_and_tombstones() -> None:
    cache = ProfileCache()
    cache.put_profiles([("ws", "p1", 2, b"new")])
    cache.put_profiles([("ws", "p1", 1, b"old")])
    assert cache.profile("ws", "p1") == (2, b"new")
    cache.put_profiles([("ws", "p1", 3, None)])
    assert cache.profile("ws", "p1") == (3, None)


def test_bounded() -> None:
    cache = ProfileCache(max_profiles=100, max_owners=100)
    cache.learn_new = True
    cache.put_profiles([("ws", f"p{i}", 1, b"{}") for i in range(250)])
    cache.put_owners([("ws", f"user_id:{i}", "p", i) for i in range(250)])
    assert cache.profile("ws", "p249") is not None and cache.profile("ws", "p0") is None
    assert cache.owner("ws", "user_id:249") == "p" and cache.owner("ws", "user_id:0") is None
