"""``pullmode_failure_alerts``: alerts on change. One when a source starts failing, reminders at a
bounded rate while it keeps failing, one when it recovers; one when its freshness fails and when it
passes again; one when an ERROR check of it starts failing and when it passes again. What changed is
read in ``changes.py``; this module delivers.

POSTed as JSON to ``$PULLMODE_ALERT_WEBHOOK_URL`` (logged only without it); each is sent once, retried
while the webhook is down. One evaluation delivers for a bounded time (well under Dagster's sensor
timeout) and records each alert it delivered at once (a tag on its run, the state in the instance), so
an evaluation cut short never sends an alert again. A request that went out and got no answer may have
been taken: it is sent again only after a backoff, at most :data:`MAX_UNANSWERED` times in all, always
with the same idempotency key.
Design: docs/design/monitoring.md#alerts
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg
import httpx

from ..engine.adapters import ADAPTERS
from ..engine.declare.loading import load_sources
from ..engine.errors import PullError
from ..engine.fetch.redaction import Redactor
from ..engine.fetch.session import HttpSession, RetryPolicy, safe_url
from . import outgoing
from .changes import (
    REMINDER_ENV,
    AlertState,
    SourceKeys,
    StateStore,
    describe,
    detect,
    idempotency_key,
    mark_sent,
    reminder_interval,
    was_sent,
)
from .instance_api import sensor_timeout_seconds
from .sensors import INTERVAL_SECONDS, Clock, evaluation_instance, utc_now

SENSOR_NAME = "pullmode_failure_alerts"
WEBHOOK_ENV = "PULLMODE_ALERT_WEBHOOK_URL"
MAX_ATTEMPTS = 20
"""About ten minutes of retries at the sensor's 30-second interval."""
BUDGET_SECONDS = 30.0
"""No delivery starts later than this into an evaluation (nor later than half of Dagster's sensor timeout)."""
WINDOW_SECONDS = 45.0
"""Every delivery of an evaluation ends this long into it (or at three quarters of Dagster's sensor
timeout): a POST, answer included, may take all that is left, so never less than a quarter of it."""
MAX_UNANSWERED = 3
"""Copies of one alert sent at most when no answer came back in time (the receiver may have taken each)."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
SKIP_REASON_ITEMS = 10
"""Alerts named in one tick's skip reason; the log names every one."""

__all__ = ["REMINDER_ENV", "SENSOR_NAME", "AlertState", "build_alert_sensor", "delivery_limits", "evaluate"]


class WebhookUrlError(ValueError):
    """``$PULLMODE_ALERT_WEBHOOK_URL`` is not a URL alerts can be POSTed to (the message never quotes it)."""


@dataclass(frozen=True)
class Webhook:
    """The validated webhook: where to POST, how to show it, and what in it is secret."""

    url: str
    """Without its user info (sent as Basic auth instead, so no message can quote it)."""
    origin: str
    """All a message shows: scheme, host and port (a Slack webhook's path is its token)."""
    auth: httpx.BasicAuth | None
    redact: Redactor
    """Replaces the URL's user name, password, query and fragment, in every spelling."""

    @classmethod
    def from_env(cls) -> Webhook | None:
        """The configured webhook, None when unset or blank; :class:`WebhookUrlError` when unusable."""
        text = os.environ.get(WEBHOOK_ENV, "")
        # A value pasted from a secret file ends with a newline: surrounding whitespace is never part
        # of a URL, so it is dropped rather than refused; whitespace inside is refused below.
        return cls.parse(text.strip()) if text.strip() else None

    @classmethod
    def parse(cls, text: str) -> Webhook:
        what = f"${WEBHOOK_ENV} is not a usable webhook URL"
        inside = next((i for i, c in enumerate(text) if c.isspace() or not c.isprintable()), None)
        if inside is not None:
            raise WebhookUrlError(f"{what}: it holds whitespace or a control character at position {inside + 1}")
        if not text.lower().startswith(("http://", "https://")):
            raise WebhookUrlError(f"{what}: it must start with http:// or https://")
        problem = _authority_problem(text)
        if problem:
            raise WebhookUrlError(f"{what}: {problem}")
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL:
            raise WebhookUrlError(f"{what}: it does not parse as a URL") from None
        if not url.host:
            raise WebhookUrlError(f"{what}: it has no host")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise WebhookUrlError(f"{what}: its port must be from 1 to 65535")
        query = url.query.decode("ascii", "replace")
        values = [v for _, v in urllib.parse.parse_qsl(query, keep_blank_values=True)]
        secrets = [url.username, url.password, query, urllib.parse.unquote_plus(query), url.fragment, *values]
        port = f":{url.port}" if url.port is not None else ""
        return cls(
            url=str(url.copy_with(username=None, password=None)),
            origin=f"{url.scheme}://{f'[{url.host}]' if ':' in url.host else url.host}{port}",
            auth=httpx.BasicAuth(url.username, url.password) if url.userinfo else None,
            redact=Redactor(secrets),
        )


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")


