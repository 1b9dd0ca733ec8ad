"""Every example in README.md and docs/*.md runs against a running platform, so an example that fails cannot land.

What is run, from the fenced code blocks of README.md and then of docs/*.md (in name order), in document order:

- ```sh / ```bash / ```console blocks, command by command: `curl`, `cdp ...` (also `.venv/bin/cdp`), `make status`,
  and the shell lines around them (variable assignments). The commands of all files share one shell state, as a
  reader's terminal does: a variable set by one example (`WRITE_KEY=$(...)`) is set for the next ones.
- ```python blocks that use the Segment SDK, kafka-python or httpx, as scripts. A block that consumes a topic
  (`KafkaConsumer`) is left running until it has printed what the topic holds, then stopped with SIGTERM.
- ```sql blocks of single `SELECT` statements, through `POST /v1/sql`.

They run against one `cdp up` (embedded defaults, its own data dir and ports) for all files, because the docs are a
walk-through: the README creates user 42 and docs/identity.md, docs/tags.md and others read it back. The test's
working directory has `.cdp` (the data dir, with `keys.json`), and `.venv`, `infra`, `tests`, `Makefile` linked from
the repository, so examples written for the repository root work unchanged.

Substitutions: `127.0.0.1:8000` / `localhost:8000`, the same with `:8001` (the ingest workers) and `127.0.0.1:9092` /
`localhost:9092` become the platform's HTTP, ingest and Kafka addresses, `wk_...` / `rk_...` its write and read key; `$WRITE_KEY`, `$READ_KEY`, `$ADMIN_KEY` and `$PLATFORM_KEY` are set in the shell
(and set again by the README's own example). `curl` gets `-sS` and its HTTP status is checked; in a pipeline or with
a redirection it gets `--fail-with-body` and the pipeline must succeed. `cdp` commands: bash expands their words, then
the Typer app the `cdp` script calls (`infra.cli:app`) runs them in this process, as a new Python process per command
costs about 10 s of imports on a loaded 2-core machine; `make status` runs the script itself. `make` gets
`-o .venv/.installed`, so it never reinstalls the shared virtual environment. Files a reader is assumed to have (the
import examples' archives) are created by the test (IMPORT_FILES); a ```yaml or ```json block introduced by "save this
as `NAME`" is saved as NAME.

Conventions in the docs:

- `<!-- expect: 400 -->` on the line before a block: its `curl` commands must answer 400 (an example that shows an
  error on purpose). Several statuses (`<!-- expect: 201, 409 -->`) are matched in order with the block's `curl`
  commands; `exit N` (`<!-- expect: exit 1 -->`) is the exit status of its `cdp` commands. Without a marker a `curl`
  must answer below 400 and a command must exit 0.
- A ```json block right after a command block (nothing but blank lines between) is the answer of its last `curl`:
  the answer must have the block's top-level keys (values differ from run to run and are not compared).

Commands that must not run against a running platform, or cannot run here, are in SKIP with the reason; `cdp rebuild
--verify` runs once the walk-through is done, against the stopped platform (test_rebuild_verify_after_the_walk_through).
An output whose keys the answer lacks because of a bug in the platform is in KNOWN_BUGS: it is an expected failure,
naming the bug, until the bug is fixed.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from infra.broker import free_port
from tests.e2e.test_restart import CdpProcess

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
LINKED = (".venv", "infra", "tests", "Makefile", "pyproject.toml")
REBUILD_DOC = "docs/operations.md"  # where the walk-through's `cdp rebuild --verify` is documented

# (pattern on the command, with `.venv/bin/` left out; reason it is not run)
SKIP: list[tuple[str, str]] = [
    (r"^make up\b|^cdp up\b", "starts the platform in the foreground: the test runs its own `cdp up`"),
    (r"^(\S+=\S+ )*make test\b|^pytest\b", "runs the whole test suite, this test included (minutes, and recursive)"),
    (r"^make (bench|bench-quick)\b|^python -m bench\.", "a benchmark: minutes of load, not an example of use"),
    (r"^make clean\b", "deletes .venv and .cdp, that is, all recorded data"),
    (r"^cdp rebuild\b", "needs the platform stopped (embedded ClickHouse allows one process per data directory); "
                        "`cdp rebuild --verify` runs in test_rebuild_verify_after_the_walk_through"),
    (r"^(\S+=\S+ )*cdp (backup|restore)\b.*--pg-(dump|restore)\b", "needs the PostgreSQL server of its URL; "
     "tests/e2e/test_backup.py::test_postgresql_backups_go_through_pg_dump_and_pg_restore runs both on a real one"),
    (r"^CDP_DATA_DIR=\S+ cdp (restore|up)\b", "restores into, and starts on, a new data dir (its own embedded "
     "ClickHouse and ports); tests/e2e/test_backup.py::test_a_backup_taken_during_ingest_restores_the_same_answers "
     "restores a backup taken during ingest, starts `cdp up` on it and compares its answers with the original's"),
    (r"^kcat\b", "kcat -C follows the topic until stopped and needs a build on a recent librdkafka "
                 "(see docs/operations.md); the kafka-python examples read the same topics"),
    (r"^cdp keys rotate-master\b", "needs the platform stopped; tests/e2e/test_privacy.py runs it after `cdp up` "
                                    "stopped, and checks it is refused while it runs"),
    (r"^export CDP_TLS_", "configures HTTPS with certificate files of the reader's own for `cdp up`; HTTPS is tested "
                          "with a generated certificate in tests/integration/test_transport_security.py"),
    (r"^export CDP_", "configures external PostgreSQL, ClickHouse and Kafka servers (example.internal) for `cdp up`"),
]  # fmt: skip
SQL_SKIP: list[tuple[str, str]] = [
    (r"\A\s*--", "commented out: shows how a query is rewritten"),
    (r"^\s*CREATE USER", "ClickHouse server administration (users, grants, row policies), not analyst SQL"),
    (r"\{\w+:\w+\}", "the platform's own query with server-side parameters, shown to explain the read path"),
]
SHELL_LANGS = {"sh", "bash", "console", "shell"}
PYTHON_USES = re.compile(r"^\s*(import|from)\s+(segment|kafka|httpx)\b", re.M)

# Files the import examples assume the reader has (a Segment archive, a batch export, a CSV of orders).
IMPORT_FILES: dict[str, bytes] = {
    "segment-archive/2023-01.jsonl.gz": gzip.compress(
        b'{"type": "identify", "userId": "dana", "traits": {"email": "dana@example.com"}, '
        b'"timestamp": "2023-01-05T10:00:00Z", "messageId": "arch-1"}\n'
        b'{"type": "track", "userId": "dana", "event": "Product Viewed", "properties": {"sku": "S-1"}, '
        b'"timestamp": "2023-01-05T10:01:00Z", "messageId": "arch-2"}\n'
    ),
    "export.json": json.dumps({"batch": [
        {"type": "page", "anonymousId": "exp-1", "name": "Home", "timestamp": "2023-02-01T09:00:00Z"},
        {"type": "identify", "anonymousId": "exp-1", "userId": "erik", "timestamp": "2023-02-01T09:05:00Z"},
    ]}).encode(),  # fmt: skip
    "orders.csv": b"userId,timestamp,Email,Total,properties.currency,Notes\n"
    b"dana,2023-01-06T12:00:00Z,dana@example.com,49.90,EUR,gift wrap\n"
    b"erik,2023-02-02T08:30:00Z,erik@example.com,15,EUR,\n",
}


@dataclass
class Block:
    file: str
    line: int  # of the opening fence
    lang: str
    text: str
    expect: list[str] = field(default_factory=list)
    output: str | None = None  # the ```json block right after it
    save_as: str | None = None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def parse_blocks(file: str) -> list[Block]:
    lines = (ROOT / file).read_text().split("\n")
    blocks: list[Block] = []
    i, previous_end = 0, -1
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent, lang = fence.group(1), fence.group(2)
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1 : end])
        before = lines[max(0, i - 12) : i]
        while before and not before[-1].strip():
            before.pop()
        marker = re.match(r"^\s*<!--\s*expect:\s*(.*?)\s*-->\s*$", before[-1]) if before else None
        paragraph = " ".join(before[-4:])
        save = re.search(r"save (?:this|it) as `([^`]+)`", paragraph)
        block = Block(file, i + 1, lang, body, [t.strip() for t in marker.group(1).split(",")] if marker else [],
                      save_as=save.group(1) if save and lang in ("yaml", "json") else None)  # fmt: skip
        previous = blocks[-1] if blocks else None
        if (lang == "json" and previous is not None and previous.output is None
                and previous.lang in SHELL_LANGS and not "".join(lines[previous_end + 1 : i]).strip()):  # fmt: skip
            previous.output = body
        blocks.append(block)
        previous_end = end
        i = end + 1
    return blocks


@dataclass
class Command:
    line: int  # in the file
    text: str
    piped: bool  # an unquoted |, > or < : its output is not the answer

    @property
    def words(self) -> list[str]:
        try:
            words = shlex.split(self.text.replace("\\\n", " "))
        except ValueError:
            words = self.text.split()
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            depth = words[0].count("$(") - words[0].count(")")
            words.pop(0)
            while depth > 0 and words:  # VAR=$(a command): its words are not the command's
                depth += words[0].count("(") - words[0].count(")")
                words.pop(0)
        return words

    @property
    def program(self) -> str:
        words = self.words
        return words[0].removeprefix(".venv/bin/") if words else ""

    @property
    def normalized(self) -> str:
        return re.sub(r"(^|\s)\.venv/bin/", r"\1", " ".join(self.text.replace("\\\n", " ").split()))


def split_commands(block: Block) -> list[Command]:
    """The block's commands: lines joined at backslash-newlines and inside quotes, comments and blank lines left out."""
    commands: list[Command] = []
    text, buf, quote, piped, line, start = block.text, "", "", False, 0, 0
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            buf += c
            if c == "\\" and quote == '"' and i + 1 < len(text):
                buf += text[i + 1]
                i += 1
            elif c == quote:
                quote = ""
        elif c == "\\" and text[i + 1 : i + 2] == "\n":
            buf += "\\\n"
            line += 1
            i += 2
            continue
        elif c == "#" and (not buf or buf[-1] in " \t\n"):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif c == "\n":
            if buf.strip():
                commands.append(Command(block.line + 1 + start, buf.strip(), piped))
            buf, piped = "", False
        else:
            if not buf.strip() and not c.isspace():
                start = line
            if c in "'\"":
                quote = c
            elif c in "|<>":
                piped = True
            buf += c
        if c == "\n":
            line += 1
        i += 1
    if buf.strip():
        commands.append(Command(block.line + 1 + start, buf.strip(), piped))
    return commands


