"""The embedded ClickHouse on an encrypted disk (infra/chdb_storage.py).

chDB opens one directory per process, so each directory of its own is opened by a
child process; the suite's shared directory is checked in this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from infra import chdb_storage
from infra.clickhouse import clickhouse_client
from infra.config import Settings

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MARKERS = ("ann.marker@example.com", "+4915199988877", "Zebulon Quixote")


def _in_child(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh process (its own chDB engine) with `open_engine` and the keys imported."""
    prelude = "from pathlib import Path\nfrom infra.chdb_storage import open_engine\n"
    prelude += f"KEY = {KEY!r}\nOTHER_KEY = {OTHER_KEY!r}\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[2])  # fmt: skip


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {n!r}" for n in needles if n in data]
    return found


def test_every_table_of_a_new_directory_is_encrypted_and_nothing_on_disk_is_plain(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    done = _in_child(f"""
        import os
        c = open_engine(Path({str(path)!r}), True, lambda: KEY)
        assert "CDP_CHDB_DISK_KEY" not in os.environ
        c.command("CREATE DATABASE cdp")
        c.command("CREATE TABLE cdp.events (email String, phone String, name String, v UInt32) "
                  "ENGINE = ReplacingMergeTree(v) ORDER BY email")
        c.command("CREATE DATABASE scratch")  # what rebuild --verify does: a database of its own
        c.command("CREATE TABLE scratch.events AS cdp.events")
        for table in ("cdp.events", "scratch.events"):
            c.insert(table, [[*{MARKERS!r}, 1]], column_names=["email", "phone", "name", "v"])
        c.raw_insert("cdp.events", insert_block=b'{{"email": "raw-{MARKERS[0]}", "v": 2}}', fmt="JSONEachRow")
        # an analyst's literal, a mutation's text, a merge: none may land in plain text
        assert c.query("SELECT name FROM cdp.events FINAL WHERE email = '{MARKERS[0]}'").result_rows
        c.command("ALTER TABLE cdp.events DELETE WHERE phone = '{MARKERS[1]}x' SETTINGS mutations_sync = 1")
        c.command("OPTIMIZE TABLE cdp.events FINAL")
        disks = c.query("SELECT DISTINCT arrayJoin(data_paths) FROM system.tables WHERE database IN "
                        "('cdp', 'scratch')").result_rows
        assert all("/disks/local/encrypted/" in d[0] for d in disks), disks
        print(c.query("SELECT count() FROM cdp.events FINAL").result_rows[0][0])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    config = (path / chdb_storage.CONFIG_NAME).read_text()
    assert KEY.hex() not in config and chdb_storage.KEY_ENV in config
    assert chdb_storage.layout(path) == "encrypted"
    needles = [m.encode() for m in MARKERS] + [KEY.hex().encode(), KEY]
    assert _files_containing(path, needles) == []

    again = _in_child(f"""
        c = open_engine(Path({str(path)!r}), True, lambda: KEY)
        print(c.query("SELECT email FROM cdp.events FINAL ORDER BY email").result_rows)
    """)
    assert again.returncode == 0, again.stderr
    assert MARKERS[0] in again.stdout and f"raw-{MARKERS[0]}" in again.stdout


def test_a_directory_written_before_encryption_is_refused_with_the_fix_and_never_mixed(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    plain = _in_child(f"""
        c = open_engine(Path({str(path)!r}), False, lambda: KEY)  # CDP_ENCRYPTION=off: the layout of before
        c.command("CREATE DATABASE cdp")
        c.command("CREATE TABLE cdp.t (s String) ENGINE = MergeTree ORDER BY s")
        c.insert("cdp.t", [["old"]], column_names=["s"])
    """)
    assert plain.returncode == 0, plain.stderr
    assert chdb_storage.layout(path) == "plain"

    refused = _in_child(f"""
        from infra.chdb_storage import PlainProjections
        try:
            open_engine(Path({str(path)!r}), True, lambda: KEY)
        except PlainProjections as exc:
            print(exc)
    """)
    assert refused.returncode == 0, refused.stderr
    assert f"rm -r {path}" in refused.stdout and "`cdp rebuild`" in refused.stdout
    assert not (path / chdb_storage.CONFIG_NAME).exists()  # nothing of the encrypted layout was started

    kept = _in_child(f"""
        c = open_engine(Path({str(path)!r}), False, lambda: KEY)
        print(c.query("SELECT s FROM cdp.t").result_rows)
    """)
    assert kept.returncode == 0, kept.stderr
    assert "old" in kept.stdout


def test_an_encrypted_directory_stays_encrypted_and_refuses_another_key(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    made = _in_child(f"""
        c = open_engine(Path({str(path)!r}), True, lambda: KEY)
        c.command("CREATE DATABASE cdp")
        c.command("CREATE TABLE cdp.t (s String) ENGINE = MergeTree ORDER BY s")
        c.insert("cdp.t", [["{MARKERS[2]}"]], column_names=["s"])
    """)
    assert made.returncode == 0, made.stderr

    off = _in_child(f"""
        c = open_engine(Path({str(path)!r}), False, lambda: KEY)  # CDP_ENCRYPTION=off keeps what is encrypted
        c.insert("cdp.t", [["later"]], column_names=["s"])
        print(c.query("SELECT count() FROM cdp.t").result_rows[0][0])
    """)
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() == "2"
    assert _files_containing(path, [b"later", MARKERS[2].encode()]) == []

    wrong = _in_child(f"""
        from infra.config import ConfigError
        try:
            open_engine(Path({str(path)!r}), True, lambda: OTHER_KEY)
        except ConfigError as exc:
            print(exc)
    """)
    assert wrong.returncode == 0, wrong.stderr
    assert "does not open with this data dir's disk key" in wrong.stdout and "cdp rebuild" in wrong.stdout


def test_a_directory_open_in_another_process_is_named(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from infra.chdb_storage import open_engine\n"
         f"c = open_engine(Path({str(path)!r}), True, lambda: {KEY!r}); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        second = _in_child(f"""
            from infra.config import ConfigError
            try:
                open_engine(Path({str(path)!r}), True, lambda: KEY)
            except ConfigError as exc:
                print(exc)
        """)
        assert "is open in another process" in second.stdout, second.stderr
    finally:
        holder.communicate("", timeout=60)


def test_the_shared_engine_is_encrypted_spills_nothing_and_inserts_through_memory(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = clickhouse_client(settings)
    path = Path(client.location.removeprefix("chdb:"))
    assert chdb_storage.layout(path) == "encrypted"
    values = dict(client.query("SELECT name, value FROM system.settings WHERE name IN {names:Array(String)}",
                               parameters={"names": list(chdb_storage.NO_SPILL)}).result_rows)  # fmt: skip
    assert values == {name: "0" for name in chdb_storage.NO_SPILL}
    # A temporary file on disk would fail here: the temporary directory does not exist.
    monkeypatch.setattr(tempfile, "tempdir", str(path.parent / "no-such-directory"))
    db = settings.clickhouse_database
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(f"CREATE TABLE {db}.memory_inserts (s String) ENGINE = MergeTree ORDER BY s")
    client.insert(f"{db}.memory_inserts", [["a"], ["b"]], column_names=["s"])
    client.raw_insert(f"{db}.memory_inserts", insert_block=b'{"s": "c"}\n', fmt="JSONEachRow")
    assert client.query(f"SELECT count() FROM {db}.memory_inserts").result_rows == [(3,)]
    open_memory_files = [fd for fd in os.listdir("/proc/self/fd") if "cdp-insert" in os.path.realpath(f"/proc/self/fd/{fd}")]
    assert open_memory_files == []  # each closed once its INSERT ran
    client.command(f"DROP DATABASE {db}")