def _authority_problem(text: str) -> str | None:
    """What is wrong with the URL's host and port as written (None: nothing). URL parsers are lenient
    (``+80`` or other scripts' digits as a port, ``%68`` as a host); a URL that only fails at delivery
    would fail on every evaluation, so it is refused here, once, clearly."""
    try:
        hostport = urllib.parse.urlsplit(text).netloc.rpartition("@")[2]
    except ValueError:  # a bracketed host that is no IP address
        return "its host is not a valid IPv6 address"
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "its host is not a valid IPv6 address"
    else:
        host, _, port = hostport.partition(":")
        if not host:
            return "it has no host"
        if not _HOST_NAME.fullmatch(host):
            return "its host must be a DNS name (ASCII letters, digits, '-' and '.'; IDNA for others) or an IP address"
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return "its host is not a valid IPv4 address"
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return "its port must be a number from 1 to 65535"
    return None


def delivery_limits() -> tuple[float, float]:
    """(budget, window) in seconds from the first delivery: none starts after the budget and all end by
    the window, well inside Dagster's sensor timeout, past which the tick fails and its cursor is lost.
    A POST may use all the window has left: the slower the receiver, the fewer duplicates."""
    limit = sensor_timeout_seconds()
    return min(BUDGET_SECONDS, limit / 2), min(WINDOW_SECONDS, limit * 3 / 4)


class _BodyWatch(httpx.BaseTransport):
    """httpx's transport, noting whether the request's body was all written to the connection: a
    request that then got no answer may have been taken by the receiver (it cannot be known)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.body_sent = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.body_sent = False
        request.stream = _Written(request.stream, self)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class _Written(httpx.SyncByteStream):
    """A request body that tells its watch once its last chunk was written (the connection asks for the
    next chunk only after writing one)."""

    def __init__(self, stream: Any, watch: _BodyWatch):
        self._stream = stream
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream
        self._watch.body_sent = True


@dataclass(frozen=True)
class Delivery:
    """How one POST ended: ``problem`` is None when the receiver took the alert; ``unanswered`` when the
    alert went out and no answer came back (a timeout, a connection lost), so it may have been taken."""

    problem: str | None
    unanswered: bool = False


def deliver(item: dict[str, Any], hook: Webhook, *, timeout: float, log: Any, clock: Callable[[], float]) -> Delivery:
    """POST one alert with its idempotency key (a header, and a field of the JSON), answer included
    within ``timeout``; a problem shows the webhook's origin only."""
    watch = _BodyWatch()
    key = idempotency_key(item)
    session = HttpSession(
        timeout=timeout,
        retry=RetryPolicy(max_attempts=1, retry_statuses=frozenset()),
        auth=hook.auth,
        redactor=hook.redact,
        transport=watch,
        clock=clock,
        logger=log,
    )
    try:
        with session:
            response = session.send(
                "POST",
                hook.url,
                what="the POST",
                headers={"Content-Type": "application/json", IDEMPOTENCY_HEADER: key},
                content=json.dumps({**item["alert"], "idempotency_key": key}),
            )
    except PullError as exc:
        problem = hook.redact(str(exc).replace(hook.redact(safe_url(hook.url)), hook.origin))
        return Delivery(problem, unanswered=watch.body_sent)
    except Exception as exc:  # the sensor never fails on a delivery; a library's text may quote the URL
        return Delivery(f"{type(exc).__name__} from {hook.origin}", unanswered=watch.body_sent)
    if response.is_success:
        return Delivery(None)
    return Delivery(f"HTTP {response.status_code} from {hook.origin}")