def skip_reason(command: Command) -> str | None:
    if command.program in ("", "export") and not command.normalized.startswith("export CDP_"):
        return None  # variable assignments
    for pattern, reason in SKIP:
        if re.search(pattern, command.normalized):
            return reason
    return None


def check_known(command: Command, where: str) -> None:
    if command.program not in ("", "curl", "cdp", "export", "sleep") and command.normalized != "make status":
        pytest.fail(f"{where}\na command this test does not know: teach it to run it, or add it to SKIP with a reason")


def runnable(block: Block) -> bool:
    if block.lang in SHELL_LANGS:
        return True
    if block.lang == "python":
        return bool(PYTHON_USES.search(block.text))
    if block.lang == "sql":
        return True
    return False


def collect() -> list[Block]:
    return [b for file in DOC_FILES for b in parse_blocks(file) if runnable(b) or b.save_as]


BLOCKS = collect()


class Walkthrough:
    """One `cdp up` for every example, a working directory like the repository root and the shell's state."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cdp = CdpProcess(workdir / ".cdp", free_port(), free_port())
        self.http_port = self.cdp.env["CDP_HTTP_PORT"]
        self.kafka_port = self.cdp.env["CDP_KAFKA_PORT"]
        self.state = workdir / ".shell-state"
        self.body = workdir / ".curl-body"
        for name in LINKED:
            (workdir / name).symlink_to(ROOT / name)
        for name, content in IMPORT_FILES.items():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).write_bytes(content)
        self.env = {**self.cdp.env, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.env.pop("PYTHONPATH", None)

    def start(self) -> None:
        self.cdp.start()
        keys = self.cdp.keys
        self.write_key, self.read_key = keys["write_key"], keys["read_key"]
        self.admin_key, self.platform_key = keys["admin_key"], keys["platform_key"]
        self.state.write_text(f"export WRITE_KEY={self.write_key} READ_KEY={self.read_key} "
                              f"ADMIN_KEY={self.admin_key} PLATFORM_KEY={self.platform_key}\n")  # fmt: skip

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_key}"}

    def substitute(self, text: str) -> str:
        text = re.sub(r"\b(127\.0\.0\.1|localhost):8000\b", f"127.0.0.1:{self.http_port}", text)
        text = re.sub(r"\b(127\.0\.0\.1|localhost):8001\b", f"127.0.0.1:{self.cdp.env['CDP_INGEST_PORT']}", text)
        text = re.sub(r"\b(127\.0\.0\.1|localhost):9092\b", f"127.0.0.1:{self.kafka_port}", text)
        return (text.replace("wk_...", self.write_key).replace("rk_...", self.read_key)
                .replace("ak_...", self.admin_key).replace("pk_...", self.platform_key))  # fmt: skip

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.cdp.url}/v1/status", headers=self.read_headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def wait_caught_up(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status["caught_up"] and status["relay"]["lag"] == 0:
                return status
            assert time.monotonic() < deadline, f"the platform did not catch up within {timeout}s: {status}"
            time.sleep(0.05)

    def cli(self, text: str) -> tuple[int, str]:
        """A `cdp` command: bash expands its words (variables, globs), the `cdp` script's Typer app runs them here.

        The `cdp` script is `infra.cli:app`; a new Python process per command would cost about 10 s of imports on
        a loaded 2-core machine (`make status` still runs the script itself).
        """
        from typer.testing import CliRunner

        from infra.cli import app

        expanded = self.shell(re.sub(r"^(\.venv/bin/)?cdp\b", lambda _: "printf '%s\\0'", text))
        assert expanded.returncode == 0, expanded.stderr
        args = expanded.stdout.split("\0")[:-1]
        env = {name: value for name, value in self.cdp.env.items() if name.startswith("CDP_")}
        env |= {name: None for name in os.environ if name.startswith("CDP_") and name not in env}
        with contextlib.chdir(self.workdir):
            result = CliRunner().invoke(app, args, env=env)
        output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            output += "".join(traceback.format_exception(result.exception))
        return result.exit_code, output

    def shell(self, script: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        state = f'"{self.state}"'
        wrapped = f"set -a\n. {state}\nset -o pipefail\n{script}\n__rc=$?\nexport -p > {state}\nexit $__rc\n"
        return subprocess.run(["bash", "-c", wrapped], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    walkthrough = Walkthrough(tmp_path_factory.mktemp("docs"))
    walkthrough.start()
    try:
        yield walkthrough
    finally:
        if walkthrough.cdp.process is not None and walkthrough.cdp.process.poll() is None:
            walkthrough.cdp.stop()


def expectations(block: Block, kind: str) -> Iterator[str | None]:
    wanted = [e for e in block.expect if (e.startswith("exit") if kind == "exit" else not e.startswith("exit"))]
    if len(wanted) == 1:
        while True:
            yield wanted[0].removeprefix("exit").strip()
    yield from (w.removeprefix("exit").strip() for w in wanted)
    while True:
        yield None


def run_shell_block(walk: Walkthrough, block: Block) -> None:
    statuses, exits = expectations(block, "status"), expectations(block, "exit")
    skipped: list[str] = []
    answer: str | None = None
    ran = 0
    for command in split_commands(block):
        where = f"{block.file}:{command.line}: {command.normalized[:160]}"
        reason = skip_reason(command)
        if reason:
            skipped.append(f"{command.normalized[:80]}: {reason}")
            continue
        check_known(command, where)
        text = walk.substitute(command.text)
        if command.program == "curl":
            expected = next(statuses)
            if command.piped:
                assert expected is None, f"{where}: an expected status needs a curl without a pipe or redirection"
                result = walk.shell(re.sub(r"^curl\b", "curl --fail-with-body -sS", text))
                assert result.returncode == 0, f"{where}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
            else:
                result = walk.shell(re.sub(r"^curl\b", f"curl -sS -o '{walk.body}' -w '%{{http_code}}'", text))
                answer = walk.body.read_text() if walk.body.exists() else ""
                status = result.stdout.strip()[-3:]
                assert result.returncode == 0 and status.isdigit(), f"{where}\n{result.stdout}{result.stderr}"
                if expected is None:
                    assert int(status) < 400, f"{where}\nanswered {status}: {answer[:3000]}"
                else:
                    said = f"{where}\nanswered {status}, the doc expects {expected}: {answer[:3000]}"
                    assert status == expected, said
        elif command.program == "cdp":
            code, output = walk.cli(text)
            said = f"{where}\nexit {code}\n{output[-6000:]}"
            assert code == int(next(exits) or 0), said
            assert "Traceback" not in output, said
        else:
            if command.program == "make":
                text = re.sub(r"^make\b", "make -o .venv/.installed", text)
            expected = next(exits) if command.program == "make" else None
            result = walk.shell(text)
            said = f"{where}\nexit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            assert result.returncode == int(expected or 0), said
            assert "Traceback" not in result.stdout + result.stderr, said
        ran += 1
        walk.wait_caught_up()
    if not ran:
        pytest.skip("; ".join(skipped))
    if "WRITE_KEY=$(" in block.text:  # the README's way of reading the keys must give the keys
        check = walk.shell('printf "%s %s %s %s" "$WRITE_KEY" "$READ_KEY" "$ADMIN_KEY" "$PLATFORM_KEY"')
        wanted = f"{walk.write_key} {walk.read_key} {walk.admin_key} {walk.platform_key}"
        assert check.stdout == wanted, f"{block.id}: the keys read are {check.stdout!r}"
    if block.output is not None and answer is not None:
        check_keys(block, answer)


# Output blocks whose keys the answer lacks because of a bug in the platform: block id -> the bug.
KNOWN_BUGS: dict[str, str] = {}


def check_keys(block: Block, answer: str) -> None:
    try:
        shown = json.loads(block.output or "")
    except ValueError:
        return  # an excerpt with "..." in it
    if not isinstance(shown, dict):
        return
    got = json.loads(answer)
    missing = sorted(set(shown) - set(got)) if isinstance(got, dict) else sorted(shown)
    if missing and block.id in KNOWN_BUGS:
        pytest.xfail(f"{KNOWN_BUGS[block.id]}; missing {missing}")
    assert not missing, f"{block.id}: the answer lacks the keys {missing} the doc shows after it: {answer[:3000]}"


def run_python_block(walk: Walkthrough, block: Block) -> None:
    script = walk.workdir / f"example_{block.file.replace('/', '_').replace('.', '_')}_{block.line}.py"
    script.write_text(walk.substitute(block.text))
    before = walk.status()["log_position"]
    if "KafkaConsumer(" in block.text:
        output = run_until_quiet(walk, script, block)
        assert output.strip(), f"{block.id}: the consumer printed nothing"
    else:
        result = subprocess.run([sys.executable, str(script)], cwd=walk.workdir, env=walk.env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        said = f"{block.id}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        assert result.returncode == 0 and "Traceback" not in result.stderr, said
        assert not re.search(r"\berror\b", result.stderr, re.I), said  # the Segment SDK logs a refused upload
    if "KafkaProducer(" in block.text:  # the platform takes the call from the ingest topic into the log
        deadline = time.monotonic() + 60
        while walk.status()["log_position"] <= before:
            if time.monotonic() > deadline:
                letters = httpx.get(f"{walk.cdp.url}/v1/dead-letters",
                                    headers={"Authorization": f"Bearer {walk.admin_key}"}).text  # fmt: skip
                pytest.fail(f"{block.id}: nothing of the produced message reached the log; dead letters: {letters}")
            time.sleep(0.2)
    walk.wait_caught_up()


def run_until_quiet(walk: Walkthrough, script: Path, block: Block, quiet: float = 2.0, limit: float = 60) -> str:
    """Run a consumer until it has printed something and then nothing for `quiet` seconds; stop it with SIGTERM."""
    process = subprocess.Popen([sys.executable, str(script)], cwd=walk.workdir, env=walk.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    last = [time.monotonic()]

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            last[0] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.monotonic()
    while process.poll() is None and time.monotonic() - started < limit:
        if lines and time.monotonic() - last[0] > quiet:
            break
        time.sleep(0.1)
    exited = process.poll()
    if exited is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    reader.join(timeout=5)
    output = "".join(lines)
    said = f"{block.id}: exit {process.returncode}\n{output[-2000:]}{stderr[-3000:]}"
    assert exited is None, f"{block.id} stopped by itself: {said}"
    assert "Traceback" not in stderr, said
    return output


def run_sql_block(walk: Walkthrough, block: Block) -> None:
    for pattern, reason in SQL_SKIP:
        if re.search(pattern, block.text, re.M):
            pytest.skip(reason)
    for statement in filter(str.strip, block.text.split(";")):
        response = httpx.post(f"{walk.cdp.url}/v1/sql", json={"query": statement}, headers=walk.read_headers,
                              timeout=60)  # fmt: skip
        said = f"{block.id}: {statement.strip()[:200]}\n{response.status_code}: {response.text}"
        assert response.status_code == 200, said


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_example(walk: Walkthrough, block: Block) -> None:
    if block.save_as:
        (walk.workdir / block.save_as).write_text(block.text + "\n")
        return
    walk.wait_caught_up()
    if block.lang in SHELL_LANGS:
        run_shell_block(walk, block)
    elif block.lang == "python":
        run_python_block(walk, block)
    else:
        run_sql_block(walk, block)


def test_rebuild_verify_after_the_walk_through(walk: Walkthrough) -> None:
    """The `cdp rebuild --verify` of docs/operations.md, with `cdp up` stopped first as it says, on the walk's data."""
    [command] = [c for b in BLOCKS if b.file == REBUILD_DOC for c in split_commands(b)
                 if c.normalized.startswith("cdp rebuild --verify")]  # fmt: skip
    walk.wait_caught_up()
    walk.cdp.stop()
    result = walk.shell(command.text, timeout=300)
    assert result.returncode == 0, f"{REBUILD_DOC}:{command.line}: {command.text}\n{result.stdout}{result.stderr}"
    assert "equal a rebuild" in result.stdout, result.stdout
