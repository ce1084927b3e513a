"""What the benchmark runs in a child process of the project's interpreter, one contender per process,
so each one's peak RSS and CPU time are its own (the harness reads them from ``wait4``).

    python bench/children.py engine --sources DIR --name NAME --db PATH
    python bench/children.py plain-http --url URL --db PATH
    python bench/children.py plain-s3 --endpoint URL --bucket B --prefix P --db PATH
    python bench/children.py s3-listing --sources DIR --name NAME --after KEY --db PATH
    python bench/children.py reaper -- dagster-daemon run -w workspace.yaml

Each prints one JSON line on stdout: ``{"rows": <events written>, "seconds": <time after imports>, ...}``.
The harness checks the row count itself, in the store, after the process exits. The reaper instead
reports the CPU time of a whole process tree (see ``reaper``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PLAIN_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS e (source_name TEXT, source_event_id TEXT, event_timestamp TEXT, actor TEXT, "
    "action TEXT, target TEXT, cost_usd REAL, tokens_input INT, tokens_output INT, raw_payload TEXT, "
    "UNIQUE (source_name, source_event_id))"
)
PLAIN_INSERT = "INSERT OR IGNORE INTO e VALUES (?,?,?,?,?,?,?,?,?,?)"


def _plain_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(PLAIN_SCHEMA)
    return conn


def _plain_row(e: dict[str, Any]) -> tuple[Any, ...]:
    """The fields a hand-written puller picks by hand, plus the raw payload: no validation, no parsing."""
    usage = e["usage"]
    return (
        "bench", e["id"], e["timestamp"], e["user"], e["operation"], e["model"],
        e["cost"]["usd"], usage["input_tokens"], usage["output_tokens"], json.dumps(e),
    )  # fmt: skip


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(PLAIN_INSERT, rows)
    conn.execute("COMMIT")


def plain_http(url: str, db: str) -> dict[str, Any]:
    """Fetch a page, parse it, insert-or-ignore it, follow ``next_cursor``: the baseline."""
    import httpx

    t = time.perf_counter()
    conn = _plain_db(db)
    n, cursor, pages = 0, None, 0
    with httpx.Client(timeout=60) as client:
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            response = client.get(url, params=params)
            response.raise_for_status()
            doc = json.loads(response.content)
            rows = [_plain_row(e) for e in doc["data"]]
            _insert(conn, rows)
            n += len(rows)
            pages += 1
            cursor = doc.get("next_cursor")
            if not cursor:
                break
    conn.close()
    return {"rows": n, "pages": pages, "seconds": time.perf_counter() - t}


def plain_s3(endpoint: str, bucket: str, prefix: str, db: str) -> dict[str, Any]:
    """List, stream each NDJSON object line by line, parse, insert-or-ignore in batches of 2,000."""
    import boto3

    t = time.perf_counter()
    client = boto3.client("s3", endpoint_url=endpoint)
    conn = _plain_db(db)
    n = files = 0
    for listing in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in listing.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
            rows: list[tuple[Any, ...]] = []
            for line in body.iter_lines(chunk_size=1 << 16):
                if line:
                    rows.append(_plain_row(json.loads(line)))
                    if len(rows) >= 2000:
                        _insert(conn, rows)
                        n += len(rows)
                        rows = []
            _insert(conn, rows)
            n += len(rows)
            files += 1
    conn.close()
    return {"rows": n, "files": files, "seconds": time.perf_counter() - t}


def _load_source(sources: str, name: str) -> Any:
    from pullmode_dagster.engine.adapters import ADAPTERS
    from pullmode_dagster.engine.declare.loading import load_sources

    return load_sources(sources, adapters=ADAPTERS).get(name)  # as `pullmode preview` loads one source


def engine(sources: str, name: str, db: str) -> dict[str, Any]:
    """``run_pull`` alone, from an empty cursor into a fresh SQLite store: no Dagster."""
    from pullmode_dagster.engine.pull import run_pull
    from pullmode_dagster.engine.store import SqliteTraceStore

    t = time.perf_counter()
    source = _load_source(sources, name)
    with SqliteTraceStore(db) as store:
        report = run_pull(source, store=store)
    seconds = time.perf_counter() - t
    if not report.drained:
        raise SystemExit(f"{name}: the pull did not drain ({report.summary()})")
    return {
        "rows": report.written,
        "pages": report.pages,
        "files": report.files,
        "rejected": report.rejected,
        "seconds": seconds,
    }


class CountingS3:
    """A boto3 client that counts the calls (and keys listed) a pull makes."""

    def __init__(self, client: Any):
        self._client = client
        self.lists = self.keys_listed = self.gets = 0

    def list_objects_v2(self, **kw: Any) -> Any:
        response = self._client.list_objects_v2(**kw)
        self.lists += 1
        self.keys_listed += len(response.get("Contents", []))
        return response

    def get_object(self, **kw: Any) -> Any:
        self.gets += 1
        return self._client.get_object(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def s3_listing(sources: str, name: str, after: str, db: str) -> dict[str, Any]:
    """An S3 poll whose cursor is at the last old key: what it lists and reads. Also, for contrast, what
    listing the whole prefix (no ``StartAfter``) would cost."""
    from pullmode_dagster.engine.adapters import PullContext
    from pullmode_dagster.engine.adapters.s3_polling import boto3_client
    from pullmode_dagster.engine.cursor import CursorState
    from pullmode_dagster.engine.pull import run_pull
    from pullmode_dagster.engine.store import SqliteTraceStore

    source = _load_source(sources, name)
    clients: list[CountingS3] = []

    def factory(spec: Any) -> Any:
        clients.append(CountingS3(boto3_client(spec)))
        return clients[-1]

    start = CursorState(position={"after_key": after})
    with SqliteTraceStore(db) as store:
        report = run_pull(source, store=store, start=start, context=PullContext(s3_client_factory=factory))
    counted = clients[0]
    full_lists = full_keys = 0
    for page in counted._client.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=source.prefix):
        full_lists += 1
        full_keys += len(page.get("Contents", []))
    return {
        "rows": report.written,
        "files": report.files,
        "list_calls": counted.lists,
        "keys_listed": counted.keys_listed,
        "get_calls": counted.gets,
        "full_listing_calls": full_lists,
        "full_listing_keys": full_keys,
        "cursor_after": report.cursor_after.position.get("after_key"),
    }


def dagster_floor(home: str) -> dict[str, Any]:
    """Dagster's own cost of one recorded run, none of ours: a no-op asset materialized in process on
    a persistent SQLite instance at ``home``, as a poll's run is. What an idle poll cannot go below."""
    import dagster as dg

    @dg.asset
    def noop():  # type: ignore[no-untyped-def]  # a string annotation (this module's __future__ import) fails here
        return dg.MaterializeResult(metadata={"events_written": 0})

    t = time.perf_counter()
    instance = dg.DagsterInstance.from_config(home)
    result = dg.materialize([noop], instance=instance)
    return {"ok": result.success, "seconds": time.perf_counter() - t}


