"""``custom``: a puller class of your own, named by ``module: package.module:ClassName``.

The class subclasses :class:`pullmode_dagster.Puller` (README, "Writing a custom puller") and gets
everything a built-in adapter gets: ``eventMapping``, dedup, checkpoints and cursor commit, metadata,
checks, redaction and the CLI. User code is contained: its import, its construction, its pages and
its ``close()`` run on a thread of their own, bounded in time, and whatever they raise (``SystemExit``
included) or yield wrongly becomes one redacted line naming the source and the puller.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import queue
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from ..cursor import CursorState
from ..declare.models import ConfigProblem
from ..errors import CredentialError, PullError, PullmodeError
from ..events.mapping import EventMapping
from ..events.rejects import Reject, raw_text
from ..fetch.redaction import Redactor
from ..fetch.session import DeadlineReached
from . import user_output
from .base import NEW, UNKNOWN, HttpSourceConfig, Page, Position, ProbeAnswer, Puller, Window, position_problems
from .registry import Adapter, register

MODULE_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")

IMPORT_TIMEOUT_ENV = "PULLMODE_IMPORT_TIMEOUT_SECONDS"
DEFAULT_IMPORT_TIMEOUT_SECONDS = 30.0
"""How long importing a custom module may take (``validate``, the code location, a pull)."""

PASSES_THROUGH = (KeyboardInterrupt, GeneratorExit)
"""What user code may raise past us: Ctrl-C, and a generator being closed. Everything else,
``SystemExit`` included, is the puller's failure."""


class CustomSource(HttpSourceConfig):
    """A ``custom`` source file."""

    adapter: Literal["custom"]
    module: str = Field(description="package.module:ClassName, importable from the code location")
    options: dict[str, Any] = Field(default_factory=dict, description="free-form, handed to the puller")
    event_mapping: EventMapping

    @field_validator("module")
    @classmethod
    def _module_path(cls, value: str) -> str:
        if not MODULE_PATTERN.match(value):
            raise ValueError("must be package.module:ClassName")
        return value

    def problems(self) -> list[ConfigProblem]:
        try:
            load_puller_class(self.module, redact=self._known_secrets())
        except PullmodeError as exc:
            return [("module", str(exc))]
        return []

    def _known_secrets(self) -> Redactor:
        """The secrets this source's refs resolve to now, for redacting what its module says while
        importing (a module may read them); a ref that does not resolve cannot leak either."""
        base_dir = self.file.parent if self.file else None
        values = []
        for ref in self.credentials.values():
            with contextlib.suppress(CredentialError):
                values.append(ref.resolve(base_dir=base_dir))
        return Redactor(values)

    def describe(self) -> str:
        return f"Pulls with the custom puller {self.module} (custom)"


@dataclass
class _Call:
    """One call into user code, run on a :class:`UserThread`. Only plain values are set here: what
    the call raised is described on the user thread and released there (see :meth:`UserThread._serve`)."""

    fn: Callable[[], Any] | None
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    failed: bool = False
    error_type: type[BaseException] | None = None
    """The error's class when it is one of ours (:data:`_OWN_ERRORS`) or passes through, else None."""
    error: BaseException | None = None
    """The error itself, only on a thread that runs the engine's own code (no ``redact``)."""
    kind: str = ""
    """The error's type name, read on the user thread."""
    text: str = ""
    """The error's whole message (``str(error)``), computed on the user thread: a user's
    ``__str__`` may raise, exit or block, so it never runs on the engine's."""


class Overrun(Exception):
    """User code did not return within its time limit; its thread was left running."""


class Raised(Exception):
    """User code raised; ``kind`` and ``text`` are its type name and message, plain ``str`` computed
    on the user thread (see :func:`_describe`), and ``error_type`` its class when it is one of ours.
    The exception itself never leaves the user thread, so its ``__del__`` runs there."""

    def __init__(self, error_type: type[BaseException] | None, kind: str, text: str, error: BaseException | None):
        super().__init__(kind)
        self.error = error
        """The exception itself, only from a thread that runs the engine's own code."""
        self.error_type = error_type
        self.kind = kind
        self.text = text


