"""The master key and the keyring: per-subject AES-256-GCM keys, wrapped by the master key.

The master key comes from `CDP_MASTER_KEY` (base64 of 32 bytes), or is generated
once into `master.key` in the data dir (owner-only), and is never stored
anywhere else. It wraps every key of the key store (infra/key_store.py): a key
per subject, and named data keys (the subject index's HMAC key, the ClickHouse
disk key). Rotating it re-wraps those keys and rewrites nothing else.

Sealed bytes: `MAGIC | key id (16) | nonce (12) | AES-GCM ciphertext and tag`,
the key id as associated data. Keys are cached unwrapped in memory, per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Iterable

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import Counter

from domain.privacy import MAGIC, KeyMissing, Shredded, is_sealed
from infra.config import ConfigError, Settings
from infra.key_store import KeyStore, PostgresKeyStore, SqliteKeyStore

KEY_BYTES = 32
NONCE_BYTES = 12
ID_BYTES = 16
INDEX_KEY = "subject-index"  # the HMAC key that turns a subject into the key store's lookup hash
SHREDDED_READS = Counter("cdp_shredded_reads", "Sealed entries skipped because their subject was erased")
CACHE_LIMIT = 1_000_000  # unwrapped keys kept per process before the cache starts over


class MasterKeyMismatch(ConfigError):
    """The master key does not open this key store."""


def new_master_key() -> str:
    """A fresh master key, as CDP_MASTER_KEY takes it."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode_master(raw: str, where: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), altchars=b"-_" if ("-" in raw or "_" in raw) else None, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{where} is not a master key (base64 of {KEY_BYTES} bytes); make one with `python -c \"import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())\"`"
        )
    return key


def load_master_key(settings: Settings) -> tuple[bytes, bool]:
    """The master key, and whether it was generated just now (tell the user to back it up)."""
    if settings.master_key:
        return _decode_master(settings.master_key, "CDP_MASTER_KEY"), False
    path = settings.master_key_path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return _decode_master(path.read_text(), str(path)), False
    # Written whole to a file of its own, then linked into place: a process starting beside this
    # one (cdp up starts several) sees either no master.key or the complete one, never a part.
    fd, tmp = tempfile.mkstemp(prefix=".master.key.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new_master_key() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
            generated = True
        except FileExistsError:
            generated = False  # another process linked its key first: use that one
    finally:
        os.unlink(tmp)
    return _decode_master(path.read_text(), str(path)), generated


def _wrap(master: bytes, key: bytes, label: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, key, label)


def _unwrap(master: bytes, wrapped: bytes, label: bytes) -> bytes:
    return AESGCM(master).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], label)