def evaluate(
    instance: dg.DagsterInstance,
    state: AlertState,
    log: Any,
    *,
    clock: Callable[[], float] = time.monotonic,
    now: Clock = utc_now,
    sources: Sequence[str] = (),
    save: Callable[[AlertState], None] | None = None,
    keys: SourceKeys | None = None,
) -> AlertState:
    """Queue an alert for each change since the last evaluation (``changes.detect``), then deliver the
    queue for at most the budget. ``save`` is called with the state after each delivery, so one cut
    short by Dagster's timeout keeps what it sent. An invalid webhook URL counts as a failed delivery,
    so the alerts wait for a fix. ``sources``: whose freshness to watch; ``keys``: the sources' asset
    keys, when a translator changed them."""
    remind, problem = reminder_interval()
    if problem:
        log.error(problem)
    state = detect(instance, state, now=now(), remind=remind, sources=sources, keys=keys)
    state.problems = [problem] if problem else []
    # A failure message is whatever the run recorded: redacted with its source's secrets before it is
    # sent, logged or saved (and pending alerts saved before this rule, again).
    redactors = SourceRedactors()
    pending = [
        {**item, "alert": _redacted(item["alert"], redactors(item["alert"].get("source")))} for item in state.pending
    ]
    state.pending = []
    unusable = None
    try:
        hook = Webhook.from_env()
    except WebhookUrlError as exc:
        log.error(str(exc))
        unusable = str(exc)
        state.problems.append(unusable)
        hook = None
    else:
        if hook is None:
            for item in pending:
                log.warning(item["alert"]["text"])
                state.sent.append(describe(item["alert"]))
            return state
        pending = [{**item, "alert": _redacted(item["alert"], hook.redact)} for item in pending]
    budget, window = delivery_limits()
    started: float | None = None  # the first delivery: the budget and the window count from it
    for number, item in enumerate(pending):
        if was_sent(instance, item):
            continue  # sent by an evaluation that was cut short before it saved the state
        if item.get("wait"):  # backing off after a copy that got no answer
            state.pending.append({**item, "wait": item["wait"] - 1})
            continue
        now_ = clock()
        started = now_ if started is None else started
        if now_ - started >= budget:
            later = len(pending) - number
            log.warning(f"{later} alert(s) left for the next evaluation: delivering took {budget:g}s already")
            state.pending.extend(pending[number:])
            break
        if hook is None:
            outcome = Delivery(unusable or "no webhook")
        else:
            # All the window has left (never less than window - budget), in tenths: messages quote it.
            timeout = math.floor((started + window - now_) * 10) / 10
            outcome = deliver(item, hook, timeout=timeout, log=log, clock=clock)
        if outcome.problem is None:
            mark_sent(instance, item)
            state.sent.append(describe(item["alert"]))
            log.info(f"sent: {describe(item['alert'])}")
            if save is not None:
                save(replace(state, pending=[*state.pending, *pending[number + 1 :]]))
            continue
        retry = _after_failure(item, outcome, log)
        if retry is not None:
            state.pending.append(retry)
    return state


