"""Profiles and identifier owners as this process last wrote or read them: lookups without a query.

The profile API's hot path is "which profile owns this identifier, and what is its
document". Both answers live in ClickHouse (`identity_history`, `profiles`), where
each costs a query of several milliseconds. The processor writes every row of
those tables through `ProjectionStore`, so the store keeps the latest of them in
memory as it writes, and answers lookups from there.

The cache is exact. Each entry keeps the column ClickHouse decides by: the
`position` for an owner (`argMax(profile_id, position)`), the `version` for a
profile (`ReplacingMergeTree(version, is_deleted)`, read with `FINAL`). An entry
is only ever replaced by one with a higher position or version, so whatever order
writes and reads fill it in, it holds what the exact read in ClickHouse would
return. A deleted profile is kept as a tombstone (`doc` None), as `FINAL` drops it.

An owner the cache has never seen is learnt from a write only when the processor
applies the log in order (`learn_new`, the log driver): then no row written
earlier can hold a higher position. Otherwise (the Kafka driver applies each
partition on its own) owners are learnt from ClickHouse on a miss and then kept
current by the writes.

It is bounded: past the limits the oldest entries are dropped, and a lookup that
misses reads ClickHouse. One cache serves every `ProjectionStore` of the process
on the same ClickHouse and database, so writes through any of them are seen; a
database dropped through the store (`ProjectionStore.drop`) forgets its cache.
"""

from __future__ import annotations

import threading
from itertools import islice
from typing import Any

MAX_PROFILES = 250_000
MAX_OWNERS = 1_000_000


class ProfileCache:
    def __init__(self, max_profiles: int = MAX_PROFILES, max_owners: int = MAX_OWNERS) -> None:
        self.max_profiles = max_profiles
        self.max_owners = max_owners
        self._owners: dict[tuple[str, str], tuple[int, str]] = {}  # (workspace, identifier) → (position, profile)
        self._profiles: dict[tuple[str, str], tuple[int, Any]] = {}  # (workspace, profile) → (version, doc | None)
        self._lock = threading.Lock()
        self.learn_new = False  # learn owners from writes (only when the log is applied in order)
        self.owner_writes = 0  # counts owner writes, so a read that raced one does not fill the cache

    def owner(self, workspace_id: str, ident: str) -> str | None:
        found = self._owners.get((workspace_id, ident))
        return found[1] if found is not None else None

    def profile(self, workspace_id: str, profile_id: str) -> tuple[int, Any] | None:
        """(version, doc) of the profile, doc None if it is deleted; None if not cached."""
        return self._profiles.get((workspace_id, profile_id))

    def put_owners(self, rows: list[tuple[str, str, str, int]]) -> None:
        """Rows of (workspace, identifier, profile, position) as written to `identity_history`."""
        with self._lock:
            self.owner_writes += 1
            owners = self._owners
            for workspace_id, ident, profile_id, position in rows:
                key = (workspace_id, ident)
                current = owners.get(key)
                if current is None:
                    if self.learn_new:
                        owners[key] = (position, profile_id)
                elif position >= current[0]:
                    owners[key] = (position, profile_id)
            _trim(owners, self.max_owners)

    def fill_owner(self, workspace_id: str, ident: str, profile_id: str, position: int, writes_before: int) -> None:
        """An owner read from ClickHouse; `writes_before` is `owner_writes` as it was before the read."""
        with self._lock:
            if self.owner_writes != writes_before and not self.learn_new:
                return  # a write may have moved it after the read and been skipped as unknown
            key = (workspace_id, ident)
            current = self._owners.get(key)
            if current is None or position >= current[0]:
                self._owners[key] = (position, profile_id)
            _trim(self._owners, self.max_owners)

    def put_profiles(self, rows: list[tuple[str, str, int, Any]]) -> None:
        """Rows of (workspace, profile, version, doc or None for a deleted profile)."""
        with self._lock:
            profiles = self._profiles
            for workspace_id, profile_id, version, doc in rows:
                key = (workspace_id, profile_id)
                current = profiles.get(key)
                if current is None or version >= current[0]:
                    profiles[key] = (version, doc)
            _trim(profiles, self.max_profiles)

    def clear(self) -> None:
        with self._lock:
            self._owners.clear()
            self._profiles.clear()


def _trim(entries: dict[Any, Any], limit: int) -> None:
    """Drop the oldest entries past `limit` (and a hundredth more, so trimming is rare)."""
    if len(entries) > limit:
        for key in list(islice(entries, len(entries) - limit + limit // 100)):
            del entries[key]


_caches: dict[tuple[str, str], ProfileCache] = {}
_caches_lock = threading.Lock()


def cache_for(client: Any, database: str) -> ProfileCache:
    """The process's cache for one database of one ClickHouse (the client names where it points)."""
    key = (str(getattr(client, "location", id(client))), database)
    with _caches_lock:
        if key not in _caches:
            _caches[key] = ProfileCache()
        return _caches[key]
