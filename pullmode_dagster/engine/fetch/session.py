"""The one HTTP client setup and the one retry policy.

Every request of every adapter goes through :class:`HttpSession.send`; :meth:`RetryPolicy.from_env` is
the one place the deployment's ``PULLMODE_*`` retry variables are read.
Design: docs/design/http-and-secrets.md#http-client
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from ..errors import PullError
from ..events.codec import decode_json
from ..version import __version__
from .redaction import Redactor

USER_AGENT = f"pullmode-dagster/{__version__}"
log = logging.getLogger("pullmode.http")
# httpx logs every request's full URL, query string and all, at INFO: a credential sent as a query
# parameter would reach any deployment's logs. This session reports requests itself, redacted.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


MAX_ATTEMPTS_ENV = "PULLMODE_MAX_ATTEMPTS"
BACKOFF_INITIAL_ENV = "PULLMODE_BACKOFF_INITIAL_SECONDS"
BACKOFF_MAX_ENV = "PULLMODE_BACKOFF_MAX_SECONDS"


def _setting(name: str, value: float | str | None, default: float) -> float:
    """A retry setting, greater than 0: ``value`` as given, text from the environment (blank is
    unset) or a number; ``name`` is its environment variable, for messages."""
    if isinstance(value, str):
        value = value.strip() or None
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise PullError(f"{name}: not a number") from None
    if number <= 0:
        raise PullError(f"{name}: must be greater than 0")
    return number


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again, and how long to wait first. The fields are the whole policy;
    :meth:`from_env` is where a deployment's settings come in."""

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 300.0
    retry_statuses: frozenset[int] = field(default=frozenset({408, 425, 429, 500, 502, 503, 504, 529}))
    backoff_max_default: bool = field(default=False, compare=False)
    """True when no setting gave ``backoff_max`` (:meth:`from_env` fell back to the built-in 30 s): a
    vendor's own documented ceiling may then take its place (:meth:`for_vendor`)."""

    @classmethod
    def from_env(
        cls,
        *,
        max_attempts: int | str | None = None,
        backoff_initial: float | str | None = None,
        backoff_max: float | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> RetryPolicy:
        """The deployment's policy, and the one place its variables are read: each setting as given
        (a Dagster resource's field, which Dagster may have read from the variable itself), else
        ``PULLMODE_MAX_ATTEMPTS``, ``PULLMODE_BACKOFF_INITIAL_SECONDS`` or
        ``PULLMODE_BACKOFF_MAX_SECONDS``, else the default. Read once per pull, never per request."""
        env = os.environ if environ is None else environ

        def given(value: float | str | None, name: str) -> float | str | None:
            return env.get(name) if value is None else value

        def pick(value: float | str | None, name: str, default: float) -> float:
            return _setting(name, given(value, name), default)

        raw_max = given(backoff_max, BACKOFF_MAX_ENV)
        return cls(
            max_attempts=int(pick(max_attempts, MAX_ATTEMPTS_ENV, cls.max_attempts)),
            backoff_initial=pick(backoff_initial, BACKOFF_INITIAL_ENV, cls.backoff_initial),
            backoff_max=_setting(BACKOFF_MAX_ENV, raw_max, cls.backoff_max),
            backoff_max_default=raw_max is None or (isinstance(raw_max, str) and not raw_max.strip()),
        )

    def for_vendor(self, backoff_max: float | None) -> RetryPolicy:
        """This policy with a vendor's documented longest backoff in place of the built-in default
        (Anthropic's compliance API: 60 s); a deployment's own setting stands. Still the one policy:
        attempts, statuses and ``retry-after`` are the deployment's."""
        if backoff_max is None or not self.backoff_max_default:
            return self
        return replace(self, backoff_max=backoff_max, backoff_max_default=False)

    def retries(self, response: httpx.Response) -> bool:
        """Whether this response is tried again. ``x-should-retry: false`` (Anthropic's APIs) says
        the server knows a retry cannot help."""
        if response.headers.get("x-should-retry", "").lower() == "false":
            return False
        return response.status_code in self.retry_statuses or response.headers.get("x-should-retry") == "true"

    def backoff(self, attempt: int) -> float:
        """Exponential with jitter: attempt 1 waits about ``backoff_initial``, then doubles."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)

    def wait_before_retry(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return self.backoff(attempt)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def safe_url(url: httpx.URL | str) -> str:
    """Scheme, host and path only: user info, query strings and fragments often carry tokens."""
    url = httpx.URL(str(url))
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def same_origin(a: httpx.URL | str, b: httpx.URL | str) -> bool:
    """Credentials are only ever sent to the configured origin (scheme, host and port)."""
    a, b = httpx.URL(str(a)), httpx.URL(str(b))
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class BadBody(Exception):
    """A successful status whose body is not what the source promised (a proxy's HTML page, a body
    cut short, invalid JSON): transient in practice, so it is retried like a 5xx."""


class DeadlineReached(PullError):
    """The pull's deadline came before the next request was sent, or a rate limit (429) asked for a
    wait that would pass it: the engine stops cleanly at the last page boundary, as with
    ``maxPagesPerRun``. A request that failed otherwise (timeout, 5xx, reset) and whose retry cannot
    fit is a :class:`PullError`: a host down for the whole deadline fails the pull, it is no clean stop."""

    throttled_for: float | None = None
    """Set when the wait that would pass the deadline was a 429's: how long the server asked for."""


class Throttled(PullError):
    """Every attempt was answered 429: a pull fails with it like any give-up; a probe skips the tick
    and asks again after ``retry_after`` seconds (None: the server did not say)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


def json_body(response: httpx.Response, what: str) -> Any:
    """A page's JSON: the one place a body is parsed. A body that is not JSON (a proxy's HTML page
    under 200, a body cut short) raises :class:`BadBody`, so the request is tried again; nesting too
    deep to parse is a :class:`PullError` (the same page would be as deep again)."""
    return plain_json_body(response, what)[0]


def plain_json_body(response: httpx.Response, what: str) -> tuple[Any, bool]:
    """:func:`json_body`, and whether the value is plain JSON (:func:`~..events.codec.decode_json`): the
    mapper writes the raw payloads of plain records the fast way."""
    try:
        return decode_json(response.content)
    except RecursionError:
        raise PullError(f"{what}: the response nests deeper than the JSON parser allows") from None
    except ValueError as exc:
        ctype = response.headers.get("content-type", "no content-type")
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise BadBody(f"body is not JSON ({ctype}, {len(response.content)} bytes; {detail})") from None


class Watchdog:
    """Calls ``cut`` once a request has spent ``limit`` seconds of its own: the one bound on a
    request that trickles (a byte every second passes any per-read timeout). Time while the caller
    holds a streamed chunk (:meth:`pause`, parsing it, storing a page) is not the request's, so a
    large file read at speed is not cut off for the work done on it. One timer, re-armed only when
    it fires while time was paused."""

    def __init__(self, limit: float, cut: Callable[[], None]):
        self.limit = limit
        self.fired = False
        self._cut = cut
        self._lock = threading.Lock()
        self._spent = 0.0
        self._since: float | None = time.monotonic()
        self._stopped = False
        self._timer = self._arm(limit)

    def _arm(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self._check)
        timer.daemon = True
        timer.start()
        return timer

    def used(self) -> float:
        with self._lock:
            running = time.monotonic() - self._since if self._since is not None else 0.0
            return self._spent + running

    def expired(self) -> bool:
        return self.used() >= self.limit

    def timeout_error(self) -> httpx.ReadTimeout:
        """What a request cut off here raises (``send`` retries it; a stream's caller reports it)."""
        return httpx.ReadTimeout(f"the whole request took longer than {self.limit:g}s")

    def _check(self) -> None:
        left = self.limit - self.used()
        with self._lock:  # under the lock: once stop() returns, nothing is cut
            if self._stopped:
                return
            if left > 0:  # time was paused: what is left of the request's own time
                self._timer = self._arm(left)
                return
            self.fired = True
            self._cut()

    def pause(self) -> None:
        with self._lock:
            if self._since is not None:
                self._spent += time.monotonic() - self._since
                self._since = None

    def resume(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._timer.cancel()


class Download:
    """A streamed response and its body's chunks, as they arrive."""

    def __init__(self, response: httpx.Response, watchdog: Watchdog | None):
        self.response = response
        self._watchdog = watchdog

    def chunks(self) -> Iterator[bytes]:
        """The body; the time the caller spends on a chunk does not count against the request."""
        watchdog = self._watchdog
        for chunk in self.response.iter_bytes():
            if watchdog is None:
                yield chunk
                continue
            if watchdog.expired():
                raise watchdog.timeout_error()
            watchdog.pause()
            try:
                yield chunk
            finally:
                watchdog.resume()


_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")
"""C0 and C1 control characters and DEL, as ``str.translate`` replaces them: each by a space."""


def one_line(text: str, redact: Callable[[str], str], limit: int) -> str:
    """A server's text fit for one line of a message: control characters (line breaks, a
    terminal's ESC sequences, BEL) become spaces and runs of spaces one; redacted whole, then cut
    at ``limit`` (a cut could leave a prefix of a secret the redactor cannot see)."""
    return redact(" ".join(text.translate(_CONTROLS).split()))[:limit]


MAX_REDIRECTS = 5
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""A page (decoded) larger than this fails the pull instead of exhausting memory."""

_UNSAFE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def tls_context() -> ssl.SSLContext:
    """The TLS settings of every session, as httpx makes them by default (certifi's CAs, or
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), made once per process: loading the CA bundle costs about
    24 ms of CPU, more than the rest of a quiet poll's question."""
    with _tls_lock:  # threads starting at once make it once, not once each
        return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


_tls_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


class HttpSession:
    """One pull's HTTP client. Use as a context manager; ``requests`` counts what was sent.

    ``timeout`` bounds a whole request, body included, streamed downloads too (a server trickling a
    byte a second is cut off); ``max_response_bytes`` bounds a body that is not streamed; ``deadline``
    (a ``clock()`` value) is the pull's: no request starts, and no retry waits, past it.
    ``request_id_header`` names the response header a vendor's support asks for (Anthropic's
    ``request-id``): a status given up on, or retried, is reported with it.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float | None = None,
        auth: httpx.Auth | None = None,
        redactor: Redactor | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | logging.LoggerAdapter[Any] | Any = log,
        request_id_header: str | None = None,
    ):
        self.retry = retry or RetryPolicy()
        self.request_id_header = request_id_header
        self.redact = redactor or Redactor()
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.deadline = deadline
        self.auth = auth
        self._sleep = sleep
        self._clock = clock
        self._log = logger
        self._min_interval = 1.0 / max_requests_per_second if max_requests_per_second else 0.0
        self._last_sent = 0.0
        self.requests = 0
        self.retries = 0
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            verify=tls_context(),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _pace(self) -> None:
        if self._min_interval:
            wait = self._last_sent + self._min_interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_sent = time.monotonic()

    def _past_deadline(self, wait: float = 0.0) -> bool:
        return self.deadline is not None and self._clock() + wait >= self.deadline

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """Every connection this session opens, so a request past its time can be cut off."""
        if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            self._streams.add(info["return_value"])

    def _cut_off(self) -> None:
        """The whole-request timeout passed while the server was still trickling (status line,
        headers or body): shut the sockets down, which wakes the blocked read with an error."""
        for stream in list(self._streams):
            sock = stream.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def _watched(self) -> Iterator[Watchdog]:
        """The whole-request timeout of one attempt, from sending to the body's last byte: a
        transport error after the watchdog cut the sockets off is reported as that timeout."""
        watchdog = Watchdog(self.timeout, self._cut_off)
        try:
            yield watchdog
        except httpx.TransportError:
            if watchdog.fired:
                raise watchdog.timeout_error() from None
            raise
        finally:
            watchdog.stop()

    def _open(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the status and headers only; its connection is watched."""
        request.extensions["trace"] = self._trace
        return self._client.send(request, auth=self.auth, stream=True)

    def _fetch(self, request: httpx.Request, what: str) -> httpx.Response:
        """Send and read the whole body within ``timeout`` and ``max_response_bytes``."""
        with self._watched() as watchdog:
            return self._read(request, what, self.redact(safe_url(request.url)), watchdog)

    def _read(self, request: httpx.Request, what: str, where: str, watchdog: Watchdog) -> httpx.Response:
        response = self._open(request)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise PullError(
                        f"{what}: response from {where} is larger than {self.max_response_bytes} bytes "
                        "(maxResponseBytes); the page is not read"
                    )
                if watchdog.expired():
                    raise watchdog.timeout_error()
                chunks.append(chunk)
        finally:
            response.close()
        # The body is decoded already: drop the headers that describe the encoded form. As received
        # (bytes): a value that is not ASCII (a server's UTF-8, a stray byte) could not be encoded again.
        headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _UNSAFE_HEADERS]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=b"".join(chunks),
            request=request,
            extensions={"http_version": response.http_version.encode()},
        )

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        content: str | bytes | None = None,
        accept: Callable[[httpx.Response], Any] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """Send with retries. Returns the final response (any status the policy does not retry);
        raises :class:`PullError` when every attempt failed. ``what`` names the request in messages.

        ``accept`` inspects a response with a 2xx status and raises :class:`BadBody` when the body is
        not what was promised: that attempt is retried like a 5xx. What it returns is kept in
        ``response.extensions["accepted"]``. ``headers`` must hold no credential: credentials come
        from the session's ``auth``, which adds them on the configured origin only, so a redirect
        followed elsewhere (``follow_redirects``) carries none."""

        def attempt() -> httpx.Response:
            request = self._client.build_request(method, url, headers=headers, params=params, content=content)
            response = self._hops(request, headers, follow_redirects, lambda r: self._fetch(r, what))
            if accept is not None and 200 <= response.status_code < 300:
                response.extensions["accepted"] = accept(response)
            return response

        return self._with_retries(what, url, attempt)

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        follow_redirects: bool = False,
        accept: Callable[[Download], Any] | None = None,
    ) -> Iterator[Download]:
        """A response whose body is read as it arrives (a JSONL download): retried like ``send``
        until its status is final; a failure while the body streams is the caller's to report.
        The whole-request timeout holds from sending to the body's last byte, like any request's,
        less the time the caller spends on the chunks (:class:`Watchdog`); files may be large, so
        the size cap does not apply.

        ``accept`` reads a 2xx body within its attempt (a file checked against the digest its
        listing gave, before any of it is handed on) and raises :class:`BadBody` when the body is
        not what was promised: that attempt is retried like a 5xx, from the first request (so a
        redirect to a signed URL is asked for afresh). What it returns is kept in
        ``response.extensions["accepted"]``."""
        kept: list[tuple[contextlib.ExitStack, Watchdog]] = []  # the attempt whose body streams, still watched

        def release() -> None:
            while kept:
                kept.pop()[0].close()

        def attempt() -> httpx.Response:
            release()
            with contextlib.ExitStack() as stack:
                watchdog = stack.enter_context(self._watched())
                request = self._client.build_request(method, url, headers=headers, params=params)
                response = self._hops(request, headers, follow_redirects, self._open)
                stack.callback(response.close)
                if response.status_code in self.retry.retry_statuses or response.status_code >= 300:
                    response.read()  # small error bodies: kept for the message, then the connection is free
                    return response
                kept.append((stack.pop_all(), watchdog))
                if accept is not None:
                    try:
                        response.extensions["accepted"] = accept(Download(response, watchdog))
                    except httpx.TransportError:
                        if watchdog.fired:  # the watchdog cut the body off: that is the request's timeout
                            raise watchdog.timeout_error() from None
                        raise
                return response

        try:
            response = self._with_retries(what, url, attempt)
        except BaseException:
            release()
            raise
        if not kept:  # a final error status: its body is read, its attempt over
            yield Download(response, None)
            return
        # The body's reads belong to the attempt: cut off by its watchdog, reported as its timeout.
        attempt_stack, watchdog = kept.pop()
        with attempt_stack:
            yield Download(response, watchdog)

    def _hops(
        self,
        request: httpx.Request,
        headers: Mapping[str, str] | None,
        follow: bool,
        send: Callable[[httpx.Request], httpx.Response],
    ) -> httpx.Response:
        """Send, then follow redirects when asked (at most MAX_REDIRECTS): each hop GETs the Location
        with the caller's (credential-free) headers, and the session's auth adds credentials again
        only if the hop stays on the configured origin."""
        response = send(request)
        for _ in range(MAX_REDIRECTS):
            if not (follow and response.is_redirect):
                break
            response.close()
            location = request.url.join(response.headers["location"])
            request = self._client.build_request("GET", location, headers=headers)
            response = send(request)
        return response

    def quote(self, text: str, limit: int) -> str:
        """A server's text fit for one line of a message (:func:`one_line`, with this session's redactor)."""
        return one_line(text, self.redact, limit)

    def request_id(self, response: httpx.Response) -> str:
        """`` (request-id <id>)`` when the vendor names its requests (``request_id_header``), else "",
        quoted (:meth:`quote`) and at most 64 characters."""
        value = response.headers.get(self.request_id_header, "") if self.request_id_header else ""
        value = self.quote(value, 64)
        return f" ({self.request_id_header} {value})" if value else ""

    def _with_retries(self, what: str, url: str, attempt: Callable[[], httpx.Response]) -> httpx.Response:
        where = self.redact(safe_url(url))
        problem = ""
        for number in range(1, self.retry.max_attempts + 1):
            # Only before the first attempt: a retry is sent once its wait fit (checked below).
            if number == 1 and self._past_deadline():
                raise DeadlineReached(f"{what}: the pull's deadline was reached before the request to {where}")
            self._pace()
            self.requests += 1
            response: httpx.Response | None = None
            try:
                response = attempt()
            except httpx.TimeoutException as exc:
                problem = f"timed out ({self.redact(exc)})" if str(exc).startswith("the whole") else "timed out"
                response = None
            except httpx.TransportError as exc:
                problem = f"network error: {self.redact(type(exc).__name__)}: {self.redact(exc)}"
                response = None
            except BadBody as exc:
                problem = self.redact(exc)
                response = None
            else:
                if not self.retry.retries(response):
                    return response
                problem = f"HTTP {response.status_code}{self.request_id(response)}"
                response.close()
            throttled = response is not None and response.status_code == 429
            if number == self.retry.max_attempts:
                if throttled:
                    assert response is not None
                    raise Throttled(
                        f"{what}: {problem} from {where}, gave up after {self.retry.max_attempts} attempts",
                        parse_retry_after(response.headers.get("retry-after")),
                    )
                break
            wait = self.retry.wait_before_retry(number, response)
            if self._past_deadline(wait):
                if throttled:
                    # The host is up and rationing: the next pull resumes from the last page (a probe
                    # skips the tick and asks again after the wait the server asked for).
                    reached = DeadlineReached(
                        f"{what}: {problem} from {where}; waiting {wait:.1f}s to retry would pass the pull's deadline"
                    )
                    reached.throttled_for = wait
                    raise reached
                # Sent and failed: this was its last attempt. Stopping "cleanly" here would report a
                # host that never answers as a successful pull, every time.
                raise PullError(
                    f"{what}: {problem} from {where}, gave up after {number} attempts: a retry in {wait:.1f}s "
                    "would pass the pull's deadline (pullDeadlineSeconds)"
                )
            self.retries += 1
            self._log.warning(
                f"{what}: {problem} from {where}; retry {number}/{self.retry.max_attempts - 1} in {wait:.1f}s"
            )
            self._sleep(wait)
        raise PullError(f"{what}: {problem} from {where}, gave up after {self.retry.max_attempts} attempts")
