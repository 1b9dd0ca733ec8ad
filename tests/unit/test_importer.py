"""Bulk import readers (ingest/importer.py): formats, CSV mapping, deterministic ids, resume points, bounded memory."""

from __future__ import annotations

import gzip
import inspect
import io
import json
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest import importer
from ingest.importer import (
    Defaults,
    ImportFileError,
    Position,
    Record,
    Source,
    as_import,
    load_mapping,
    message_id,
    parse_map_option,
    parse_target,
)

TRACK = {"type": "track", "userId": "u1", "event": "Viewed", "timestamp": "2021-03-04T05:06:07Z"}


def write(path: Path, text: str | bytes, compress: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def jsonl(*items: Any) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


def calls(records: list[Record]) -> list[dict[str, Any]]:
    return [r.call for r in records if r.call is not None]


def refused(records: list[Record]) -> list[tuple[int, str]]:
    return [(r.line, r.refused) for r in records if r.refused is not None]


# ---- the call as sent -------------------------------------------------------------------------------------------


def test_a_row_without_message_id_gets_one_from_its_content() -> None:
    first = as_import(dict(TRACK), Defaults())
    again = as_import(dict(reversed(list(TRACK.items()))), Defaults())  # same content, other key order
    assert first["messageId"] == again["messageId"] == message_id(TRACK)
    assert first["messageId"].startswith("import-") and len(first["messageId"]) == len("import-") + 32
    later = as_import({**TRACK, "timestamp": "2021-03-04T05:06:08Z"}, Defaults())
    assert later["messageId"] != first["messageId"]  # another time is another event


def test_a_message_id_of_the_row_is_kept_and_an_empty_one_replaced() -> None:
    assert as_import({**TRACK, "messageId": "m-1"}, Defaults())["messageId"] == "m-1"
    assert as_import({**TRACK, "messageId": ""}, Defaults())["messageId"] == message_id(TRACK)
    assert as_import({**TRACK, "messageId": None}, Defaults())["messageId"] == message_id(TRACK)


def test_historical_time_is_kept_as_event_time() -> None:
    exported = {**TRACK, "sentAt": "2021-03-04T05:07:00Z", "originalTimestamp": "2021-03-04T05:05:00Z"}
    call = as_import(exported, Defaults())
    assert "sentAt" not in call and "originalTimestamp" not in call  # no clock-skew correction on import
    assert call["timestamp"] == TRACK["timestamp"]
    only_original = as_import({"type": "page", "userId": "u1", "originalTimestamp": "2020-01-01T00:00:00Z"}, Defaults())
    assert only_original["originalTimestamp"] == "2020-01-01T00:00:00Z"


def test_defaults_fill_a_missing_type_and_event_only() -> None:
    defaults = Defaults("track", "Imported")
    assert as_import({"userId": "u1"}, defaults)["type"] == "track"
    assert as_import({"userId": "u1"}, defaults)["event"] == "Imported"
    assert as_import({"userId": "u1", "type": "identify"}, defaults) == as_import(
        {"userId": "u1", "type": "identify"}, Defaults()
    )
    assert as_import({"userId": "u1", "event": "Own"}, defaults)["event"] == "Own"
    with pytest.raises(ImportFileError, match="--type 'click'"):
        Defaults("click")


def test_the_row_itself_is_not_changed() -> None:
    row = {**TRACK, "sentAt": "2021-03-04T05:07:00Z"}
    as_import(row, Defaults("track"))
    assert "messageId" not in row and "sentAt" in row


# ---- JSONL ------------------------------------------------------------------------------------------------------


def test_jsonl_lines_are_calls_and_what_is_not_a_json_object_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.jsonl", jsonl(TRACK, "not json", "", {"type": "identify", "userId": "u2"}, "[1, 2]"))
    records = list(Source(path).records())
    assert [c["type"] for c in calls(records)] == ["track", "identify"]
    reasons = [(line, reason.split(":")[0]) for line, reason in refused(records)]
    assert reasons == [(2, "not JSON"), (5, "not a JSON object but list")]
    assert [r.line for r in records] == [1, 2, 4, 5]  # the blank line 3 is no record


def test_an_invalid_call_is_still_sent_for_the_platform_to_dead_letter(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.jsonl", jsonl({"type": "track", "event": "No Identity"}))
    [record] = list(Source(path).records())
    assert record.refused is None and record.call["event"] == "No Identity"


def test_a_line_holding_a_whole_batch_request_gives_its_calls_with_the_shared_context(tmp_path: Path) -> None:
    request = {"batch": [dict(TRACK), {**TRACK, "context": {"ip": "own"}}], "context": {"ip": "1.2.3.4"}, "sentAt": "x"}
    path = write(tmp_path / "requests.jsonl", jsonl(request, TRACK))
    records = list(Source(path).records())
    assert [c.get("context") for c in calls(records)] == [{"ip": "1.2.3.4"}, {"ip": "own"}, None]
    first, second, third = records
    assert first.resume == Position(0, 0)  # not past the line before its last call is confirmed
    assert second.resume.lines == 1 and third.resume.lines == 2


def test_jsonl_resumes_after_any_record(tmp_path: Path) -> None:
    lines = [{**TRACK, "messageId": f"m-{i}"} for i in range(20)]
    path = write(tmp_path / "calls.jsonl", jsonl(*lines[:7], "oops", *lines[7:]))
    records = list(Source(path).records())
    for i, record in enumerate(records):
        assert list(Source(path).records(record.resume)) == records[i + 1 :]


def test_a_gzip_file_reads_like_the_plain_one_and_resumes_too(tmp_path: Path) -> None:
    text = jsonl(*[{**TRACK, "properties": {"i": i}} for i in range(50)], "not json")
    plain, packed = write(tmp_path / "a.jsonl", text), write(tmp_path / "a.jsonl.gz", text, compress=True)
    records = list(Source(plain).records())
    assert list(Source(packed).records()) == records
    assert list(Source(packed).records(records[30].resume)) == records[31:]
    source = Source(packed)
    assert source.compressed and source.format == "jsonl"
    list(source.records())
    assert source.bytes_read == packed.stat().st_size  # progress counts bytes of the file on disk


def test_a_line_above_the_cap_is_refused_without_being_held(tmp_path: Path) -> None:
    huge = json.dumps({**TRACK, "properties": {"blob": "x" * 50_000}})
    path = write(tmp_path / "calls.jsonl", jsonl(TRACK, huge, TRACK))
    records = list(Source(path, max_record_bytes=1000).records())
    assert refused(records) == [(2, "a line above 1000 bytes")]
    assert len(calls(records)) == 2 and records[1].resume.lines == 2


# ---- JSON documents: Segment's batch request, or an array -------------------------------------------------------


SEGMENT_BATCH = """{
  "sentAt": "2021-03-04T06:00:00Z",
  "context": {"library": {"name": "analytics-python"}},
  "batch": [
    {"type": "identify", "userId": "u1", "traits": {"email": "ann@example.com"}, "timestamp": "2021-03-04T05:00:00Z",
     "messageId": "seg-1"},
    {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 9.5},
     "timestamp": "2021-03-04T05:01:00Z", "sentAt": "2021-03-04T06:00:00Z"},
    17
  ],
  "writeKey": "ignored"
}
"""


def test_a_segment_batch_file_is_read_element_by_element(tmp_path: Path) -> None:
    path = write(tmp_path / "export.json", SEGMENT_BATCH)
    source = Source(path)
    assert source.format == "json"
    records = list(source.records())
    identify, track = calls(records)
    assert identify["messageId"] == "seg-1" and identify["context"] == {"library": {"name": "analytics-python"}}
    assert "sentAt" not in track and track["messageId"].startswith("import-")
    assert [r.line for r in records] == [5, 7, 9] and refused(records) == [(9, "not a JSON object but int")]
    assert list(Source(path).records(records[0].resume)) == records[1:]


def test_a_json_array_of_calls_across_many_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK", 7)  # every value and number straddles a chunk boundary
    items = [{**TRACK, "properties": {"n": 123456789 + i, "text": "é€𝄞" * i}} for i in range(30)]
    path = write(tmp_path / "calls.json", json.dumps(items, indent=2, ensure_ascii=False))
    assert [dict(c, messageId=None) for c in calls(list(Source(path).records()))] == [
        dict(as_import(i, Defaults()), messageId=None) for i in items
    ]


def test_a_broken_json_document_stops_where_it_breaks(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.json", '[\n{"type": "track", "userId": "u1", "event": "A"},\n{"type": oops}\n]')
    records = list(Source(path).records())
    assert len(calls(records)) == 1
    [(line, reason)] = refused(records)
    assert line == 3 and "not valid JSON" in reason and "the rest of the file was not read" in reason
    no_batch = write(tmp_path / "other.json", '{\n "calls": []\n}')
    assert "no \"batch\" array" in refused(list(Source(no_batch).records()))[0][1]


# ---- detection --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "format"),
    [
        ("a.jsonl", "anything", "jsonl"),
        ("a.ndjson", "", "jsonl"),
        ("a.csv", "type,userId\ntrack,u1", "csv"),
        ("a.tsv", "type\tuserId", "csv"),
        ("archive", jsonl(TRACK, TRACK), "jsonl"),  # Segment's S3 archives: JSON lines, no telling extension
        ("archive.json", jsonl(TRACK, TRACK), "jsonl"),
        ("export.json", SEGMENT_BATCH, "json"),
        ("calls.txt", "[\n" + json.dumps(TRACK) + "\n]", "json"),
        ("people", "type,userId\nidentify,u1\n", "csv"),
    ],
)
def test_the_format_comes_from_the_extension_else_the_content(tmp_path: Path, name: str, text: str, format: str) -> None:  # noqa: E501
    assert Source(write(tmp_path / name, text)).format == format
    assert Source(write(tmp_path / (name + ".gz"), text, compress=True)).format == format


def test_a_given_format_wins_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.txt", jsonl(TRACK))
    assert Source(path, format="jsonl").format == "jsonl"
    with pytest.raises(ImportFileError, match="--format 'xml'"):
        Source(path, format="xml")
    with pytest.raises(ImportFileError, match="for CSV files"):
        Source(path, columns={"a": "userId"})


def test_a_file_that_is_not_gzip_after_all_is_said_plainly(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.jsonl.gz", b"\x1f\x8bnot really gzip")
    with pytest.raises(ImportFileError):
        list(Source(path).records())
    whole = gzip.compress(jsonl(*[{**TRACK, "properties": {"i": i}} for i in range(500)]).encode())
    cut = write(tmp_path / "cut.jsonl.gz", whole[: len(whole) // 2])  # a download that stopped halfway
    records = Source(cut).records()
    assert next(records).call is not None
    with pytest.raises(ImportFileError, match="cannot be read on: Compressed file ended"):
        list(records)


# ---- CSV --------------------------------------------------------------------------------------------------------

CSV = """\
type,event,userId,anonymousId,timestamp,messageId,properties.total,properties.sku,traits.zip,context.ip
track,Order Completed,42,,2020-05-01T10:00:00Z,m-1,99.5,0042,,10.0.0.1
identify,,42,,2020-05-01T09:00:00Z,,,,01234,
"""


def test_csv_columns_map_to_the_fields_they_name_with_numbers_as_numbers(tmp_path: Path) -> None:
    records = list(Source(write(tmp_path / "calls.csv", CSV)).records())
    track, identify = calls(records)
    assert track == {"type": "track", "event": "Order Completed", "userId": "42", "timestamp": "2020-05-01T10:00:00Z",
                     "messageId": "m-1", "properties": {"total": 99.5, "sku": "0042"}, "context": {"ip": "10.0.0.1"}}  # fmt: skip
    assert identify["traits"] == {"zip": "01234"} and "event" not in identify  # empty cells set nothing
    assert identify["messageId"] == message_id({k: v for k, v in identify.items() if k != "messageId"})
    assert [r.line for r in records] == [2, 3]


def test_auto_numbers_are_only_numbers_written_as_such() -> None:
    convert = importer._convert
    assert [convert(v, "auto") for v in ("7", "-3", "2.50", "1e3", "007", "1.", "+1", "12abc", "1e999")] == [
        7, -3, 2.5, 1000.0, "007", "1.", "+1", "12abc", "1e999",
    ]  # fmt: skip
    assert convert("18446744073709551616", "auto") == 2**64
    assert convert("yes", "boolean") is True and convert('{"a": [1]}', "json") == {"a": [1]}
    assert convert("42", "string") == "42"
    with pytest.raises(ValueError, match="not a number"):
        convert("n/a", "number")


def test_a_row_that_cannot_be_mapped_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    text = 'userId,properties.n,properties.note\nu1,1,"two\nlines"\nu2,x,ok\nu3,3,ok,extra\nu4,4\n\n'
    path = write(tmp_path / "calls.csv", text)

    def source() -> Source:
        return Source(path, defaults=Defaults("track", "Seen"), columns={"properties.n": "properties.n:number"})

    records = list(source().records())
    assert [c["userId"] for c in calls(records)] == ["u1", "u4"]
    assert calls(records)[0]["properties"] == {"n": 1, "note": "two\nlines"}
    assert refused(records) == [(4, "column properties.n: 'x' is not a number"),
                                (5, "4 cells, but the header has 3 columns")]  # fmt: skip
    for i, record in enumerate(records):  # a quoted cell over two lines, then resuming after each row
        assert list(source().records(record.resume)) == records[i + 1 :]


def test_map_options_rename_type_and_ignore_columns(tmp_path: Path) -> None:
    text = "\ufeffEmail,Customer,Plan,Signed Up,Notes,props\na@b.c,7,pro,true,skip me,\"{\"\"x\"\": 1}\"\n"
    columns = {"Email": "traits.email", "Customer": "user_id", "Plan": "traits.plan",
               "Signed Up": "traits.signed:boolean", "Notes": "", "props": "traits"}  # fmt: skip
    path = write(tmp_path / "people.csv", text)
    [record] = list(Source(path, defaults=Defaults("identify"), columns=columns).records())
    assert record.call["userId"] == "7" and record.call["type"] == "identify"
    assert record.call["traits"] == {"x": 1, "email": "a@b.c", "plan": "pro", "signed": True}


def test_a_column_that_maps_to_nothing_stops_the_import_before_it_starts(tmp_path: Path) -> None:
    path = write(tmp_path / "people.csv", "userId,Email\nu1,a@b.c\n")
    with pytest.raises(ImportFileError, match=r"map to no field of a call: Email.*--map 'Email=traits.Email'"):
        Source(path, defaults=Defaults("identify"))
    with pytest.raises(ImportFileError, match="no type column: pass --type"):
        Source(path, columns={"Email": "traits.email"})
    with pytest.raises(ImportFileError, match="track calls need an event"):
        Source(path, defaults=Defaults("track"), columns={"Email": "traits.email"})
    with pytest.raises(ImportFileError, match="the header does not have: Mail"):
        Source(path, defaults=Defaults("identify"), columns={"Mail": "traits.email"})
    with pytest.raises(ImportFileError, match="overlap"):
        Source(write(tmp_path / "o.csv", "userId,traits.a,traits.a.b\n"), defaults=Defaults("identify"))
    with pytest.raises(ImportFileError, match="the same field"):
        Source(path, defaults=Defaults("identify"), columns={"Email": "userId"})


def test_targets_and_map_options_and_mapping_files() -> None:
    assert parse_target("properties.total:number") == (("properties", "total"), "number")
    assert parse_target("anonymous_id") == (("anonymousId",), "string")
    assert parse_target("context") == (("context",), "json") and parse_target(" ") is None
    for bad in ("email", "traits.", "traits.a:float", "properties:number"):
        with pytest.raises(ImportFileError):
            parse_target(bad)
    assert parse_map_option("Signed Up=traits.signed:boolean") == ("Signed Up", "traits.signed:boolean")
    assert parse_map_option("Notes=") == ("Notes", "")
    with pytest.raises(ImportFileError, match="COLUMN=FIELD"):
        parse_map_option("Email")
    columns, defaults = load_mapping("type: track\nevent: Order Completed\ncolumns:\n  Email: traits.email\n  Notes:\n")
    assert columns == {"Email": "traits.email", "Notes": ""} and defaults == Defaults("track", "Order Completed")
    with pytest.raises(ImportFileError, match="unknown keys"):
        load_mapping('{"colums": {}}')


def test_a_tab_separated_gzip_file(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.tsv.gz", "type\tuserId\tname\npage\tu1\tHome\n", compress=True)
    assert calls(list(Source(path).records()))[0]["name"] == "Home"


def test_the_fingerprint_follows_the_options_that_shape_the_calls(tmp_path: Path) -> None:
    path = write(tmp_path / "people.csv", "userId,Email\nu1,a@b.c\n")
    one = Source(path, defaults=Defaults("identify"), columns={"Email": "traits.email"}).fingerprint()
    assert one == Source(path, defaults=Defaults("identify"), columns={"Email": "traits.email"}).fingerprint()
    assert one != Source(path, defaults=Defaults("identify"), columns={"Email": "traits.mail"}).fingerprint()
    assert one != Source(path, defaults=Defaults("group"), columns={"Email": "traits.email"}).fingerprint()


# ---- constant memory --------------------------------------------------------------------------------------------


def test_records_are_a_generator_that_reads_only_what_it_gives(tmp_path: Path) -> None:
    path = write(tmp_path / "calls.jsonl", jsonl(*[{**TRACK, "properties": {"i": i}} for i in range(50_000)]))
    source = Source(path)
    records = source.records()
    assert inspect.isgenerator(records)
    next(records)
    assert 0 < source.bytes_read < path.stat().st_size // 20  # one buffer in, not the file
    records.close()


@pytest.mark.parametrize("name", ["calls.jsonl", "calls.json", "calls.csv.gz"])
def test_memory_stays_flat_whatever_the_file_size(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK", 64 * 1024)  # the document reader's buffer, smaller than in use
    rows, pad = 12_000, "p" * 250
    if name.startswith("calls.csv"):
        text = "type,userId,event,properties.i,properties.pad\n" + "".join(
            f"track,u{i},Viewed,{i},{pad}\n" for i in range(rows)
        )
    else:
        items = [{**TRACK, "properties": {"i": i, "pad": pad}} for i in range(rows)]
        text = json.dumps({"batch": items}, indent=1) if name.endswith(".json") else jsonl(*items)
    path = write(tmp_path / name, text, compress=name.endswith(".gz"))
    tracemalloc.start()
    try:
        count = sum(1 for record in Source(path).records() if record.call is not None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < 2**20 < len(text) // 3, f"peak {peak} bytes for {len(text)} bytes of text"


# ---- sending (infra/import_cli.py), against a fake /v1/batch ----------------------------------------------------


class FakePlatform:
    """`/v1/batch` with partial acceptance and messageId deduplication, in memory; `fail` answers first."""

    def __init__(self, fail: list[int] | None = None, max_items: int | None = None, gzip_ok: bool = True) -> None:
        self.fail = list(fail or [])
        self.max_items = max_items
        self.gzip_ok = gzip_ok
        self.stored: set[str] = set()
        self.encodings: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            encoding = request.headers.get("content-encoding")
            self.encodings.append(encoding)
            if self.fail:
                return httpx.Response(self.fail.pop(0), json={"code": "unavailable", "message": "busy"})
            if encoding == "gzip" and not self.gzip_ok:
                return httpx.Response(400, json={"code": "invalid_json", "message": "the body is not valid JSON"})
            body = gzip.decompress(request.content) if encoding == "gzip" else request.content
            batch = json.loads(body)["batch"]
            if self.max_items and len(batch) > self.max_items:
                return httpx.Response(413, json={"code": "too_large", "message": "send smaller batches"})
            stored, rejected = 0, []
            for index, call in enumerate(batch):
                if "userId" not in call and "anonymousId" not in call:
                    rejected.append({"index": index, "messageId": call.get("messageId"), "field": "(event)",
                                     "reason": "either userId or anonymousId is required", "code": "invalid_event"})  # fmt: skip
                elif call["messageId"] not in self.stored:
                    self.stored.add(call["messageId"])
                    stored += 1
            duplicates = len(batch) - len(rejected) - stored
            return httpx.Response(200, json={"success": True, "accepted": stored + duplicates, "stored": stored,
                                             "duplicates": duplicates, "rejected": rejected})  # fmt: skip


def run_import(path: Path, platform: FakePlatform, tmp_path: Path, compress: bool = True, start: bool = False) -> Any:
    from rich.console import Console
    from rich.progress import Progress

    from infra.import_cli import Checkpoint, Importer, Sender, Tally

    source = Source(path)
    checkpoint = Checkpoint(tmp_path / "imports", source)
    position, tally = Position(), Tally()
    saved = checkpoint.load()
    if start and isinstance(saved, tuple):
        position, tally, _ = saved
    sender = Sender("http://cdp.test", "wk_test", compress, threading.Event(), transport=httpx.MockTransport(platform))
    sender.backoff = 0.001
    with Progress(console=Console(file=io.StringIO())) as progress:
        outcome = Importer(sender, 3, 100, 450 * 1024).run(source, checkpoint, position, tally, progress)
    sender.close()
    return outcome, checkpoint


def history(tmp_path: Path, lines: int = 1_000) -> Path:
    rows = []
    for i in range(lines):
        if i in (10, 500):
            rows.append("{broken")
        elif i in (20, 700):
            rows.append({"type": "track", "event": "Orphan", "properties": {"i": i}})
        else:
            rows.append({**TRACK, "properties": {"i": i}})
    return write(tmp_path / "history.jsonl", jsonl(*rows))


def test_an_import_counts_what_the_platform_stored_dead_lettered_and_what_was_refused_here(tmp_path: Path) -> None:
    platform = FakePlatform()
    outcome, checkpoint = run_import(history(tmp_path), platform, tmp_path)
    t = outcome.tally
    assert outcome.complete and (t.stored, t.duplicates, t.dead_lettered, t.refused) == (996, 0, 2, 2)
    assert [e.split(":")[0] for e in t.dead_letter_examples] == ["line 21", "line 701"]
    assert [e.split(":")[0] for e in t.refused_examples] == ["line 11", "line 501"]
    assert set(platform.encodings) == {"gzip"} and len(platform.encodings) == 10
    position, saved, complete = checkpoint.load()
    assert complete and saved == t and position.lines == 1_000

    again, _ = run_import(history(tmp_path), platform, tmp_path)  # from the start: the platform dedups
    assert (again.tally.stored, again.tally.duplicates) == (0, 996)


def test_busy_answers_and_connection_errors_are_retried(tmp_path: Path) -> None:
    platform = FakePlatform(fail=[503, 429, 502])
    outcome, _ = run_import(history(tmp_path, 300), platform, tmp_path)
    assert outcome.complete and outcome.tally.stored == 298 and len(platform.encodings) == 3 + 3

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gone, checkpoint = run_import(history(tmp_path, 300), unreachable, tmp_path)  # type: ignore[arg-type]
    assert not gone.complete and "gave up after 10 attempts" in gone.error and "ConnectError" in gone.error


def test_a_batch_too_large_for_the_platform_is_halved(tmp_path: Path) -> None:
    platform = FakePlatform(max_items=30)
    outcome, _ = run_import(history(tmp_path, 300), platform, tmp_path)
    t = outcome.tally
    assert outcome.complete and (t.stored, t.dead_lettered, t.refused) == (298, 1, 1)
    assert [e.split(":")[0] for e in t.dead_letter_examples] == ["line 21"]  # its index in the half, mapped back


def test_a_platform_that_does_not_read_gzip_gets_plain_json(tmp_path: Path) -> None:
    platform = FakePlatform(gzip_ok=False)
    outcome, _ = run_import(history(tmp_path, 300), platform, tmp_path)
    assert outcome.complete and outcome.tally.stored == 298
    # Requests already in flight when the first refusal came back (and their retries) may be gzip too;
    # the import ends in plain JSON and nothing is lost.
    assert platform.encodings[0] == "gzip" and platform.encodings[-1] is None
    assert "did not take a gzip body" in outcome.notes[0]


def test_a_checkpoint_holds_for_the_same_file_and_options_only(tmp_path: Path) -> None:
    from infra.import_cli import Checkpoint

    path = history(tmp_path, 50)
    outcome, checkpoint = run_import(path, FakePlatform(), tmp_path)
    assert isinstance(checkpoint.load(), tuple)
    assert Checkpoint(tmp_path / "imports", Source(path, defaults=Defaults("track"))).path != checkpoint.path
    path.write_text(path.read_text() + jsonl(TRACK))
    assert Checkpoint(tmp_path / "imports", Source(path)).load() == "the file changed since its checkpoint"
