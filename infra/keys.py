"""The default workspace's keys: from the environment, else generated once and kept in the data dir."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field

from infra.config import Settings


@dataclass(frozen=True)
class Keys:
    write_key: str
    read_key: str
    generated: frozenset[str] = field(default=frozenset(), compare=False)  # "write", "read": made by this call


def load_or_create_keys(settings: Settings) -> Keys:
    stored: dict[str, str] = {}
    if settings.keys_path.exists():
        stored = json.loads(settings.keys_path.read_text())
    generated = frozenset(kind for kind in ("write", "read")
                          if not getattr(settings, f"{kind}_key") and not stored.get(f"{kind}_key"))  # fmt: skip
    keys = Keys(
        write_key=settings.write_key or stored.get("write_key") or "wk_" + secrets.token_urlsafe(24),
        read_key=settings.read_key or stored.get("read_key") or "rk_" + secrets.token_urlsafe(24),
        generated=generated,
    )
    if stored != {"write_key": keys.write_key, "read_key": keys.read_key}:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = settings.keys_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"write_key": keys.write_key, "read_key": keys.read_key}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(settings.keys_path)
    return keys