PR_SET_CHILD_SUBREAPER = 36
REAPER_GRACE_SECONDS = 30.0
"""After the command exits, how long its leftover descendants get to exit before they are killed."""


def own_children() -> list[int]:
    """This process's live children (orphans included: it is their subreaper)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


def reaper(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` (in a session of its own) as a child subreaper: every descendant that outlives its
    parent (a code server, a run worker) is re-parented here and reaped, so RUSAGE_CHILDREN at the end
    holds the CPU time of the whole tree, exited processes included. SIGTERM is passed on to the
    command's process group; once the command has exited, leftovers get REAPER_GRACE_SECONDS, then
    SIGKILL (by pid, only this process's own children)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    # Its output goes to our stderr: our stdout is the one JSON line.
    command = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
    exit_code: int | None = None

    def send(signum: int, *, group: bool = False) -> None:
        for pid in [command.pid] if group else own_children():
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.killpg(pid, signum) if group else os.kill(pid, signum)

    signal.signal(signal.SIGTERM, lambda *_: send(signal.SIGTERM, group=True))
    signal.signal(signal.SIGALRM, lambda *_: send(signal.SIGKILL))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break  # no child left: the whole tree is reaped
        if pid == command.pid:
            exit_code = os.waitstatus_to_exitcode(status)
            send(signal.SIGTERM)
            signal.alarm(int(REAPER_GRACE_SECONDS))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"exit_code": exit_code, "user": usage.ru_utime, "sys": usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    if sys.argv[1:2] == ["reaper"]:  # its command's own arguments are not ours to parse
        print(json.dumps(reaper(sys.argv[sys.argv.index("--") + 1 :])), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("dagster-floor")
    p.add_argument("--home", required=True)
    p = sub.add_parser("engine")
    p.add_argument("--sources", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--db", required=True)
    p = sub.add_parser("plain-http")
    p.add_argument("--url", required=True)
    p.add_argument("--db", required=True)
    p = sub.add_parser("plain-s3")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--db", required=True)
    p = sub.add_parser("s3-listing")
    p.add_argument("--sources", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--after", required=True)
    p.add_argument("--db", required=True)
    args = parser.parse_args()
    if args.mode == "dagster-floor":
        result = dagster_floor(args.home)
    elif args.mode == "engine":
        result = engine(args.sources, args.name, args.db)
    elif args.mode == "plain-http":
        result = plain_http(args.url, args.db)
    elif args.mode == "plain-s3":
        result = plain_s3(args.endpoint, args.bucket, args.prefix, args.db)
    else:
        result = s3_listing(args.sources, args.name, args.after, args.db)
    result.update(io_counters())
    print(json.dumps(result), flush=True)


def io_counters() -> dict[str, float]:
    """MB this process passed to write() and read() (the store's write amplification shows here)."""
    try:
        fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    except OSError:
        return {}
    return {"written_mb": int(fields["wchar"]) / 1e6, "read_mb": int(fields["rchar"]) / 1e6}


if __name__ == "__main__":
    main()
