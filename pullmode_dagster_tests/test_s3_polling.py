"""s3_polling against moto's server mode through the real boto3 client: parsers, .gz, listing past
1,000 keys, resume, late keys, bad records, unreadable files, rotation, windows."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext, Window
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .dagster_helpers import Clock, committed, make_harness
from .documents import s3_source
from .fakes import make_events
from .helpers import free_port, stored_ids
from .s3_helpers import ADMIN_KEY, S3Proxy, admin_client, gz, ndjson


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROP_KEY_ID", "AKIAFIRSTKEY0001")
    monkeypatch.setenv("DROP_SECRET", "first-secret-value-0001")


@pytest.fixture
def ctx() -> PullContext:
    return PullContext(retry=RetryPolicy(max_attempts=1))


def test_ndjson_csv_and_json_array_files(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, moto_url: str, ctx: PullContext
) -> None:
    events = make_events(9)
    s3.put_object(Bucket="audit-drops", Key="audit/a.ndjson", Body=ndjson(events[:3]))
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["event_id", "ts", "user", "kind", "model", "cost", "tin", "tout"])
    for e in events[3:6]:
        writer.writerow([e["id"], e["created_at"], e["actor"]["email"], e["type"], e["model"], "", 7, 3])
    s3.put_object(Bucket="audit-drops", Key="csv/b.csv", Body=rows.getvalue().encode())
    s3.put_object(Bucket="audit-drops", Key="json/c.json", Body=json.dumps(events[6:]).encode())

    nd = sources.load(s3_source(moto_url))
    report = run_pull(nd, store=store, context=ctx)
    assert (report.written, report.files, report.cursor_after.position.get("after_key")) == (3, 1, "audit/a.ndjson")

    mapping = {
        "source_event_id": "$.event_id",
        "event_timestamp": "$.ts",
        "actor": "$.user",
        "action": "$.kind",
        "target": "$.model",
        "cost_usd": "$.cost",
        "tokens_input": "$.tin",
        "tokens_output": "$.tout",
    }
    csv_source = sources.load(s3_source(moto_url, name="csv_drop", prefix="csv/", parser="csv", eventMapping=mapping))
    assert run_pull(csv_source, store=store, context=ctx).written == 3
    row = store.tail(source="csv_drop", limit=1)[0]
    assert (row["actor"], row["cost_usd"], row["tokens_input"], row["tokens_output"]) == ("user5@acme.example", 0, 7, 3)

    js = sources.load(s3_source(moto_url, name="json_drop", prefix="json/", parser="json-array"))
    assert run_pull(js, store=store, context=ctx).written == 3
    assert stored_ids(store) == sorted(e["id"] for e in events)


def test_gz_files_are_decompressed(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, moto_url: str, ctx: PullContext
) -> None:
    s3.put_object(Bucket="audit-drops", Key="audit/2026-03-01.ndjson.gz", Body=gz(ndjson(make_events(50))))
    s3.put_object(
        Bucket="audit-drops", Key="audit/2026-03-02.json.gz", Body=gz(json.dumps(make_events(5, start=50)).encode())
    )
    nd = sources.load(s3_source(moto_url, maxFilesPerRun=1))
    assert run_pull(nd, store=store, context=ctx).written == 50
    js = sources.load(s3_source(moto_url, name="js", parser="json-array"))
    report = run_pull(
        js, store=store, context=ctx, start=CursorState(position={"after_key": "audit/2026-03-01.ndjson.gz"})
    )
    assert report.written == 5


@pytest.mark.slow
def test_more_than_1000_keys_across_two_pulls_listing_only_new_keys(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, proxy: tuple[S3Proxy, str], ctx: PullContext
) -> None:
    recorder, endpoint = proxy
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(
                    Bucket="audit-drops", Key=f"audit/{i:05d}.ndjson", Body=ndjson(make_events(1, start=i))
                ),
                range(1100),
            )
        )
    source = sources.load(s3_source(endpoint, maxFilesPerRun=1020))
    first = run_pull(source, store=store, context=ctx)
    assert (first.written, first.files, first.drained) == (1020, 1020, False)
    assert first.cursor_after.position.get("after_key") == "audit/01019.ndjson"
    lists = [q for m, p, q, _ in recorder.seen if "list-type" in q]
    assert len(lists) == 2 and "continuation-token" in lists[1]  # past the 1,000-key page
    recorder.seen.clear()
    second = run_pull(source, store=store, context=ctx, start=first.cursor_after)
    assert (second.written, second.drained, second.cursor_after.position.get("after_key")) == (
        80,
        True,
        "audit/01099.ndjson",
    )
    lists = [q for m, p, q, _ in recorder.seen if "list-type" in q]
    assert lists[0]["start-after"] == ["audit/01019.ndjson"] and len(lists) == 1
    assert len(stored_ids(store)) == 1100


def test_resume_new_keys_and_a_late_key_before_the_cursor(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, moto_url: str, ctx: PullContext
) -> None:
    s3.put_object(Bucket="audit-drops", Key="audit/2026-03-01.ndjson", Body=ndjson(make_events(2)))
    s3.put_object(Bucket="audit-drops", Key="audit/2026-03-03.ndjson", Body=ndjson(make_events(2, start=2)))
    source = sources.load(s3_source(moto_url))
    first = run_pull(source, store=store, context=ctx)
    assert first.cursor_after.position.get("after_key") == "audit/2026-03-03.ndjson" and first.written == 4

    quiet = run_pull(source, store=store, context=ctx, start=first.cursor_after)
    assert (quiet.files, quiet.written, quiet.cursor_after.position.get("after_key")) == (
        0,
        0,
        "audit/2026-03-03.ndjson",
    )

    s3.put_object(Bucket="audit-drops", Key="audit/2026-03-04.ndjson", Body=ndjson(make_events(2, start=4)))
    s3.put_object(Bucket="audit-drops", Key="audit/2026-03-02.ndjson", Body=ndjson(make_events(2, start=6)))
    nxt = run_pull(source, store=store, context=ctx, start=quiet.cursor_after)
    assert (nxt.files, nxt.written) == (1, 2)  # the late key sorts before the cursor: polling skips it
    assert "evt_00006" not in stored_ids(store)
    # A window re-pull of the time it was uploaded reads it (and dedup absorbs the rest).
    now = datetime.now(UTC)
    window = Window(now - timedelta(hours=1), now + timedelta(hours=1))
    repull = run_pull(source, store=store, context=ctx, start=nxt.cursor_after, window=window)
    assert (repull.files, repull.written, repull.duplicates) == (4, 2, 6)
    assert repull.cursor_after == nxt.cursor_after
    assert len(stored_ids(store)) == 8


def test_bad_lines_and_rows_are_rejected_with_key_and_line(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, moto_url: str, ctx: PullContext
) -> None:
    good = ndjson(make_events(2))
    s3.put_object(
        Bucket="audit-drops", Key="audit/a.ndjson", Body=good + b"{not json\n" + ndjson(make_events(1, start=2))
    )
    s3.put_object(Bucket="audit-drops", Key="csv/b.csv", Body=b"id,created_at\nx1,2026-03-01T00:00:00Z\nx2\n")
    report = run_pull(sources.load(s3_source(moto_url)), store=store, context=ctx)
    assert (report.written, report.rejected, report.cursor_after.position.get("after_key")) == (3, 1, "audit/a.ndjson")
    csv_src = sources.load(
        s3_source(
            moto_url,
            name="c",
            prefix="csv/",
            parser="csv",
            eventMapping={"source_event_id": "$.id", "event_timestamp": "$.created_at"},
        )
    )
    assert run_pull(csv_src, store=store, context=ctx).rejected == 1
    rows = store._conn.execute("SELECT location, reason, raw_record FROM pulled_events_rejected ORDER BY id").fetchall()
    assert rows[0][0] == "s3://audit-drops/audit/a.ndjson line 3" and rows[0][1].startswith("malformed NDJSON line")
    assert rows[0][2] == "{not json"
    assert rows[1] == ("s3://audit-drops/csv/b.csv line 3", "CSV row has 1 columns, the header has 2", "x2")


@pytest.mark.parametrize("fault", ["truncated gzip", "access denied"])
def test_an_unreadable_file_fails_the_pull_and_is_retried(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, proxy: tuple[S3Proxy, str], ctx: PullContext, fault: str
) -> None:
    recorder, endpoint = proxy
    s3.put_object(Bucket="audit-drops", Key="audit/1.ndjson", Body=ndjson(make_events(2)))
    whole = gz(ndjson(make_events(200, start=2)))
    bad_key = "audit/2.ndjson.gz"
    if fault == "truncated gzip":
        s3.put_object(Bucket="audit-drops", Key=bad_key, Body=whole[: len(whole) // 2])
    else:
        s3.put_object(Bucket="audit-drops", Key=bad_key, Body=whole)
        recorder.denied.add(bad_key)
    s3.put_object(Bucket="audit-drops", Key="audit/3.ndjson", Body=ndjson(make_events(1, start=300)))
    source = sources.load(s3_source(endpoint))
    with pytest.raises(PullError, match=rf"source 'audit_drop': cannot read s3://audit-drops/{bad_key}: ") as info:
        run_pull(source, store=store, context=ctx)
    assert ("AccessDenied (HTTP 403)" if fault == "access denied" else "EOFError") in str(info.value)
    assert "first-secret-value-0001" not in str(info.value)
    assert "evt_00300" not in stored_ids(store)  # nothing past the bad file
    s3.put_object(Bucket="audit-drops", Key=bad_key, Body=whole)
    recorder.denied.clear()
    retry = run_pull(source, store=store, context=ctx)  # the cursor never moved: from the start again
    assert retry.cursor_after.position.get("after_key") == "audit/3.ndjson"
    assert len(stored_ids(store)) == 203


def test_rotated_keys_sign_the_next_pull(
    s3: Any,
    sources: SourceWriter,
    store: SqliteTraceStore,
    proxy: tuple[S3Proxy, str],
    ctx: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder, endpoint = proxy
    s3.put_object(Bucket="audit-drops", Key="audit/1.ndjson", Body=ndjson(make_events(1)))
    source = sources.load(s3_source(endpoint))
    first = run_pull(source, store=store, context=ctx)
    assert recorder.key_ids() == {"AKIAFIRSTKEY0001"}
    recorder.seen.clear()
    monkeypatch.setenv("DROP_KEY_ID", "AKIAROTATEDKEY02")
    monkeypatch.setenv("DROP_SECRET", "rotated-secret-value-0002")
    s3.put_object(Bucket="audit-drops", Key="audit/2.ndjson", Body=ndjson(make_events(1, start=1)))
    second = run_pull(source, store=store, context=ctx, start=first.cursor_after)
    assert second.written == 1
    assert recorder.key_ids() == {"AKIAROTATEDKEY02"}
    assert ADMIN_KEY[0] not in recorder.key_ids()


def test_window_prefix_lists_only_the_window_folder(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, proxy: tuple[S3Proxy, str], ctx: PullContext
) -> None:
    recorder, endpoint = proxy
    s3.put_object(Bucket="audit-drops", Key="audit/2026/03/01/a.ndjson", Body=ndjson(make_events(2)))
    s3.put_object(Bucket="audit-drops", Key="audit/2026/03/02/b.ndjson", Body=ndjson(make_events(2, start=2)))
    source = sources.load(s3_source(endpoint, windowPrefix="audit/${{window.start:%Y/%m/%d}}/"))
    window = Window(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    report = run_pull(source, store=store, context=ctx, window=window)
    assert (report.files, report.written) == (1, 2)
    assert [q["prefix"] for _, _, q, _ in recorder.seen if "list-type" in q] == [["audit/2026/03/02/"]]


def test_s3_source_validation(sources: SourceWriter, moto_url: str) -> None:
    sources.write(
        s3_source(
            moto_url,
            credentials={"aws_access_key_id": {"env": "X"}, "token": {"env": "Y"}},
            parser="xml",
            windowPrefix="${{window.middle}}",
        )
    )
    problems = [p.split(": ", 2)[2] for p in load_sources(sources.directory, adapters=ADAPTERS).problems]
    assert problems == ["parser: Input should be 'ndjson', 'csv' or 'json-array'"]
    sources.write(
        s3_source(
            moto_url,
            credentials={"aws_access_key_id": {"env": "X"}, "token": {"env": "Y"}},
            windowPrefix="${{window.middle}}",
        )
    )
    problems = [p.split(": ", 2)[2] for p in load_sources(sources.directory, adapters=ADAPTERS).problems]
    assert sorted(problems) == sorted(
        [
            "windowPrefix: unknown template variable ${{window.middle}} (window fields: start, end)",
            "credentials.token: s3_polling takes aws_access_key_id, aws_secret_access_key, aws_session_token",
            "credentials: set both aws_access_key_id and aws_secret_access_key, or neither",
        ]
    )


@pytest.fixture
def moto_subprocess() -> Any:
    """moto's server in its own process: the memory measured below is then the pull's alone."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, f"moto's server exited ({proc.returncode}) before it answered"
                assert time.monotonic() < deadline, "moto's server did not answer within 30s"
                time.sleep(0.1)  # polling for the server to answer, bounded by the deadline
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_a_large_file_is_pulled_with_bounded_memory(
    moto_subprocess: str, sources: SourceWriter, store: SqliteTraceStore, ctx: PullContext
) -> None:
    client = admin_client(moto_subprocess)
    client.create_bucket(Bucket="audit-drops")
    events = make_events(40_000)
    body = ndjson(events)
    assert len(body) > 8_000_000
    client.put_object(Bucket="audit-drops", Key="audit/big.ndjson.gz", Body=gz(body))
    client.put_object(Bucket="audit-drops", Key="small/quarter.ndjson.gz", Body=gz(ndjson(make_events(10_000))))
    del events, body

    def peak_for(name: str, prefix: str) -> tuple[int, int]:
        source = sources.load(s3_source(moto_subprocess, name=name, prefix=prefix))
        tracemalloc.start()
        try:
            report = run_pull(source, store=store, context=ctx)
            return report.written, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = peak_for("small", "small/")
    large = peak_for("large", "audit/")
    assert (small[0], large[0]) == (10_000, 40_000)
    # Four times the file (9 MB of NDJSON, about 70 MB as Python objects): the same peak, a few pages.
    assert large[1] - small[1] < 1_500_000, (small, large)
    assert large[1] < 25_000_000, large


