"""Bulk import: history files read as Segment calls, pure and free of any transport.

A `Source` reads one file (plain or gzip) and yields its `Record`s one by one:
the call to send, or why the record was refused here, with the line it starts
on and the `Position` a rerun starts from to read the records after it. Every
reader is a generator over a bounded buffer, so memory stays constant whatever
the size of the file (a line or a JSON element is capped at `MAX_RECORD_BYTES`;
one larger than that is refused, it could not fit a request anyway).

Formats (chosen by extension, else by content; docs/import.md):

- `jsonl`: one JSON object per line: a call, or a `{"batch": [...]}` request
  whose calls are read in order. Segment's S3 and warehouse archives are this.
- `json`: one document, `{"batch": [...]}` (Segment's batch request) or a bare
  array of calls, parsed element by element; a syntax error stops the file there.
- `csv`: a header row then one call per row, through a column mapping
  (`CsvMapping`): `type,event,userId,...` columns map to themselves,
  `properties.<name>`, `traits.<name>`, `context.<name>` columns to nested
  fields, numbers parsed as numbers.

Every call is turned into the call the importer sends (`as_import`): `--type`
and `--event` defaults filled in, `sentAt` dropped (and `originalTimestamp`
beside a `timestamp`), so the platform keeps the historical time as event time
and applies no clock-skew correction to it, and a deterministic `messageId`
when the row has none, so that importing a file again stores nothing twice.

Records that are not a JSON object (or a CSV row that cannot be mapped) are
refused here and never reach the platform; every JSON object is sent, and the
platform validates it: an invalid one is kept in its dead-letter store.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, NamedTuple

import orjson

from domain.segment import CALL_TYPES

ID_PREFIX = "import-"
ID_SCHEME = 1  # part of a checkpoint's identity: a change of how ids are made must not reuse checkpoints
MAX_RECORD_BYTES = 450 * 1024  # a line or element above this could not be sent in one request of 500 KB
CHUNK = 1 << 20
SHARED_FIELDS = ("context", "integrations")  # request-level fields a batch applies to each of its calls
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
FORMATS = ("jsonl", "json", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}


class ImportFileError(ValueError):
    """A file or mapping the importer cannot read at all, said before anything is sent (or where reading stopped)."""


class Position(NamedTuple):
    """Where reading starts again: a byte offset in the (decompressed) stream and the lines before it.

    For `json` documents the offset counts characters, and a rerun parses the
    document from its start, skipping the records up to the offset.
    """

    offset: int = 0
    lines: int = 0


class Record(NamedTuple):
    """One record of a file: `call` to send, or `refused` with the reason; `resume` is after it."""

    resume: Position
    line: int  # the line of the file the record starts on (1-based)
    call: Any = None
    refused: str | None = None


@dataclass(frozen=True)
class Defaults:
    """Fields a call without them gets: `type` for every call, `event` for `track` calls."""

    type: str | None = None
    event: str | None = None

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in CALL_TYPES:
            raise ImportFileError(f"--type {self.type!r}: use one of {', '.join(CALL_TYPES)}")


# ---- the call as sent -------------------------------------------------------------------------------------------


def dumps(value: Any, sort_keys: bool = False) -> bytes:
    """Compact JSON; integers beyond 64 bits (a CSV cell may hold one) through the standard library."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode()


def message_id(call: Mapping[str, Any]) -> str:
    """`import-` and the SHA-256 (128 bits of it) of the call's canonical JSON without its messageId.

    Content-based, so the id survives renaming the file, reordering or splitting
    it, and importing overlapping exports; two rows with the same content (same
    time, same ids, same properties) are taken for the same event and stored once.
    """
    body = {k: v for k, v in call.items() if k != "messageId"}
    return ID_PREFIX + hashlib.sha256(dumps(body, sort_keys=True)).hexdigest()[:32]