class Keyring:
    """Seals and opens personal data with per-subject keys (domain/privacy.Sealer)."""

    def __init__(self, store: KeyStore, master: bytes, sealing: bool = True) -> None:
        self.store = store
        self.sealing = sealing
        self._master = master
        self._lock = threading.Lock()
        self._by_subject: dict[tuple[str, str], bytes] = {}  # (workspace, subject hash) → key id
        self._by_id: dict[bytes, AESGCM] = {}
        self._index = self.data_key(INDEX_KEY)

    # Data keys ---------------------------------------------------------------------------------

    def data_key(self, name: str) -> bytes:
        """A named 32-byte key, created on first use, wrapped in the key store."""
        wrapped = self.store.data_key(name)
        if wrapped is None:
            self.store.add_data_key(name, _wrap(self._master, secrets.token_bytes(KEY_BYTES), b"data:" + name.encode()))
            wrapped = self.store.data_key(name)
            assert wrapped is not None
        try:
            return _unwrap(self._master, wrapped, b"data:" + name.encode())
        except InvalidTag:
            raise MasterKeyMismatch(
                "the master key does not open this data dir's key store: set CDP_MASTER_KEY (or master.key) "
                "to the key it was created with; after a rotation, the new one"
            ) from None

    # Subjects ----------------------------------------------------------------------------------

    def subject_hash(self, workspace_id: str, subject: str) -> str:
        """What the key store knows of a subject: a keyed hash, never the identifier."""
        msg = workspace_id.encode() + b"\x00" + subject.encode()
        return hmac.new(self._index, msg, hashlib.sha256).hexdigest()[:40]

    def ensure(self, subjects: Iterable[tuple[str, str]]) -> None:
        wanted = {(ws, self.subject_hash(ws, s)) for ws, s in subjects}
        missing = [pair for pair in wanted if pair not in self._by_subject]
        if not missing:
            return
        self._learn(self.store.by_subject(missing))
        missing = [pair for pair in missing if pair not in self._by_subject]
        if not missing:
            return
        fresh = []
        for ws, hashed in missing:
            key_id = secrets.token_bytes(ID_BYTES)
            key = secrets.token_bytes(KEY_BYTES)
            fresh.append((key_id.hex(), ws, hashed, _wrap(self._master, key, b"subject:" + key_id)))
        self.store.add(fresh)
        self._learn(self.store.by_subject(missing))  # another process may have won a subject: its key counts

    def _learn(self, rows: Iterable[tuple[str, str, str, bytes]]) -> None:
        with self._lock:
            if len(self._by_id) > CACHE_LIMIT:
                self._by_id.clear()
                self._by_subject.clear()
            for key_hex, ws, hashed, wrapped in rows:
                key_id = bytes.fromhex(key_hex)
                try:
                    key = _unwrap(self._master, wrapped, b"subject:" + key_id)
                except InvalidTag:
                    raise MasterKeyMismatch(
                        "a subject key does not open with this master key: was the key store re-wrapped by a "
                        "rotation this process did not see? Restart with the current CDP_MASTER_KEY"
                    ) from None
                self._by_subject[(ws, hashed)] = key_id
                self._by_id[key_id] = AESGCM(key)

    def seal(self, workspace_id: str, subject: str, plain: bytes) -> bytes:
        pair = (workspace_id, self.subject_hash(workspace_id, subject))
        key_id = self._by_subject.get(pair)
        if key_id is None:
            self.ensure([(workspace_id, subject)])
            key_id = self._by_subject[pair]
        nonce = secrets.token_bytes(NONCE_BYTES)
        return MAGIC + key_id + nonce + self._by_id[key_id].encrypt(nonce, plain, key_id)

    def open(self, sealed: bytes) -> bytes:
        if not is_sealed(sealed):
            return sealed
        key_id = bytes(sealed[3 : 3 + ID_BYTES])
        aead = self._by_id.get(key_id)
        if aead is None:
            self.prefetch([sealed])
            aead = self._by_id.get(key_id)
            if aead is None:
                SHREDDED_READS.inc()
                raise Shredded(key_id.hex())
        start = 3 + ID_BYTES
        return aead.decrypt(bytes(sealed[start : start + NONCE_BYTES]), bytes(sealed[start + NONCE_BYTES :]), key_id)

    def prefetch(self, blobs: Iterable[bytes]) -> None:
        unknown = {bytes(b[3 : 3 + ID_BYTES]) for b in blobs if is_sealed(b)} - self._by_id.keys()
        if not unknown:
            return
        ids = [k.hex() for k in unknown]
        rows = self.store.by_id(ids)
        self._learn(rows)
        absent = set(ids) - {r[0] for r in rows}
        if absent:
            lost = absent - self.store.shredded(sorted(absent))
            if lost:
                raise KeyMissing(
                    f"{len(lost)} key(s) of sealed data are not in the key store and were never destroyed "
                    f"(first {sorted(lost)[0]}): restore the key store from the same backup as the logs"
                )

    # Erasure and rotation ----------------------------------------------------------------------

    def destroy(self, workspace_id: str, subjects: Iterable[str], regulation_id: str) -> int:
        """Destroy the keys of a person's subjects: what they sealed is unreadable from now on."""
        hashes = sorted({self.subject_hash(workspace_id, s) for s in subjects})
        destroyed = self.store.destroy(workspace_id, hashes, regulation_id)
        self.forget(workspace_id, hashes)
        return len(destroyed)

    def forget(self, workspace_id: str, hashes: Iterable[str]) -> None:
        """Drop cached keys of subjects erased (here or by another process)."""
        with self._lock:
            for hashed in hashes:
                key_id = self._by_subject.pop((workspace_id, hashed), None)
                if key_id is not None:
                    self._by_id.pop(key_id, None)

    def rotate(self, new_master: bytes) -> int:
        """Re-wrap every key with `new_master` in one transaction; returns how many were re-wrapped."""
        subjects, data = self.store.all_wrapped()
        rewrapped_subjects = []
        for key_hex, wrapped in subjects:
            label = b"subject:" + bytes.fromhex(key_hex)
            rewrapped_subjects.append((key_hex, _wrap(new_master, _unwrap(self._master, wrapped, label), label)))
        rewrapped_data = []
        for name, wrapped in data:
            label = b"data:" + name.encode()
            rewrapped_data.append((name, _wrap(new_master, _unwrap(self._master, wrapped, label), label)))
        self.store.rewrap(rewrapped_subjects, rewrapped_data)
        self._master = new_master
        return len(rewrapped_subjects) + len(rewrapped_data)


