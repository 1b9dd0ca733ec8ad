"""The keys set at start: the default workspace's write, read and admin keys, and the platform key.

Each comes from its `CDP_*` variable, else from `keys.json` in the data dir, else is
generated once and kept there (owner-only). They are only the first keys: more are made
through the API or `cdp keys create` (docs/access.md). A start key that is no longer
configured (the variable changed, keys.json edited) is revoked at the next start.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field

from domain.access import PREFIXES as WORKSPACE_PREFIXES
from infra.config import Settings

KINDS = ("write", "read", "admin", "platform")
PREFIXES = {**WORKSPACE_PREFIXES, "platform": "pk_"}  # the platform key belongs to no workspace


@dataclass(frozen=True)
class Keys:
    write_key: str
    read_key: str
    admin_key: str = ""
    platform_key: str = ""
    generated: frozenset[str] = field(default=frozenset(), compare=False)  # kinds made by this call

    def as_json(self) -> dict[str, str]:
        return {f"{kind}_key": getattr(self, f"{kind}_key") for kind in KINDS}


def load_or_create_keys(settings: Settings) -> Keys:
    stored: dict[str, str] = {}
    if settings.keys_path.exists():
        stored = json.loads(settings.keys_path.read_text())
    chosen: dict[str, str] = {}
    generated = set()
    for kind in KINDS:
        value = getattr(settings, f"{kind}_key") or stored.get(f"{kind}_key")
        if not value:
            value = PREFIXES[kind] + secrets.token_urlsafe(24)
            generated.add(kind)
        chosen[f"{kind}_key"] = value
    keys = Keys(**chosen, generated=frozenset(generated))
    if len(set(chosen.values())) < len(chosen):
        return keys  # the caller refuses keys that repeat, naming the variables
    if stored != keys.as_json():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = settings.keys_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(keys.as_json(), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(settings.keys_path)
    return keys


def configured_platform_key(settings: Settings) -> str | None:
    """The platform key where a process that makes no keys finds it (an ingest worker): CDP_PLATFORM_KEY, else
    the data dir's keys.json when it shares the core's data dir; None elsewhere."""
    if settings.platform_key:
        return settings.platform_key
    if settings.keys_path.exists():
        return json.loads(settings.keys_path.read_text()).get("platform_key") or None
    return None


def renew_key(settings: Settings, kind: str) -> Keys:
    """The keys with a fresh generated key of `kind` in keys.json (the one there was revoked)."""
    stored = json.loads(settings.keys_path.read_text())
    stored[f"{kind}_key"] = PREFIXES[kind] + secrets.token_urlsafe(24)
    tmp = settings.keys_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(settings.keys_path)
    keys = load_or_create_keys(settings)
    return Keys(**keys.as_json(), generated=keys.generated | {kind})