class UserThread:
    """A daemon thread that runs one puller's code, call after call (all of it on one thread, as
    code that keeps a connection may need). Python cannot stop a thread: a call that outlives its
    limit is abandoned, left to run in the background, and the thread takes no more calls. Being a
    daemon, it never keeps the process from exiting.

    The user's objects live in :attr:`objects`, touched only by calls on this thread and released
    by it when it stops, so their ``__del__`` never runs on the engine's thread. Everything the
    thread writes (print, warnings, logging, unraisable errors) goes through ``redact``
    (:mod:`.user_output`), or into ``kept`` when given. Without ``redact`` the thread runs the
    engine's own code (a probe bounded in time): its output is left alone and what it raises is
    handed over as it is."""

    def __init__(self, name: str, redact: Redactor | None = None, kept: io.StringIO | None = None):
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.objects: dict[str, Any] = {}
        self._redact = redact
        self._kept = kept
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self.stuck = False
        self.stopped = False

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _serve(self) -> None:
        engine_code = self._redact is None
        with contextlib.nullcontext() if engine_code else user_output.attached(self._redact, self._kept):
            while (call := self._calls.get()) is not None:
                self._run(call)
            self.objects.clear()  # the user's objects end here, on this thread

    def _run(self, call: _Call) -> None:
        fn, call.fn = call.fn, None
        error: BaseException | None = None
        try:
            call.value = fn()  # type: ignore[misc]  # a queued call's fn is set; dropped above, not kept by the thread
        except BaseException as exc:  # described here; the caller's thread gets plain text
            error = exc
            call.failed = True
            kind = type(exc)  # never isinstance: __class__ is user code
            if kind in _OWN_ERRORS or issubclass(kind, PASSES_THROUGH):
                call.error_type = kind if kind in _OWN_ERRORS else _passing(kind)
            call.kind, call.text = _describe(exc)
            if self._redact is None:
                call.error = exc
        del fn
        user_output.flush()
        call.done.set()
        if error is not None:
            _release(error)  # after done: a slow __del__ holds this thread, not the caller
            del error

    def submit(self, fn: Callable[[], Any]) -> _Call:
        if self.stuck or self.stopped:
            raise RuntimeError("this user thread takes no more calls")
        call = _Call(fn)
        # Stuck until its result is taken: a signal that lands between here and result() (or
        # inside it) abandons the call as surely as one that lands while waiting.
        self.stuck = True
        self._calls.put(call)
        return call

    def result(self, call: _Call, timeout: float) -> Any:
        """``call``'s value; :class:`Raised` for what it raised, :class:`Overrun` past ``timeout``."""
        if not _wait(call.done, timeout):  # SIGTERM or Ctrl-C while waiting leaves it stuck, too
            raise Overrun
        self.stuck = False
        if call.failed and call.error_type is not None and issubclass(call.error_type, PASSES_THROUGH):
            raise call.error_type(call.text)
        if call.failed:
            raise Raised(call.error_type, call.kind, call.text, call.error)
        return call.value

    def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        return self.result(self.submit(fn), timeout)

    def stop(self, timeout: float = 0.0) -> bool:
        """Take no more calls and release the user's objects on this thread; wait up to ``timeout``
        for that (a ``__del__`` may block). True when the thread ended in time."""
        if not self.stuck and not self.stopped:
            self.stopped = True
            self._calls.put(None)
        if self.stopped and timeout > 0:
            self._thread.join(timeout)
        return not self._thread.is_alive()


WAIT_SLICE_SECONDS = 0.25