def open_key_store(settings: Settings) -> KeyStore:
    if settings.uses_postgres:
        from infra.eventstore import eventsourcing_env, postgres_conninfo

        env = eventsourcing_env(settings)
        return PostgresKeyStore(postgres_conninfo(env), env.get("POSTGRES_SCHEMA"))
    return SqliteKeyStore(_key_store_path(settings))


def _key_store_path(settings: Settings) -> Path:
    if settings.event_store.startswith("sqlite://"):
        from urllib.parse import urlparse

        return Path(f"{urlparse(settings.event_store).path}.keys")
    return settings.key_store_path


_keyrings: dict[str, Keyring] = {}
_keyrings_lock = threading.Lock()
_generated_masters: set[str] = set()  # master.key files this process generated


def master_key_generated(settings: Settings) -> bool:
    """Whether this process generated the data dir's master.key (the start that should say: back it up)."""
    return str(settings.master_key_path) in _generated_masters


def open_keyring(settings: Settings) -> Keyring:
    """The process's keyring for the configured store (one per store: its caches are shared)."""
    where = settings.event_store if settings.uses_postgres else str(_key_store_path(settings))
    with _keyrings_lock:
        keyring = _keyrings.get(where)
        if keyring is None:
            master, generated = load_master_key(settings)
            if generated:
                _generated_masters.add(str(settings.master_key_path))
            try:
                keyring = Keyring(open_key_store(settings), master, sealing=settings.encryption)
            except psycopg.Error as exc:
                raise ConfigError(f"the key store in CDP_EVENT_STORE could not be opened: {exc}") from exc
            _keyrings[where] = keyring
        return keyring


def data_key(settings: Settings, name: str) -> bytes:
    """A named 32-byte data key of this data dir (e.g. "clickhouse", the encrypted disk's)."""
    return open_keyring(settings).data_key(name)


def rotate_master_key(settings: Settings, new_key: str | None) -> tuple[int, str]:
    """Re-wrap every key of the key store with a new master key; returns (keys re-wrapped, where the key is now).

    Nothing else is rewritten: the log, the intake and the dead letters stay sealed with the same subject keys.
    With `master.key` (no CDP_MASTER_KEY), the new key is written beside it first (`master.key.new`, so that a
    failure between the two steps leaves it on disk), the key store re-wrapped in one transaction, then the
    file replaced. With CDP_MASTER_KEY, the new one must be given (CDP_NEW_MASTER_KEY): the environment is the
    operator's to change, and a key printed only once could be lost.
    """
    keyring = open_keyring(settings)
    if settings.master_key:
        if not new_key:
            raise ConfigError(
                "CDP_MASTER_KEY is set: make the new key first and give it as CDP_NEW_MASTER_KEY, e.g. "
                "`export CDP_NEW_MASTER_KEY=$(python -c \"import base64, secrets; "
                "print(base64.b64encode(secrets.token_bytes(32)).decode())\")`; afterwards set CDP_MASTER_KEY to it"
            )
        count = keyring.rotate(_decode_master(new_key, "CDP_NEW_MASTER_KEY"))
        return count, "CDP_MASTER_KEY: set it to the value of CDP_NEW_MASTER_KEY now, in every process's environment"
    path = settings.master_key_path
    fresh = new_key or new_master_key()
    master = _decode_master(fresh, "CDP_NEW_MASTER_KEY" if new_key else "the new master key")
    pending = path.with_name(path.name + ".new")
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(fresh.strip() + "\n")
        out.flush()
        os.fsync(out.fileno())
    count = keyring.rotate(master)
    pending.replace(path)
    return count, f"{path} (replaced; back the new one up, apart from the data, and destroy copies of the old)"
