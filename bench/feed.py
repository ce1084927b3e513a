"""The benchmark's data and servers: an audit-log API and an S3 bucket on loopback, each in its own process.

The servers run in a process of their own (``python bench/feed.py http|s3 ...``) so their CPU does not
compete with the measured process for the GIL, and the HTTP pages are rendered to bytes once, up front,
so the server is never what is measured. Events are ~230 bytes each, shaped like the demo's usage feed.

    python bench/feed.py http --events 100000 --page-size 1000
    python bench/feed.py s3 --events 100000 --files 4 --listing-old 10000 --listing-new 10
    python bench/feed.py quiet --sources 60 --fresh   # the daemon bench: N quiet APIs in one process

Each prints ``READY <port>`` on stdout once it serves, then runs until its stdin closes.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster_tests.helpers import free_port

T0 = datetime(2026, 11, 1, tzinfo=UTC)
"""Events are one second apart from here: 1M events end 11.6 days later, never in the future."""
START_DATE = "2026-11-01"
EVENTS_PATH = "/v1/events"
STATS_PATH = "/stats"
BUCKET = "bench-audit"
EVENTS_PREFIX = "events/"
LISTING_PREFIX = "listing/"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench-key-id",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Fake credentials for moto, given to every S3 contender through its environment."""

EVENT_MAPPING = {
    "source_event_id": "$.id",
    "event_timestamp": "$.timestamp",
    "actor": "$.user",
    "action": "$.operation",
    "target": "$.model",
    "cost_usd": "$.cost.usd",
    "tokens_input": "$.usage.input_tokens",
    "tokens_output": "$.usage.output_tokens",
}
"""The eventMapping of the bench events (the field names of ``demo_usage.yaml``)."""

_OPERATIONS = ("messages.create", "messages.count_tokens", "files.upload", "batches.create")
_MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")


def event_json(i: int, spacing: float = 1.0, origin: datetime = T0) -> str:
    """Event ``i`` as compact-ish JSON text (~230 bytes); built as text so 1M of them take about a second.
    Dated ``origin`` + ``i * spacing`` seconds (whole seconds) + ``i % 1000`` ms."""
    t = origin + timedelta(seconds=int(i * spacing))
    return (
        f'{{"id": "evt_{i:08d}", "timestamp": "{t:%Y-%m-%dT%H:%M:%S}.{i % 1000:03d}Z", '
        f'"user": "user{i % 997}@acme.example", "operation": "{_OPERATIONS[i % 4]}", '
        f'"model": "{_MODELS[i % 3]}", '
        f'"cost": {{"usd": {(i % 5000) / 1e6:.6f}}}, '
        f'"usage": {{"input_tokens": {100 + i % 4000}, "output_tokens": {20 + i % 900}}}}}'
    )


def event_time(i: int, spacing: float = 1.0, origin: datetime = T0) -> datetime:
    return origin + timedelta(seconds=int(i * spacing), milliseconds=i % 1000)


def ndjson_chunks(start: int, stop: int, *, lines_per_chunk: int = 10_000) -> Iterator[bytes]:
    """Events ``start``..``stop`` as NDJSON, a chunk at a time."""
    for lo in range(start, stop, lines_per_chunk):
        hi = min(stop, lo + lines_per_chunk)
        yield ("\n".join(event_json(i) for i in range(lo, hi)) + "\n").encode()