def _wait(done: threading.Event, timeout: float) -> bool:
    """``done.wait(timeout)`` in short slices. The kernel may hand SIGTERM or SIGINT to any thread
    (the puller's, say), which does not wake the main thread's wait, and Python runs the handler
    only when the main thread next runs: waiting in slices lets it run within a slice, not after
    the whole limit."""
    end = time.monotonic() + timeout
    while not done.wait(min(WAIT_SLICE_SECONDS, max(0.0, end - time.monotonic()))):
        if time.monotonic() >= end:
            return False
    return True


def _passing(kind: type[BaseException]) -> type[BaseException]:
    """The builtin that ``kind`` (maybe a user subclass) passes through as."""
    return next(base for base in PASSES_THROUGH if issubclass(kind, base))


def _release(error: BaseException) -> None:
    """Break what keeps ``error`` and its chain alive (tracebacks, their frames' locals) so it is
    freed now, on this thread, rather than later by the collector on whichever thread runs it."""
    seen: set[int] = set()
    chain: list[BaseException] = [error]
    while chain:
        exc = chain.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        with contextlib.suppress(BaseException):
            if exc.__traceback__ is not None:
                traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
            chain.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
            exc.__cause__ = exc.__context__ = None


@dataclass
class _Import:
    thread: UserThread
    call: _Call
    output: io.StringIO


_IMPORTS: dict[str, _Import] = {}
"""Imports that did not finish within the limit, by module: a second ``import`` of a module still
importing would wait for it forever, so a later load reports it (or takes its outcome) instead."""
_IMPORTS_LOCK = threading.Lock()