def test_s3_source_in_dagster_commits_the_last_key_after_success(
    s3: Any, sources: SourceWriter, proxy: tuple[S3Proxy, str], tmp_path: Any
) -> None:
    recorder, endpoint = proxy
    for i in range(3):
        s3.put_object(Bucket="audit-drops", Key=f"audit/{i}.ndjson", Body=ndjson(make_events(2, start=2 * i)))
    sources.write(s3_source(endpoint, maxFilesPerRun=2))
    with dg.instance_for_test() as instance:
        harness = make_harness(
            sources.directory, instance, Clock(datetime(2026, 3, 2, 10, 1, tzinfo=UTC)), tmp_path, "audit_drop"
        )
        spec = next(iter(harness.project.defs.resolve_all_asset_specs()))
        assert spec.kinds == {"s3"} and "s3://audit-drops/audit/" in spec.description
        first = harness.tick(None)
        assert harness.run(first.run_requests[0]).success
        metadata = instance.get_latest_materialization_event(spec.key).asset_materialization.metadata
        assert (metadata["files"].value, metadata["events_written"].value, metadata["drained"].value) == (2, 4, False)
        harness.clock.now = datetime(2026, 3, 2, 10, 10, 5, tzinfo=UTC)
        second = harness.tick(first.cursor)
        assert committed(second.cursor)["after_key"] == "audit/1.ndjson"
        assert harness.run(second.run_requests[0]).success
        assert len(harness.rows()) == 6
    assert recorder.key_ids() == {"AKIAFIRSTKEY0001"}  # signed with the source's own keys, via S3Resource


def test_preview_reads_the_first_file_only(s3: Any, sources: SourceWriter, moto_url: str) -> None:
    s3.put_object(Bucket="audit-drops", Key="audit/1.ndjson", Body=ndjson(make_events(2)) + b"oops\n")
    s3.put_object(Bucket="audit-drops", Key="audit/2.ndjson", Body=ndjson(make_events(2, start=2)))
    sources.write(s3_source(moto_url))
    result = CliRunner().invoke(main, ["preview", "audit_drop", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("source_event_id") for line in lines] == ["evt_00000", "evt_00001", None]
    assert lines[2]["location"] == "s3://audit-drops/audit/1.ndjson line 3"