class PageFeed:
    """``GET /v1/events[?cursor=<offset>][&since=<iso>]`` -> ``{"data": [...], "next_cursor": "<offset>"|null}``.

    Pages of the whole feed are pre-rendered bytes. ``since`` (the incremental filter a drained source
    sends) keeps events dated after it: empty when nothing is newer (an idle poll), else pages rendered
    on the fly (no measured path takes that branch). ``visible`` caps the feed (a growing backlog)."""

    def __init__(self, n: int, page_size: int, *, spacing: float = 1.0, origin: datetime = T0):
        self.n = n
        self.visible = n
        self.page_size = page_size
        self.items = [event_json(i, spacing, origin).encode() for i in range(n)]
        self.times = [event_time(i, spacing, origin) for i in range(n)]
        self.pages = [self._render(0, offset) for offset in range(0, n, page_size)] or [self._render(0, 0)]
        self.served = 0

    def _render(self, first: int, offset: int) -> bytes:
        lo = first + offset
        hi = min(self.visible, lo + self.page_size)
        more = hi < self.visible
        cursor = f'"{offset + self.page_size}"' if more else "null"
        return b'{"data": [' + b", ".join(self.items[lo:hi]) + b'], "next_cursor": ' + cursor.encode() + b"}"

    def __call__(self, request: Request) -> Response:
        self.served += 1
        since = request.arg("since")
        first = 0
        if since:
            bound = datetime.fromisoformat(since)
            first = bisect.bisect_right(self.times, bound if bound.tzinfo else bound.replace(tzinfo=UTC))
        offset = int(request.arg("cursor") or 0)
        if first == 0 and self.visible == self.n and offset % self.page_size == 0:
            body = self.pages[min(offset // self.page_size, len(self.pages) - 1)]
        else:
            body = self._render(first, offset)
        return Response(200, body, {"Content-Type": "application/json"})

    def control(self, request: Request) -> Response:
        """``/stats``: requests served so far; ``/stats?visible=N`` also caps the feed at N events."""
        if request.arg("visible") is not None:
            self.visible = min(self.n, int(request.arg("visible") or 0))
        return Response(200, {"requests": self.served, "visible": self.visible, "events": self.n})


def serve_http(events: int, page_size: int, span_days: float | None = None) -> None:
    """``span_days``: the events spread evenly over that many days ending at ``T0`` (a history
    backfill), instead of one second apart from ``T0``."""
    if span_days is None:
        feed = PageFeed(events, page_size)
    else:
        feed = PageFeed(events, page_size, spacing=span_days * 86_400 / events, origin=T0 - timedelta(days=span_days))
    with LoopbackServer({EVENTS_PATH: feed, STATS_PATH: feed.control}) as server:
        _ready_then_wait(server.port)


QUIET_PREFIX = "/q/"
QUIET_EVENTS = "/events"
FRESH = "fresh"
"""The quiet feed's source with data appearing mid-run (``/publish``)."""


def quiet_url(base_url: str, name: str) -> str:
    return f"{base_url}{QUIET_PREFIX}{name}{QUIET_EVENTS}"


def quiet_event(name: str, k: int, t: datetime) -> dict[str, Any]:
    """Event ``k`` of source ``name`` at ``t``, in the bench's event shape (EVENT_MAPPING)."""
    return {
        "id": f"{name}-{k:06d}",
        "timestamp": t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user": f"user{k}@acme.example",
        "operation": _OPERATIONS[k % 4],
        "model": _MODELS[k % 3],
        "cost": {"usd": 0.0001},
        "usage": {"input_tokens": 100, "output_tokens": 20},
    }


class QuietFeed:
    """Many audit-log APIs in one process, each at ``/q/<name>/events``, with nothing new: each holds one
    event from an hour ago (its first pull stores it and sets the watermark), and a request whose
    ``since`` is at or after it gets ``{"data": [], "next_cursor": null}`` (the filter is exclusive).
    Every request's arrival is recorded per source (``/stats``); ``/publish?source=fresh`` adds an
    event dated now to the ``fresh`` source and answers its id and when it was published."""

    def __init__(self, names: list[str]):
        old = datetime.now(UTC) - timedelta(hours=1)
        self.events = {name: [quiet_event(name, 0, old)] for name in names}
        self.hits: dict[str, list[float]] = {name: [] for name in names}
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        name = request.path.removeprefix(QUIET_PREFIX).removesuffix(QUIET_EVENTS)
        if name not in self.events or not request.path.startswith(QUIET_PREFIX):
            return Response(404, {"error": f"no source at {request.path}"})
        with self.lock:
            self.hits[name].append(time.time())
            events = list(self.events[name])
        since = request.arg("since")
        if since:
            bound = datetime.fromisoformat(since)
            bound = bound if bound.tzinfo else bound.replace(tzinfo=UTC)
            events = [e for e in events if datetime.fromisoformat(e["timestamp"]) > bound]
        return Response(200, {"data": events, "next_cursor": None})

    def control(self, request: Request) -> Response:
        """``/stats``: every request's arrival per source; ``/stats?after=T`` only those at or after T."""
        after = float(request.arg("after") or 0)
        with self.lock:
            hits = {name: [t for t in times if t >= after] for name, times in self.hits.items()}
        return Response(200, {"hits": hits, "requests": sum(len(t) for t in self.hits.values())})

    def publish(self, request: Request) -> Response:
        name = request.arg("source") or FRESH
        with self.lock:
            published = time.time()
            event = quiet_event(name, len(self.events[name]), datetime.fromtimestamp(published, UTC))
            self.events[name].append(event)
        return Response(200, {"id": event["id"], "published_at": published})


def serve_quiet(sources: int, fresh: bool) -> None:
    feed = QuietFeed([f"quiet_{i:03d}" for i in range(sources)] + ([FRESH] if fresh else []))
    with LoopbackServer({STATS_PATH: feed.control, "/publish": feed.publish}, fallback=feed) as server:
        _ready_then_wait(server.port)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def file_keys(events: int, files: int) -> list[tuple[str, int, int]]:
    """(key, first event, stop) of each NDJSON file holding the ``events`` events."""
    per_file = -(-events // files)
    return [
        (f"{EVENTS_PREFIX}part-{k:05d}.ndjson", lo, min(events, lo + per_file))
        for k, lo in enumerate(range(0, events, per_file))
    ]


def listing_keys(old: int, new: int) -> tuple[list[str], list[str]]:
    """Keys of the listing check: ``old`` already pulled, ``new`` uploaded since (they sort after)."""
    return (
        [f"{LISTING_PREFIX}old-{i:06d}.ndjson" for i in range(old)],
        [f"{LISTING_PREFIX}zz-new-{i:06d}.ndjson" for i in range(new)],
    )


def serve_s3(events: int, files: int, listing_old: int, listing_new: int) -> None:
    """moto's S3 server, seeded with ``events`` events in ``files`` NDJSON files under ``events/``, and
    ``listing_old + listing_new`` one-event files under ``listing/`` (event ids past the big files')."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = s3_client(f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket=BUCKET)
        for key, lo, hi in file_keys(events, files):
            client.put_object(Bucket=BUCKET, Key=key, Body=b"".join(ndjson_chunks(lo, hi)))
        old, new = listing_keys(listing_old, listing_new)

        def put(item: tuple[int, str]) -> None:
            i, key = item
            client.put_object(Bucket=BUCKET, Key=key, Body=(event_json(events + i) + "\n").encode())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, enumerate(old + new)))
        _ready_then_wait(port)
    finally:
        server.stop()


def _ready_then_wait(port: int) -> None:
    print(f"READY {port}", flush=True)
    sys.stdin.read()  # the harness closes our stdin (or dies) when it is done with us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http")
    http.add_argument("--events", type=int, required=True)
    http.add_argument("--page-size", type=int, default=1000)
    http.add_argument("--span-days", type=float, default=None)
    s3 = sub.add_parser("s3")
    s3.add_argument("--events", type=int, required=True)
    s3.add_argument("--files", type=int, default=4)
    s3.add_argument("--listing-old", type=int, default=10_000)
    s3.add_argument("--listing-new", type=int, default=10)
    quiet = sub.add_parser("quiet")
    quiet.add_argument("--sources", type=int, required=True)
    quiet.add_argument("--fresh", action="store_true", help=f"also serve {FRESH!r}, whose data /publish adds")
    args = parser.parse_args()
    if args.kind == "http":
        serve_http(args.events, args.page_size, args.span_days)
    elif args.kind == "quiet":
        serve_quiet(args.sources, args.fresh)
    else:
        serve_s3(args.events, args.files, args.listing_old, args.listing_new)


if __name__ == "__main__":
    main()