def import_timeout() -> float:
    """``$PULLMODE_IMPORT_TIMEOUT_SECONDS``, else 30 s."""
    text = os.environ.get(IMPORT_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_IMPORT_TIMEOUT_SECONDS
    except ValueError:
        raise PullmodeError(f"{IMPORT_TIMEOUT_ENV} must be a number of seconds, not {text[:20]!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PullmodeError(f"{IMPORT_TIMEOUT_ENV} must be a positive number of seconds")
    return value


def load_puller_class(path: str, *, redact: Redactor | None = None) -> type[Puller]:
    """The class ``path`` names; a clear, redacted error when it cannot be imported in time or is
    not a Puller. The import runs on a thread of its own with a time limit, and what the module
    prints meanwhile is kept off the console (its last line is quoted when the import fails); its
    warnings and log lines are redacted."""
    redact = redact or Redactor()
    module_name, _, class_name = path.partition(":")
    limit = import_timeout()
    with _IMPORTS_LOCK:
        pending = _IMPORTS.get(module_name)
        if pending is None:
            output = io.StringIO()  # what the module prints is kept aside (argparse's usage text)
            thread = UserThread(f"pullmode-import-{module_name}", redact, output)
            pending = _Import(thread, thread.submit(lambda: importlib.import_module(module_name)), output)
            _IMPORTS[module_name] = pending
            wait = limit
        else:  # still importing since an earlier load: report it again at once, or take its outcome
            wait = 0.0
    try:
        module = pending.thread.result(pending.call, wait)
    except Overrun:
        raise PullmodeError(
            redact(
                f"cannot import {module_name}: the import did not finish within {limit:g} s (a module that waits "
                f"or runs a program at import?){_printed(pending.output, redact)}"
            )
        ) from None
    except Raised as raised:
        line = _exception_line(raised, redact)
        raise PullmodeError(redact(f"cannot import {module_name}: {line}{_printed(pending.output, redact)}")) from None
    finally:
        if pending.call.done.is_set():
            with _IMPORTS_LOCK:
                if _IMPORTS.get(module_name) is pending:
                    del _IMPORTS[module_name]
            pending.thread.stop()
    # Anything the module printed while importing fine goes where it was meant to, redacted.
    if pending.output.getvalue():
        sys.stderr.write(redact(pending.output.getvalue()))
        pending.output.seek(0)
        pending.output.truncate()
    # The lookup is user code too (a module's __getattr__, a metaclass): on a bounded thread as well.
    finder = UserThread(f"pullmode-import-{module_name}", redact)
    try:
        return finder.run(lambda: _class_in(module, class_name, path), limit)
    except Overrun:
        raise PullmodeError(
            f"cannot import {module_name}: looking up {class_name} did not finish within {limit:g} s"
        ) from None
    except Raised as raised:
        if raised.error_type is PullmodeError:  # ours, from _class_in
            raise PullmodeError(raised.text) from None
        raise PullmodeError(redact(f"cannot import {module_name}: {_exception_line(raised, redact)}")) from None
    finally:
        finder.stop()


def _class_in(module: Any, class_name: str, path: str) -> type[Puller]:
    """``module.<class_name>`` if it is a Puller; run on a user thread."""
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PullmodeError(f"{module.__name__} has no {class_name}")
    if not (isinstance(cls, type) and issubclass(cls, Puller)) or cls is Puller:
        raise PullmodeError(f"{path} is not a subclass of pullmode_dagster.Puller")
    return cls


SHOWN = 300
"""At most this many characters of what user code said are quoted in a message."""


def _printed(output: io.StringIO, redact: Redactor) -> str:
    """The last line the module printed while importing (argparse's error line), if any: redacted
    whole before it is shortened, so no prefix of a secret is ever shown."""
    lines = [line.strip() for line in redact(output.getvalue()).splitlines() if line.strip()]
    return f" (it printed: {lines[-1][:SHOWN]})" if lines else ""


def _describe(error: BaseException) -> tuple[str, str]:
    """``error``'s type name and message as plain ``str``, computed on the user thread: a user's
    ``__str__`` may raise (``SystemExit`` included), and then the type name is all there is."""
    try:
        kind = str.__str__(type(error).__name__)
    except BaseException:  # a metaclass's __name__
        kind = "an exception"
    try:
        text = str(error)
        text = str.__str__(text) if isinstance(text, str) else ""  # a str subclass is a user object too
    except BaseException:
        text = ""
    return kind, text


def _exception_line(raised: Raised, redact: Redactor) -> str:
    """``Type: first line of the message``, redacted before it is shortened; the type alone when
    the message is empty."""
    lines = [line.strip() for line in redact(raised.text).splitlines() if line.strip()]
    return f"{raised.kind}: {lines[0][:SHOWN]}" if lines else raised.kind


def _kind(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


_END = object()

_ENGINE_ERRORS = frozenset({PullmodeError, PullError, CredentialError, DeadlineReached})
"""The engine's own errors, which a puller's ``self.session`` raises through its code: passed on as
what they are (``DeadlineReached`` ends a pull cleanly), rebuilt from their redacted text."""


class _Unusable(Exception):
    """What user code handed over cannot be used; ``args[0]`` says what it did, in one phrase
    (``yielded a dict, expected a pullmode_dagster.Page``). Raised on the user thread."""


_OWN_ERRORS = _ENGINE_ERRORS | {_Unusable}
"""Errors whose class (exactly) crosses back from the user thread: the engine acts on which it is."""


class CustomPuller(Puller):
    """Runs the user's puller on a :class:`UserThread`, each call bounded by the pull's deadline,
    turning whatever it raises, and every page it yields wrongly, into one redacted line.

    Every interaction with a user object (a method, an attribute, ``str()`` of an exception, a
    ``position_model`` validator, ``Page.where``, a record) happens on that thread, and only plain
    builtins cross back: the engine's own :class:`Page` of exact ``dict``/``list``/``str``/``int``/
    ``float``/``bool``/``None`` values, and exception text computed there."""

    config_model = CustomSource
    source: CustomSource

    def __init__(self, source: CustomSource, **kwargs: Any):
        super().__init__(source, **kwargs)
        self._thread: UserThread | None = None
        self._iterating = False
        self._page_count = 0
        try:
            cls = load_puller_class(source.module, redact=self.redact)
        except PullmodeError as exc:
            raise PullError(self.redact(f"source {source.name!r}: module: {exc}")) from None
        self._thread = thread = UserThread(f"pullmode-custom-{source.name}", self.redact)
        # The inner puller shares this one's context (its logger redacts) and redactor; it lives in
        # the thread's objects, which only calls on that thread touch.
        try:
            # The user's class decides, per instance of this wrapper: a ClassVar of Puller's, set here.
            self.window_by_event_time = self._call(  # type: ignore[misc]
                lambda: _create(thread.objects, cls, source, self.credentials, self.context, self.redact),
                "while being created",
                failed="could not be created",
            )
        except BaseException:
            thread.stop()  # nobody will close a puller that was never made
            raise

    def _failed(self, what: str) -> PullError:
        return PullError(self.redact(f"source {self.source.name!r}: custom puller {self.source.module} {what}"))

    def _limit(self) -> float:
        """Seconds a call may take: up to the pull's deadline, plus one request's timeout (a request
        a cooperative puller sent just before the deadline may finish). Without a deadline (a
        preview), a whole pull's worth."""
        grace = self.source.request_timeout_seconds
        if self.context.deadline is None:
            return self.source.pull_deadline_seconds + grace
        return max(0.0, self.context.deadline - self.context.clock()) + grace

    def _call(self, fn: Callable[[], Any], doing: str, *, failed: str = "raised") -> Any:
        """``fn()`` on the puller's thread; what it raises, or an overrun, is a :class:`PullError`."""
        assert self._thread is not None
        try:
            return self._thread.run(fn, self._limit())
        except Overrun:
            raise self._failed(
                f"overran the pull's deadline {doing}: pullDeadlineSeconds ({self.source.pull_deadline_seconds:g} s) "
                f"and requestTimeoutSeconds ({self.source.request_timeout_seconds:g} s) after it passed; it was left "
                "running in the background (a puller must stop at self.context.deadline, or send its requests "
                "with self.session)"
            ) from None
        except Raised as raised:
            if raised.error_type is _Unusable:
                raise self._failed(raised.text) from None
            if raised.error_type in _ENGINE_ERRORS:
                raise raised.error_type(self.redact(raised.text)) from None
            raise self._failed(f"{failed}: {_exception_line(raised, self.redact)}") from None

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        assert self._thread is not None
        objects = self._thread.objects
        try:
            self._iterating = True
            self._call(lambda: _iterate(objects, start, window), "in pages()")
            while (page := self._call(lambda: self._next_page(objects), "before its next page")) is not _END:
                yield self._engine_page(*page)
        except Exception:
            # The failure is what to report: closing the user's pages must not replace it (an overrun
            # there, a __del__ still running ahead of it on the user thread).
            with contextlib.suppress(PullmodeError, DeadlineReached):
                self._close_iterator()
            raise
        except BaseException:
            self._close_iterator()
            raise
        else:
            self._close_iterator()

    def probe(self, start: CursorState) -> ProbeAnswer:
        """The puller's own ``probe(start)``, on its thread like its other calls, its answer copied
        there into plain values; without one, "unknown" (every tick launches a run)."""

        assert self._thread is not None
        objects = self._thread.objects

        def ask() -> ProbeAnswer:
            inner = objects["inner"]
            if type(inner).probe is Puller.probe:
                return UNKNOWN
            answer = plain_answer(inner.probe(start), self.source.name)
            del inner
            requests = getattr(objects["inner"], "requests", 0)
            if _count(requests):
                self.requests = int.__int__(requests)
            return answer

        return self._call(ask, "in probe()")

    def _next_page(self, objects: dict[str, Any]) -> Any:
        """The next page as the engine's own :class:`Page` of plain values, or ``_END``; runs on the
        user thread, so whatever the page's objects do happens there (see :func:`plain_page`)."""
        page = next(objects["iterator"], _END)
        requests = getattr(objects["inner"], "requests", 0)
        if _count(requests):
            self.requests = int.__int__(requests)
        if page is _END:
            return _END
        plain = plain_page(page, objects["position_model"], self.source.name)
        del page
        self._page_count += 1
        # The page's where() stays here, for naming this page's rejected records.
        objects["where"] = (self._page_count, plain.where)
        has_where, plain.where = plain.where is not None, None
        return plain, has_where

    def _engine_page(self, page: _PlainPage, has_where: bool) -> Page:
        page.location = self.redact(page.location)  # it reaches the log and the rejects table
        kept, location, number = page.kept, page.location, self._page_count
        if has_where or kept is not None:
            page.where = lambda i: self._record_name(number, kept, location, i)
        return page

    def _record_name(self, number: int, kept: list[int] | None, location: str, i: int) -> str:
        """A rejected record's name: the puller's ``where(i)`` (on its thread, a plain str), for the
        index the puller gave it (records it yielded that could not be converted are not passed on)."""
        assert self._thread is not None
        objects = self._thread.objects
        index = kept[i] if kept is not None else i
        fallback = f"{location}, record {index + 1}"
        return self.redact(self._call(lambda: _record_name_of(objects, number, index, fallback), "in a Page's where()"))

    def _close_iterator(self) -> None:
        thread = self._thread
        if self._iterating and thread is not None and not (thread.stuck or thread.stopped):
            self._iterating = False
            objects = thread.objects
            self._call(lambda: _close(objects), "closing its pages")

    def close(self) -> None:
        thread = self._thread
        if thread is None or thread.stuck or thread.stopped:
            return
        try:
            self._close_iterator()
            self._call(lambda: thread.objects["inner"].close(), "in close()")
        finally:
            # The user's puller is released on its thread, bounded like any call into it.
            thread.stop(self._limit())


# What follows runs on the user thread: it may touch user objects, and hands back plain values.


def _create(
    objects: dict[str, Any], cls: type[Puller], source: CustomSource, credentials: Any, context: Any, redact: Redactor
) -> bool:
    """Makes the puller (kept in ``objects``) and gives its ``window_by_event_time``."""
    objects["inner"] = inner = cls(source, credentials=credentials, context=context, redactor=redact)
    objects["position_model"] = model = inner.position_model
    by_event_time = inner.window_by_event_time
    if not (isinstance(model, type) and issubclass(model, Position)):
        raise _Unusable(
            f"has a position_model that is {_kind(model)}, expected a subclass of pullmode_dagster.Position"
        )
    if type(by_event_time) is not bool:
        raise _Unusable(f"has a window_by_event_time that is {_kind(by_event_time)}, expected True or False")
    return by_event_time


def _iterate(objects: dict[str, Any], start: CursorState, window: Window | None) -> None:
    pages = objects["inner"].pages(start, window=window)
    if not isinstance(pages, Iterable):
        raise _Unusable(f"returned {_kind(pages)} from pages(), expected an iterator of Page")
    objects["iterator"] = iter(pages)


def _close(objects: dict[str, Any]) -> None:
    objects.pop("where", None)
    iterator = objects.pop("iterator", None)
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _record_name_of(objects: dict[str, Any], number: int, index: int, fallback: str) -> str:
    """The name the page ``number``'s ``where`` gives record ``index``; ``fallback`` without one."""
    current, names = objects.get("where", (None, None))
    if current != number or names is None:
        return fallback
    return _record_name(names, index)


def _record_name(names: Callable[[int], str], index: int) -> str:
    name = names(index)
    if not isinstance(name, str):
        raise _Unusable(f"yielded a Page whose where({index}) returned {_kind(name)}, expected a str")
    return str.__str__(name)


@dataclass
class _PlainPage(Page):
    kept: list[int] | None = None
    """The puller's index of each record passed on, when some could not be converted (else None)."""


_FIELDS = ("records", "nbytes", "location", "resume", "drained", "where", "rejects", "files", "boundary", "plain")


def plain_answer(answer: object, source_name: str) -> ProbeAnswer:
    """The engine's own copy of a puller's probe answer (on the user thread); :class:`_Unusable` when
    it is not one. A record that cannot be made JSON data is news: the run rejects it, visibly."""
    if not isinstance(answer, ProbeAnswer):
        raise _Unusable(f"returned {_kind(answer)} from probe(), expected a pullmode_dagster.ProbeAnswer")
    verdict, records = answer.verdict, answer.records
    if type(verdict) is not str or verdict not in ("new", "nothing_new", "unknown"):
        raise _Unusable("returned a ProbeAnswer whose verdict is not 'new', 'nothing_new' or 'unknown'")
    if records is None:
        return ProbeAnswer(str.__str__(verdict))
    if not isinstance(records, list):
        raise _Unusable(f"returned a ProbeAnswer whose records are {_kind(records)}, expected a list or None")
    plain, rejects, _ = plain_records(records, None, "probe", source_name)
    return NEW if rejects else ProbeAnswer.after(plain)


def plain_page(page: object, position_model: type[Position], source_name: str) -> _PlainPage:
    """The engine's own copy of a yielded page, of plain values only; :class:`_Unusable` when the
    engine cannot use it. A declared ``position_model`` checks ``resume`` as the next pull will."""
    if not isinstance(page, Page):
        raise _Unusable(f"yielded {_kind(page)}, expected a pullmode_dagster.Page")
    values = {name: getattr(page, name) for name in _FIELDS}  # each read once: a subclass may compute them
    rejects = values["rejects"]
    for name, ok, expected in (
        ("records", isinstance(values["records"], list), "a list of records"),
        ("nbytes", _count(values["nbytes"]), "a count of bytes (an int >= 0)"),
        ("location", isinstance(values["location"], str), "a str"),
        ("resume", isinstance(values["resume"], dict), "a dict (the position after this page)"),
        ("drained", type(values["drained"]) is bool, "True or False"),
        ("boundary", type(values["boundary"]) is bool, "True or False"),
        ("plain", type(values["plain"]) is bool, "True or False"),
        ("files", _count(values["files"]), "a count of files (an int >= 0)"),
        ("rejects", isinstance(rejects, list) and all(isinstance(r, Reject) for r in rejects), "a list"),
        ("where", values["where"] is None or callable(values["where"]), "None or a function"),
    ):
        if not ok:
            raise _Unusable(f"yielded a Page whose {name} is {_kind(values[name])}, expected {expected}")
    location = str.__str__(values["location"])
    records, converted, kept = plain_records(values["records"], values["where"], location, source_name)
    return _PlainPage(
        records=records,
        nbytes=int.__int__(values["nbytes"]),
        location=location,
        resume=_plain_resume(values["resume"], position_model),
        drained=values["drained"],
        where=values["where"],
        rejects=[_plain_reject(r) for r in rejects] + converted,
        files=int.__int__(values["files"]),
        boundary=values["boundary"],
        plain=values["plain"],
        kept=kept,
    )


def _plain_resume(resume: dict[Any, Any], position_model: type[Position]) -> dict[str, Any]:
    if not all(isinstance(key, str) for key in resume):
        raise _Unusable(
            "yielded a Page whose resume has a key that is not a str, expected str keys (the cursor is a JSON object)"
        )
    try:
        json.dumps(resume, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Unusable(
            f"yielded a Page whose resume is not JSON ({str(exc).splitlines()[0][:SHOWN]}), expected JSON values "
            "only (the cursor is JSON)"
        ) from None
    plain = resume if _is_plain(resume) else _to_plain(resume)
    if position_model is not Position:
        try:
            position_model.model_validate({k: v for k, v in plain.items() if v is not None})
        except ValidationError as exc:
            raise _Unusable(
                f"yielded a Page whose resume does not fit its position_model {position_model.__name__} "
                f"({position_problems(exc)}); the next pull could not start from it"
            ) from None
    return plain


def _plain_reject(reject: Reject) -> Reject:
    texts = [getattr(reject, name) for name in ("source_name", "reason", "raw_record", "location")]
    if not all(isinstance(text, str) for text in texts):
        raise _Unusable("yielded a Page whose rejects hold a text that is not a str, expected str fields")
    return Reject(*(str.__str__(text) for text in texts))


_SCALARS = frozenset({str, int, float, bool, type(None)})


class _NotJson(Exception):
    """A value in a record that cannot be made JSON data; ``args[0]`` names it."""


def plain_records(
    records: list[Any], names: Callable[[int], str] | None, location: str, source_name: str
) -> tuple[list[Any], list[Reject], list[int] | None]:
    """``records`` as plain JSON data (exact ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
    ``float``, ``bool``, ``None``), the rejects for those that cannot be, and the index of each kept
    record when some were rejected. A page that is plain already (decoded JSON) is checked, not
    copied; a subclass of a builtin is copied through the builtin's own methods (a ``dict`` subclass's
    ``get`` or ``items`` is never called); any other value becomes ``str(value)``, as ``raw_payload``
    has always written it."""
    try:
        if type(records) is list and _is_plain(records):
            return records, [], None
    except RecursionError:
        pass
    plain: list[Any] = []
    rejects: list[Reject] = []
    kept: list[int] = []
    for i, raw in enumerate(list.__iter__(records)):
        try:
            plain.append(raw if _is_plain(raw) else _to_plain(raw))
            kept.append(i)
            continue
        except RecursionError:
            reason = "record is nested too deeply to normalize"
        except _NotJson as exc:
            reason = f"record cannot be made JSON data: it holds {exc.args[0]}"
        name = _record_name(names, i) if names is not None else f"{location}, record {i + 1}"
        rejects.append(Reject(source_name, reason, _raw_text(raw), name))
    return plain, rejects, (kept if rejects else None)


def _is_plain(value: Any) -> bool:
    """True when ``value`` is plain JSON data already (exact builtin types only: no user code runs)."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _SCALARS and not _is_plain(item)):
                return False
        return True
    if kind is list:
        for item in value:  # noqa: SIM110 - a loop, not all(): this is the hot path
            if type(item) not in _SCALARS and not _is_plain(item):
                return False
        return True
    return kind in _SCALARS


def _to_plain(value: Any) -> Any:
    """A plain JSON copy of ``value`` (see :func:`plain_records`); :class:`_NotJson` for what has none."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, dict):
        return {_plain_key(key): _to_plain(item) for key, item in dict.items(value)}
    if isinstance(value, list):
        return [_to_plain(item) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return [_to_plain(item) for item in tuple.__iter__(value)]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)  # bool cannot be subclassed
    if isinstance(value, float):
        return float.__float__(value)
    try:
        text = str(value)
    except PASSES_THROUGH:
        raise
    except BaseException as exc:
        raise _NotJson(f"{_kind(value)} whose str() raised {_describe(exc)[0]}") from None
    if not isinstance(text, str):
        raise _NotJson(f"{_kind(value)} whose str() is not a str")
    return str.__str__(text)


def _plain_key(key: Any) -> str:
    """An object key as ``json.dumps`` writes it (str, int, float, bool, None); else :class:`_NotJson`."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, int):
        return int.__repr__(int.__int__(key))
    if isinstance(key, float):
        return json.dumps(float.__float__(key))
    raise _NotJson(f"an object key that is {_kind(key)}")


def _raw_text(raw: Any) -> str:
    """A rejected record's text, never failing (its own methods may raise anything)."""
    try:
        return raw_text(raw)
    except PASSES_THROUGH:
        raise
    except BaseException:
        return f"<{type(raw).__name__}>"


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


register(Adapter("custom", CustomSource, CustomPuller, kind="python"))