def _after_failure(item: dict[str, Any], outcome: Delivery, log: Any) -> dict[str, Any] | None:
    """The pending item to try again (None: dropped, said in the log). A copy that got no answer may
    have been taken, so the next one waits 1, then 3 evaluations, and there are at most MAX_UNANSWERED."""
    alert, problem = item["alert"], outcome.problem
    what = describe(alert)
    attempts = item["attempts"] + 1
    unanswered = item.get("unanswered", 0) + outcome.unanswered
    if outcome.unanswered and unanswered >= MAX_UNANSWERED:
        log.error(
            f"alert {what} not sent again: {unanswered} copies went out without an answer ({problem}); "
            f"the webhook may have taken them (idempotency key {idempotency_key(item)}): {alert['text']}"
        )
        return None
    if attempts >= MAX_ATTEMPTS:
        log.error(f"alert {what} dropped after {attempts} attempts ({problem}): {alert['text']}")
        return None
    retry = {**item, "attempts": attempts}
    retry.pop("wait", None)
    if unanswered:
        retry["unanswered"] = unanswered
    if outcome.unanswered:
        retry["wait"] = 2**unanswered - 1
        log.warning(
            f"alert {what} may have been delivered ({problem}); sending it again, with the same "
            f"idempotency key, after {retry['wait']} evaluation(s)"
        )
    else:
        log.warning(f"alert {what} not delivered ({problem}); trying again later")
    return retry


class SourceRedactors:
    """Each source's redactor (``outgoing.secrets_for``), by name; the source files are read once, and
    only when an alert needs them. A source whose file is gone or invalid has none to apply."""

    def __init__(self) -> None:
        self._by_name: dict[str, Redactor] | None = None

    def __call__(self, name: object) -> Redactor:
        if self._by_name is None:
            loaded = load_sources(adapters=ADAPTERS).sources
            self._by_name = {n: outgoing.secrets_for(source).redact for n, source in loaded.items()}
        return self._by_name.get(name, Redactor()) if isinstance(name, str) else Redactor()


def _redacted(alert: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    """The alert with ``redact``'s secrets (its source's, the webhook's) replaced in every text."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in alert.items()} if redact else alert


def skip_reason(state: AlertState, *, webhook: bool) -> str:
    """What the tick sent (``sent: acme_audit failing (run 8f606570); ...``), what waits, and why."""
    named = "; ".join(state.sent[:SKIP_REASON_ITEMS])
    more = f"; and {len(state.sent) - SKIP_REASON_ITEMS} more" if len(state.sent) > SKIP_REASON_ITEMS else ""
    if state.sent:
        verb = "sent" if webhook else f"logged (no ${WEBHOOK_ENV})"
        said = f"{verb}: {named}{more}"
    else:
        said = "nothing sent" if state.pending else "no change"
    if state.pending:
        said += f"; {len(state.pending)} alert(s) waiting for the webhook"
    if state.problems:
        said += f" ({'; '.join(state.problems)})"
    return said


def build_alert_sensor(
    sources: Sequence[str] = (), *, clock: Clock = utc_now, keys: Mapping[str, dg.AssetKey] | None = None
) -> dg.SensorDefinition:
    """The alert sensor, watching the freshness of ``sources`` (the enabled ones: a source turned off
    on purpose is not news). ``clock`` times the reminders; ``keys`` maps every source to its asset
    key (a translator may have changed it)."""
    watched = list(sources)
    source_keys = SourceKeys(keys)

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts on change, to $PULLMODE_ALERT_WEBHOOK_URL (logged when unset): a source starts "
        "failing (reminders at most every $PULLMODE_ALERT_REMINDER_SECONDS, default an hour), recovers, "
        "turns stale or fresh again, or an ERROR check of it starts failing or passes again.",
    )
    def failure_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = evaluation_instance(context)
        store = StateStore(instance)
        # The instance holds the state; the cursor is its copy (and, once, the old format's positions).
        stored = store.read()
        state = AlertState.from_json(stored or context.cursor)
        state = evaluate(instance, state, context.log, now=clock, sources=watched, save=store.save, keys=source_keys)
        if state.to_json() != stored:  # an idle evaluation writes nothing
            store.save(state)
        webhook = bool(os.environ.get(WEBHOOK_ENV, "").strip())
        return dg.SensorResult(cursor=state.to_json(), skip_reason=skip_reason(state, webhook=webhook))

    return failure_alerts