def as_import(item: dict[str, Any], defaults: Defaults, shared: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The call the importer sends for `item` (a new dict; `item` is not changed).

    `shared` (a batch's request-level context and integrations) is applied as
    the platform applies it: a call's own field wins. `sentAt` is dropped, and
    `originalTimestamp` when there is a `timestamp` (in Segment's exports that is
    the corrected event time), so that the event time stays the historical one.
    """
    call = {**shared, **item} if shared else dict(item)
    if defaults.type and not call.get("type"):
        call["type"] = defaults.type
    if defaults.event and call.get("type") == "track" and not call.get("event"):
        call["event"] = defaults.event
    call.pop("sentAt", None)
    if call.get("timestamp") not in (None, ""):
        call.pop("originalTimestamp", None)
    if call.get("messageId") in (None, ""):
        call.pop("messageId", None)
        call["messageId"] = message_id(call)
    return call


# ---- CSV mapping ------------------------------------------------------------------------------------------------

TOP_LEVEL = ("type", "event", "userId", "anonymousId", "messageId", "timestamp", "originalTimestamp", "name",
             "category", "groupId", "previousId")  # fmt: skip
OBJECTS = ("properties", "traits", "context", "integrations")
ALIASES = {"user_id": "userId", "anonymous_id": "anonymousId", "message_id": "messageId", "group_id": "groupId",
           "previous_id": "previousId", "original_timestamp": "originalTimestamp"}  # fmt: skip  (warehouse names)
KINDS = ("auto", "string", "number", "boolean", "json")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


class Target(NamedTuple):
    path: tuple[str, ...]
    kind: str


def parse_target(spec: str) -> Target | None:
    """`traits.email`, `properties.total:number`, `userId`, `properties:json`; an empty spec ignores the column.

    Top-level fields are strings unless told otherwise; nested ones are `auto`
    (a number when the cell is written as one, else a string); a whole
    `properties`/`traits`/`context`/`integrations` column holds a JSON object.
    """
    spec = spec.strip()
    if not spec:
        return None
    path, colon, kind = spec.rpartition(":")
    if not colon:
        path, kind = spec, ""
    elif kind not in KINDS:
        raise ImportFileError(f"{spec!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    parts = path.split(".")
    parts[0] = ALIASES.get(parts[0], parts[0])
    if any(not p for p in parts):
        raise ImportFileError(f"{spec!r}: an empty name between dots")
    if parts[0] in TOP_LEVEL and len(parts) == 1:
        return Target(tuple(parts), kind or "string")
    if parts[0] in OBJECTS:
        if len(parts) == 1 and kind not in ("", "json"):
            raise ImportFileError(f"{spec!r}: a whole {parts[0]} column holds a JSON object (kind json)")
        return Target(tuple(parts), kind or ("json" if len(parts) == 1 else "auto"))
    raise ImportFileError(
        f"{spec!r} is not a field of a call: use one of {', '.join(TOP_LEVEL)}, or properties.<name>, "
        "traits.<name>, context.<name>, integrations.<name>"
    )


def parse_map_option(option: str) -> tuple[str, str]:
    """`--map COLUMN=FIELD[:KIND]` (an empty FIELD ignores the column) as (column, field)."""
    column, equals, target = option.partition("=")
    if not equals or not column.strip():
        raise ImportFileError(
            f"--map {option!r}: write COLUMN=FIELD, e.g. --map Email=traits.email (an empty FIELD ignores the column)"
        )
    return column.strip(), target.strip()


def load_mapping(text: str) -> tuple[dict[str, str], Defaults]:
    """A mapping file (YAML or JSON): `columns: {COLUMN: FIELD, ...}` and optional `type:` and `event:` defaults."""
    import yaml

    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ImportFileError(f"the mapping file is not YAML or JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("columns", {}), dict):
        raise ImportFileError("a mapping file holds `columns: {COLUMN: FIELD, ...}` and optionally `type:`, `event:`")
    unknown = set(doc) - {"columns", "type", "event"}
    if unknown:
        found = ", ".join(sorted(unknown))
        raise ImportFileError(f"unknown keys in the mapping file: {found} (use columns, type, event)")
    columns = {str(k): "" if v is None else str(v) for k, v in (doc.get("columns") or {}).items()}
    return columns, Defaults(doc.get("type"), doc.get("event"))


def _convert(cell: str, kind: str) -> Any:
    if kind == "string":
        return cell
    if kind in ("auto", "number"):
        if _NUMBER.fullmatch(cell):
            value: Any = float(cell) if any(c in cell for c in ".eE") else int(cell)
            if not (isinstance(value, float) and not math.isfinite(value)):
                return value
        if kind == "number":
            raise ValueError(f"{cell!r} is not a number")
        return cell
    if kind == "boolean":
        try:
            return _BOOLEANS[cell.strip().lower()]
        except KeyError:
            raise ValueError(f"{cell!r} is not true/false, yes/no or 1/0") from None
    try:
        return orjson.loads(cell)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


class CsvMapping:
    """A CSV header's columns mapped to fields of a call; `call(row)` builds one call from a row.

    A column maps to the field its name says (`userId`, `traits.email`, ...)
    unless `columns` maps it (an empty field ignores it). A column that maps to
    nothing stops the import before anything is sent, so that no cell is lost.
    """

    def __init__(self, header: list[str], columns: Mapping[str, str], defaults: Defaults) -> None:
        self.header = header
        if len(set(header)) != len(header):
            twice = sorted({c for c in header if header.count(c) > 1})
            raise ImportFileError(f"the header names a column twice: {', '.join(twice)}")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ImportFileError(f"--map names columns the header does not have: {', '.join(missing)} "
                                  f"(the header: {', '.join(header)})")  # fmt: skip
        targets: list[tuple[int, str, Target]] = []
        unknown = []
        for index, name in enumerate(header):
            try:
                target = parse_target(columns[name] if name in columns else name)
            except ImportFileError as exc:
                if name in columns:
                    raise ImportFileError(f"--map {name}={columns[name]}: {exc}") from None
                unknown.append(name)
                continue
            if target is not None:
                targets.append((index, name, target))
        if unknown:
            raise ImportFileError(
                f"columns that map to no field of a call: {', '.join(unknown)}. Map each one, e.g. "
                f"--map '{unknown[0]}=traits.{unknown[0]}' or --map '{unknown[0]}=properties.{unknown[0]}', "
                f"or ignore it with --map '{unknown[0]}='"
            )
        paths = {t.path: name for _, name, t in targets}
        if len(paths) != len(targets):
            raise ImportFileError("two columns map to the same field; map one of them elsewhere or ignore it")
        for path, name in paths.items():
            for other, other_name in paths.items():
                inside = len(path) < len(other) and other[: len(path)] == path
                if inside and not (len(path) == 1 and path[0] in OBJECTS):  # only a whole JSON object takes more
                    raise ImportFileError(f"columns {name} ({'.'.join(path)}) and {other_name} ({'.'.join(other)}) "
                                          "overlap; map one of them elsewhere")  # fmt: skip
        fields = {t.path[0] for _, _, t in targets}
        if "type" not in fields and defaults.type is None:
            raise ImportFileError(f"the file has no type column: pass --type ({', '.join(CALL_TYPES)})")
        if "type" not in fields and defaults.type == "track" and "event" not in fields and defaults.event is None:
            raise ImportFileError("track calls need an event: add an event column or pass --event NAME")
        # whole objects first, so that a `traits.email` column lands inside a `traits` JSON column
        self.targets = sorted(targets, key=lambda t: len(t[2].path))
        self.width = len(header)

    def call(self, row: list[str]) -> dict[str, Any]:
        """The call a row describes; raises ValueError (with the column) for a row that cannot be mapped."""
        if len(row) > self.width:
            raise ValueError(f"{len(row)} cells, but the header has {self.width} columns")
        call: dict[str, Any] = {}
        for index, name, target in self.targets:
            cell = row[index] if index < len(row) else ""
            if cell == "":
                continue  # an empty cell sets nothing
            if _UNDECODABLE.search(cell):
                raise ValueError(f"column {name}: not UTF-8 text")
            try:
                value = _convert(cell, target.kind)
            except ValueError as exc:
                raise ValueError(f"column {name}: {exc}") from None
            if len(target.path) == 1 and target.path[0] in OBJECTS and not isinstance(value, dict):
                raise ValueError(f"column {name}: a {target.path[0]} column holds a JSON object")
            node = call
            for part in target.path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"column {name}: {part} is not an object in this row")
            node[target.path[-1]] = value
        return call

    def describe(self) -> dict[str, str]:
        return {name: ".".join(t.path) + ":" + t.kind for _, name, t in self.targets}


# ---- readers ----------------------------------------------------------------------------------------------------


class _Lines:
    """Lines of a binary stream with the offset after the last one read and the count; one above the cap is None."""

    def __init__(self, binary: IO[bytes], cap: int) -> None:
        self.binary = binary
        self.cap = cap
        self.offset = 0
        self.lines = 0

    def seek(self, at: Position) -> None:
        if at.offset > self.offset:
            self.binary.seek(at.offset)  # a gzip stream seeks forward by inflating and discarding
            self.offset, self.lines = at.offset, at.lines

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> bytes | None:
        data = self.binary.readline(self.cap + 1)
        if not data:
            raise StopIteration
        size = len(data)
        if self.offset == 0:
            data = data.removeprefix(BOM)
        self.offset += size
        self.lines += 1
        if size > self.cap and not data.endswith(b"\n"):
            while not data.endswith(b"\n"):  # skip the rest of it, a chunk at a time
                data = self.binary.readline(CHUNK)
                if not data:
                    break
                self.offset += len(data)
            return None
        return data


class _TextLines:
    """`_Lines` as text for the csv module; bytes that are not UTF-8 stay visible as surrogates."""

    def __init__(self, lines: _Lines) -> None:
        self.lines = lines
        self.too_long = False

    def __iter__(self) -> "_TextLines":
        return self

    def __next__(self) -> str:
        data = next(self.lines)
        if data is None:
            self.too_long = True
            return "\n"
        return data.decode("utf-8", "surrogateescape")


class _Malformed(Exception):
    pass


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Document:
    """A JSON document read a chunk at a time, one value at a time (the standard library's C scanner)."""

    def __init__(self, binary: IO[bytes], cap: int) -> None:
        self.binary = binary
        self.cap = cap
        self.decode = codecs.getincrementaldecoder("utf-8")().decode
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped before buf
        self.line = 1
        self.eof = False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.binary.read(CHUNK)
        text = self.decode(data, final=not data)
        if self.base == 0 and self.pos == 0 and not self.buf:
            text = text.removeprefix("\ufeff")
        self.eof = not data
        self.buf = self.buf[self.pos :] + text
        self.base += self.pos
        self.pos = 0
        return True

    def _advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        while True:
            self._advance(_WS.match(self.buf, self.pos).end())  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, chars: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            raise _Malformed(f"line {self.line}: expected {' or '.join(chars)}, found "
                             f"{repr(found) if found else 'the end of the file'}")  # fmt: skip
        self._advance(self.pos + 1)
        return found

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if not self.eof and len(self.buf) - self.pos <= self.cap:
                    self._fill()  # the value may go on in the next chunk
                    continue
                line = self.line + self.buf.count("\n", self.pos, exc.pos)
                reason = f"line {line}: not valid JSON ({exc.msg}), or a value above {self.cap} bytes"
                raise _Malformed(reason) from None
            if end == len(self.buf) and not self.eof:  # a number may go on in the next chunk
                self._fill()
                continue
            self._advance(end)
            return value


class Source:
    """One history file: its format (given, or by extension and content), and its records as a generator."""

    def __init__(
        self,
        path: Path | str,
        format: str | None = None,
        defaults: Defaults = Defaults(),
        columns: Mapping[str, str] | None = None,
        delimiter: str | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.path = Path(path)
        self.defaults = defaults
        self.cap = max_record_bytes
        self._raw: IO[bytes] | None = None
        self._read = 0
        try:
            self.size = self.path.stat().st_size
            with self.path.open("rb") as f:
                self.compressed = f.read(2) == GZIP_MAGIC
            if format is not None and format not in FORMATS:
                raise ImportFileError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
            self.format = format or self._detect()
            self.columns = dict(columns or {})
            if self.columns and self.format != "csv":
                raise ImportFileError("--map and a mapping file are for CSV files; this file is read as " + self.format)
            name = self.path.name.lower().removesuffix(".gz")
            self.delimiter = delimiter or ("\t" if name.endswith(".tsv") else ",")
            self.mapping = self._header() if self.format == "csv" else None
        except (OSError, EOFError, zlib.error) as exc:
            raise ImportFileError(f"{self.path}: {exc}") from None

    @property
    def bytes_read(self) -> int:
        """Bytes of the file on disk read so far (compressed bytes for a gzip file): for a progress bar."""
        return self._raw.tell() if self._raw is not None else self._read

    def fingerprint(self) -> str:
        """What the records' content depends on besides the file: a checkpoint holds for these options only."""
        options = {"format": self.format, "type": self.defaults.type, "event": self.defaults.event,
                   "ids": ID_SCHEME, "delimiter": self.delimiter if self.format == "csv" else None,
                   "columns": self.mapping.describe() if self.mapping else None}  # fmt: skip
        return hashlib.sha256(dumps(options, sort_keys=True)).hexdigest()[:16]

    def _binary(self, raw: IO[bytes]) -> IO[bytes]:
        return gzip.GzipFile(fileobj=raw, mode="rb") if self.compressed else raw  # type: ignore[return-value]

    def _detect(self) -> str:
        name = self.path.name.lower().removesuffix(".gz")
        for extension, format in _EXTENSIONS.items():
            if name.endswith(extension):
                return format
        with self.path.open("rb") as raw:
            first = self._binary(raw).readline(self.cap + 1).removeprefix(BOM)
        text = first.lstrip()
        if not text or text[:1] == b"{":
            try:
                orjson.loads(first)
                return "jsonl"  # the first line is a whole JSON value
            except orjson.JSONDecodeError:
                return "json" if text else "jsonl"  # a document spread over lines (or an empty file)
        if text[:1] == b"[" or name.endswith(".json"):
            return "json"
        return "csv"

    def _header(self) -> CsvMapping:
        with self.path.open("rb") as raw:
            reader = csv.reader(_TextLines(_Lines(self._binary(raw), self.cap)), delimiter=self.delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise ImportFileError(f"{self.path}: an empty CSV file (a header row is needed)") from None
            except csv.Error as exc:
                raise ImportFileError(f"{self.path}: the header row is not CSV: {exc}") from None
        if _UNDECODABLE.search("".join(header)):
            raise ImportFileError(f"{self.path}: the header row is not UTF-8 text")
        return CsvMapping([c.strip() for c in header], self.columns, self.defaults)

    def records(self, start: Position = Position()) -> Iterator[Record]:
        """The file's records after `start` (a `Record.resume` of an earlier read), in order."""
        with self.path.open("rb") as raw:
            self._raw = raw
            try:
                binary = self._binary(raw)
                if self.format == "csv":
                    yield from self._csv(binary, start)
                elif self.format == "jsonl":
                    yield from self._jsonl(binary, start)
                else:
                    yield from self._json(binary, start)
            except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt gzip stream, a read error
                raise ImportFileError(f"{self.path}: cannot be read on: {exc}") from None
            finally:
                self._read = raw.tell()
                self._raw = None

    def _jsonl(self, binary: IO[bytes], start: Position) -> Iterator[Record]:
        lines = _Lines(binary, self.cap)
        lines.seek(start)
        while True:
            begin = Position(lines.offset, lines.lines)
            try:
                data = next(lines)
            except StopIteration:
                return
            end = Position(lines.offset, lines.lines)
            if data is None:
                yield Record(end, end.lines, refused=f"a line above {self.cap} bytes")
                continue
            if not data.strip():
                continue
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                yield Record(end, end.lines, refused=f"not JSON: {exc.msg} (column {exc.colno})")
                continue
            if isinstance(value, dict) and isinstance(value.get("batch"), list):  # a whole request on a line
                shared = {k: value[k] for k in SHARED_FIELDS if isinstance(value.get(k), dict)}
                items = value["batch"]
                for i, item in enumerate(items):  # only its last call moves the resume point past the line
                    yield self._record(end if i == len(items) - 1 else begin, end.lines, item, shared)
                continue
            yield self._record(end, end.lines, value)

    def _record(self, resume: Position, line: int, value: Any, shared: Mapping[str, Any] | None = None) -> Record:
        if not isinstance(value, dict):
            return Record(resume, line, refused=f"not a JSON object but {type(value).__name__}")
        return Record(resume, line, as_import(value, self.defaults, shared))

    def _csv(self, binary: IO[bytes], start: Position) -> Iterator[Record]:
        assert self.mapping is not None
        lines = _Lines(binary, self.cap)
        text = _TextLines(lines)
        reader = csv.reader(text, delimiter=self.delimiter)
        next(reader)  # the header, read and mapped when the source was opened
        lines.seek(start)
        while True:
            number = lines.lines + 1
            text.too_long = False
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(Position(lines.offset, lines.lines), number, refused=f"not a CSV row: {exc}")
                continue
            end = Position(lines.offset, lines.lines)
            if text.too_long:
                yield Record(end, number, refused=f"a line above {self.cap} bytes")
                continue
            if not any(row):
                continue  # a blank line
            try:
                call = self.mapping.call(row)
            except ValueError as exc:
                yield Record(end, number, refused=str(exc))
                continue
            yield Record(end, number, as_import(call, self.defaults))

    def _json(self, binary: IO[bytes], start: Position) -> Iterator[Record]:
        doc = _Document(binary, self.cap)

        def items(shared: Mapping[str, Any]) -> Iterator[Record]:
            doc.expect("[")
            if doc.peek() == "]":
                doc.expect("]")
                return
            while True:
                doc.peek()
                line = doc.line
                value = doc.value()
                resume = Position(doc.offset, doc.line - 1)
                if resume.offset > start.offset:  # a rerun parses from the start and skips what was read before
                    yield self._record(resume, line, value, shared)
                if doc.expect(",]") == "]":
                    return

        try:
            first = doc.peek()
            if first == "[":
                yield from items({})
            elif first == "{":
                doc.expect("{")
                shared: dict[str, Any] = {}
                found = False
                if doc.peek() == "}":
                    doc.expect("}")
                else:
                    while True:
                        key = doc.value()
                        if not isinstance(key, str):
                            raise _Malformed(f"line {doc.line}: an object key must be a string")
                        doc.expect(":")
                        if key == "batch" and doc.peek() == "[":
                            found = True
                            yield from items(dict(shared))
                        else:
                            value = doc.value()  # sentAt, writeKey, ... are not used; context applies to what follows
                            if key in SHARED_FIELDS and isinstance(value, dict):
                                shared[key] = value
                        if doc.expect(",}") == "}":
                            break
                if not found:
                    raise _Malformed('the JSON object has no "batch" array: expected {"batch": [...]} or [call, ...]')
            elif first:
                raise _Malformed(f"line {doc.line}: a JSON document starts with {{ or [, found {first!r}")
            if doc.peek():
                raise _Malformed(f"line {doc.line}: more after the end of the JSON document")
        except (_Malformed, UnicodeDecodeError) as exc:
            reason = f"not UTF-8 text: {exc}" if isinstance(exc, UnicodeDecodeError) else str(exc)
            resume = Position(doc.offset, doc.line - 1)
            if resume.offset > start.offset or start.offset == 0:
                yield Record(resume, doc.line, refused=f"{reason}; the rest of the file was not read")
