"""A fault-injection HTTP server, and the poller's commit loop driven against it.

:class:`FaultServer` serves a known feed of events in the body-cursor style of
:class:`~pullmode_dagster_tests.fakes.CursorFeed` (``{"data": [...], "next_cursor": "<offset>"}``,
``created_after`` as the incremental filter) over a raw socket on 127.0.0.1, writing every byte
itself, so it can misbehave the ways real APIs and proxies do: 429 with ``Retry-After``, 500, 503,
a connection closed before any response or reset mid-body, a slow answer, a body trickled a byte at
a time slower than the client's timeout, a body shorter than its ``Content-Length``, a
connection-close-delimited JSON cut short, an HTML page or invalid JSON under status 200.

Each response's fate is drawn independently with the configured probabilities from a generator
seeded with ``(seed, request number)``: a client that sends one request at a time (a pull does)
meets the same faults in the same order on every run. The server is bounded: it answers at most
``max_requests`` requests (then 410, which is not retried), shuts itself down after
``lifetime_seconds``, and no connection outlives ``trickle_max_seconds`` or its socket timeout.

:func:`drive` runs pulls the way the poller commits them: ``cursor_after`` after a success, the
failed pull's ``report.checkpoint`` after a failure (or nothing, to show what checkpoints buy),
until a pull drains with nothing new; it checks after every failure that the checkpoint is never
ahead of the store.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import random
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pullmode_dagster.engine.adapters import PullContext
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.errors import PullmodeError
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.pull import PullReport, run_pull
from pullmode_dagster.engine.store import TraceStore

from .documents import http_source, parsed
from .helpers import Sleeps, stored_ids

FAULT_KINDS = (
    "429",  # Too Many Requests with Retry-After
    "500",
    "503",
    "close",  # the connection is closed (FIN) after the request is read, before any response
    "reset",  # the connection is reset (RST) after the request is read, before any response
    "reset_mid_body",  # headers and part of the body, then RST
    "slow",  # the whole response after slow_seconds (well within the client's timeout)
    "trickle",  # headers at once, then the body a byte every trickle_interval (slower than the timeout)
    "trickle_headers",  # the status line and headers themselves a byte every trickle_interval
    "truncated",  # Content-Length larger than what is sent, then a clean close
    "cut_eof",  # no Content-Length, Connection: close, JSON cut short at EOF
    "html",  # 200 with a proxy's HTML page
    "invalid_json",  # 200, application/json, not JSON
)

FAULT_MIXES: dict[str, dict[str, float]] = {
    # Half of all responses fail: a page fails (every attempt fails) one time in eight.
    "status": {"429": 0.17, "500": 0.17, "503": 0.16},
    "broken_bodies": {
        "close": 0.07,
        "reset": 0.07,
        "reset_mid_body": 0.07,
        "truncated": 0.07,
        "cut_eof": 0.07,
        "html": 0.07,
        "invalid_json": 0.08,
    },
    # Everything at once, a slow answer now and then, and a rare trickle cut off by the timeout.
    "everything": {
        "429": 0.06,
        "500": 0.06,
        "503": 0.06,
        "close": 0.045,
        "reset": 0.045,
        "reset_mid_body": 0.045,
        "truncated": 0.045,
        "cut_eof": 0.045,
        "html": 0.045,
        "invalid_json": 0.045,
        "trickle": 0.005,
        "slow": 0.05,
    },
}
"""Fault mixes the reliability tests and bench/reliability.py pull through."""


def failing(mix: Mapping[str, float]) -> float:
    """The probability that a response fails (all kinds but ``slow``, which still answers in time)."""
    return sum(p for kind, p in mix.items() if kind != "slow")


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)
INVALID_JSON = b'{"data": [{"id": "evt_00000", "created_at": 2026-03-01T00:00:00Z,}], "next_cursor": '
REASONS = {200: "OK", 404: "Not Found", 410: "Gone", 429: "Too Many Requests", 500: "Internal Server Error"}
REASONS |= {503: "Service Unavailable"}


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FaultServer:
    """Serves ``events`` (oldest first, like ``fakes.make_events``) at ``/v1/events`` in pages of
    ``page_size``, injecting faults with ``probabilities`` (kind -> probability, summing to at most 1).

    ``script`` forces the fault (or ``"ok"``) of the first requests, in order, before the seeded
    draw takes over. ``injected`` counts the faults sent by kind; ``requests`` every request.
    """

    def __init__(
        self,
        events: list[dict[str, Any]],
        *,
        page_size: int = 20,
        probabilities: Mapping[str, float] | None = None,
        seed: int = 0,
        script: Iterable[str] = (),
        retry_after: str = "1",
        slow_seconds: float = 0.05,
        trickle_interval: float = 0.2,
        trickle_max_seconds: float = 5.0,
        max_requests: int = 20_000,
        lifetime_seconds: float = 300.0,
        socket_timeout: float = 10.0,
    ):
        probabilities = dict(probabilities or {})
        unknown = set(probabilities) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s): {sorted(unknown)}")
        if sum(probabilities.values()) > 1 + 1e-9:
            raise ValueError("fault probabilities sum to more than 1")
        self.events = events
        self._times = [_parse_ts(e["created_at"]) for e in events]
        self.ids = [e["id"] for e in events]
        self.page_size = page_size
        self.probabilities = probabilities
        self.seed = seed
        self.script = list(script)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.trickle_interval = trickle_interval
        self.trickle_max_seconds = trickle_max_seconds
        self.max_requests = max_requests
        self.lifetime_seconds = lifetime_seconds
        self.socket_timeout = socket_timeout
        self.requests = 0
        self.pages_served = 0
        self.injected: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []
        """(fault or "ok", request target) per request, in order."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None
        server = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._handle(self.request)

        class _TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64

        self._tcp = _TCPServer(("127.0.0.1", 0), _Handler)

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._tcp.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/events"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._tcp.serve_forever, args=(0.05,), name="fault-server", daemon=True)
        self._thread.start()
        self._watchdog = threading.Timer(self.lifetime_seconds, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._tcp.shutdown()
        self._tcp.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the feed ----------------------------------------------------------------------------------

    def _visible_from(self, created_after: str | None) -> int:
        """Index of the first event the ``created_after`` filter lets through."""
        if not created_after:
            return 0
        return bisect.bisect_right(self._times, datetime.fromisoformat(created_after))

    def page(self, query: dict[str, list[str]]) -> bytes:
        first = self._visible_from((query.get("created_after") or [None])[0])
        offset = int((query.get("cursor") or ["0"])[0])
        start = first + offset
        page = self.events[start : start + self.page_size]
        more = start + self.page_size < len(self.events)
        doc = {"data": page, "next_cursor": str(offset + self.page_size) if more else None}
        return json.dumps(doc).encode()

    def covered(self, state: CursorState) -> set[str]:
        """The ids a cursor state claims are stored: everything up to its watermark, and the pages
        of the pagination it is in the middle of."""
        first = self._visible_from(state.watermark)
        return set(self.ids[: first + int(state.position.get("page_cursor") or 0)])

    # -- faults ------------------------------------------------------------------------------------

    def _draw(self) -> str:
        with self._lock:
            number = self.requests
            self.requests += 1
        if number < len(self.script):
            return self.script[number]
        if number >= self.max_requests:
            return "exhausted"
        u = random.Random(f"{self.seed}/{number}").random()
        for kind in FAULT_KINDS:
            p = self.probabilities.get(kind, 0.0)
            if u < p:
                return kind
            u -= p
        return "ok"

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(self.socket_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            target = _read_request(sock)
            if target is None:
                return
            fate = self._draw()
            with self._lock:
                self.log.append((fate, target))
                if fate not in ("ok", "exhausted"):
                    self.injected[fate] += 1
            parsed = urllib.parse.urlsplit(target)
            if parsed.path != "/v1/events":
                self._respond(sock, 404, b'{"error": "not found"}')
                return
            if fate == "exhausted":
                self._respond(sock, 410, b'{"error": "fault server: request budget exhausted"}')
                return
            self._serve(sock, fate, urllib.parse.parse_qs(parsed.query, keep_blank_values=True))
        except OSError:
            pass  # the client went away (after its timeout, say): nothing to answer
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self, sock: socket.socket, fate: str, query: dict[str, list[str]]) -> None:
        if fate == "429":
            self._respond(sock, 429, b'{"error": "rate limited"}', {"Retry-After": self.retry_after})
        elif fate in ("500", "503"):
            self._respond(sock, int(fate), b'{"error": "upstream trouble"}')
        elif fate == "close":
            sock.shutdown(socket.SHUT_RDWR)
        elif fate == "reset":
            _reset(sock)
        elif fate == "html":
            self._respond(sock, 200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        elif fate == "invalid_json":
            self._respond(sock, 200, INVALID_JSON)
        else:
            body = self.page(query)
            if fate == "reset_mid_body":
                sock.sendall(_head(200, {"Content-Length": str(len(body))}) + body[: len(body) // 2])
                _reset(sock)
            elif fate == "truncated":
                sock.sendall(_head(200, {"Content-Length": str(len(body))}) + body[: len(body) // 3])
                sock.shutdown(socket.SHUT_WR)
            elif fate == "cut_eof":
                sock.sendall(_head(200, {}) + body[: len(body) * 2 // 3])
                sock.shutdown(socket.SHUT_WR)
            elif fate == "trickle":
                sock.sendall(_head(200, {"Content-Length": str(len(body))}))
                self._trickle(sock, body)
            elif fate == "trickle_headers":
                self._trickle(sock, _head(200, {"Content-Length": str(len(body))}) + body)
            else:
                if fate == "slow" and self._stopping.wait(self.slow_seconds):
                    return
                with self._lock:
                    self.pages_served += 1
                self._respond(sock, 200, body)

    def _respond(self, sock: socket.socket, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {}), "Content-Length": str(len(body))}
        sock.sendall(_head(status, headers) + body)

    def _trickle(self, sock: socket.socket, data: bytes) -> None:
        """One byte per ``trickle_interval``: every read arrives well within a per-read timeout, but
        the whole response takes far longer than the request may."""
        ends = time.monotonic() + self.trickle_max_seconds
        for i in range(len(data)):
            if time.monotonic() >= ends or self._stopping.wait(self.trickle_interval):
                return
            sock.sendall(data[i : i + 1])  # raises once the client has given up and closed


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "Content-Type" not in headers:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0): the client sees 'connection reset'."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_request(sock: socket.socket) -> str | None:
    """The request target of one request (headers read and discarded; GET only, no body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 16:
            return None
    request_line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    return parts[1] if len(parts) == 3 else None


# -- the poller's commit loop ------------------------------------------------------------------------


def fault_source(url: str, directory: Path, *, name: str = "faulty", **overrides: Any) -> SourceConfig:
    """An http_polling source for the fault server's feed (no credentials), parsed like a file."""
    feed = {
        "name": name,
        "organizationId": None,
        "credentials": None,
        "headers": None,
        "incrementalParams": {"created_after": "${{cursor.watermark}}"},
    }
    return parsed(http_source(url, **{**feed, **overrides}), directory)


class QuietLog:
    """A logger for pulls that keeps the warnings (retries, with their reasons) and drops the rest."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args: Any) -> None:
        self.warnings.append(message)

    def info(self, message: str, *args: Any) -> None:
        pass

    debug = info

    def error(self, message: str, *args: Any) -> None:
        self.warnings.append(message)


def quiet_context(max_attempts: int = 3, sleep: Callable[[float], None] | None = None) -> PullContext:
    return PullContext(
        logger=QuietLog(),
        retry=RetryPolicy(max_attempts=max_attempts, backoff_initial=0.01, backoff_max=0.05),
        sleep=sleep if sleep is not None else Sleeps(),
    )


@dataclass
class DriveResult:
    pulls: int = 0
    failed: int = 0
    caught_up: bool = False
    committed: CursorState = field(default_factory=CursorState)
    written: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    committed_after_failure: list[CursorState] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    """The waits the pulls asked for (when the context's sleep records them)."""


def drive(
    source: SourceConfig,
    store: TraceStore,
    server: FaultServer,
    *,
    max_pulls: int,
    commit_checkpoints: bool = True,
    context: PullContext | None = None,
    check_every_failure: bool = True,
) -> DriveResult:
    """Pull until a pull drains with nothing new (or ``max_pulls`` ran), committing like the poller:
    ``cursor_after`` after a success; after a failure the pull's checkpoint (``commit_checkpoints``)
    or nothing. Asserts that a failed pull's checkpoint is never ahead of the store."""
    context = context or quiet_context()
    result = DriveResult()
    committed = CursorState()
    while result.pulls < max_pulls:
        result.pulls += 1
        try:
            report = run_pull(source, store=store, start=committed, context=context)
        except PullmodeError as exc:
            result.failed += 1
            result.errors.append(str(exc))
            partial = exc.report
            assert isinstance(partial, PullReport), f"a failed pull carries no report: {exc}"
            result.written += partial.written
            result.duplicates += partial.duplicates
            if check_every_failure:
                missing = server.covered(partial.checkpoint) - set(stored_ids(store, source.name))
                assert not missing, (
                    f"checkpoint {partial.checkpoint.to_json()} is ahead of the store: {len(missing)} events "
                    f"before it are missing, e.g. {sorted(missing)[:3]}"
                )
            if commit_checkpoints:
                committed = partial.checkpoint
                result.committed_after_failure.append(committed)
            continue
        result.written += report.written
        result.duplicates += report.duplicates
        committed = report.cursor_after
        if report.drained and report.records == 0:
            result.caught_up = True
            break
    result.committed = committed
    if isinstance(context.sleep, list):
        result.sleeps = list(context.sleep)
    return result


def expected_pulls(n: int, page_size: int, max_pages: int, fail: float, attempts: int) -> float:
    """Pulls expected when a failed pull commits its checkpoint: a page fails with q = fail**attempts,
    and a pull advances until its first failed page (at most ``max_pages``), then one pull finds
    nothing new."""
    q = fail**attempts
    pages = math.ceil(n / page_size)
    per_pull = (1 - q) * (1 - (1 - q) ** max_pages) / q
    return pages / per_pull + 1 / (1 - q)


def min_pulls(n_events: int, page_size: int, max_pages: int) -> int:
    """Pulls a fault-free source needs: the backlog in ``max_pages`` steps, then one that finds nothing."""
    pages = -(-n_events // page_size)
    return -(-pages // max_pages) + 1
