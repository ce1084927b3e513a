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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from ..config import ConfigProblem, EventMapping
from ..cursor import CursorState
from ..errors import CredentialError, PullError, PullmodeError
from ..events import Reject
from ..redaction import Redactor
from .base import HttpSourceConfig, Page, Position, Puller, Window, position_problems
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
    """One call into user code, run on a :class:`UserThread`."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class Overrun(Exception):
    """User code did not return within its time limit; its thread was left running."""


class Raised(Exception):
    """User code raised ``error`` (anything but :data:`PASSES_THROUGH`)."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


class UserThread:
    """A daemon thread that runs one puller's code, call after call (all of it on one thread, as
    code that keeps a connection may need). Python cannot stop a thread: a call that outlives its
    limit is abandoned, left to run in the background, and the thread takes no more calls. Being a
    daemon, it never keeps the process from exiting."""

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self.stuck = False
        self.stopped = False

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call.value = call.fn()
            except BaseException as exc:  # handed to the caller's thread, which decides
                call.error = exc
            call.done.set()

    def submit(self, fn: Callable[[], Any]) -> _Call:
        if self.stuck or self.stopped:
            raise RuntimeError("this user thread takes no more calls")
        call = _Call(fn)
        self._calls.put(call)
        return call

    def result(self, call: _Call, timeout: float) -> Any:
        """``call``'s value; :class:`Raised` for what it raised, :class:`Overrun` past ``timeout``."""
        try:
            finished = call.done.wait(timeout)
        except BaseException:  # SIGTERM or Ctrl-C while waiting: the call runs on, abandoned
            self.stuck = True
            raise
        if not finished:
            self.stuck = True
            raise Overrun
        if isinstance(call.error, PASSES_THROUGH):
            raise call.error
        if call.error is not None:
            raise Raised(call.error)
        return call.value

    def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        return self.result(self.submit(fn), timeout)

    def stop(self) -> None:
        if not self.stuck and not self.stopped:
            self.stopped = True
            self._calls.put(None)


class _ThreadOutput:
    """Stands in for ``sys.stdout`` / ``sys.stderr`` while a module imports: what the importing
    thread writes (argparse's usage text, a banner) is kept aside, everyone else's passes through."""

    def __init__(self, original: Any, thread: int | None, kept: io.StringIO):
        self._original = original
        self._thread = thread
        self._kept = kept

    def write(self, text: str) -> int:
        if threading.get_ident() == self._thread:
            return self._kept.write(text)
        return self._original.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


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
    prints meanwhile is kept off the console (its last line is quoted when the import fails)."""
    redact = redact or Redactor()
    module_name, _, class_name = path.partition(":")
    limit = import_timeout()
    with _IMPORTS_LOCK:
        pending = _IMPORTS.get(module_name)
        if pending is None:
            thread = UserThread(f"pullmode-import-{module_name}")
            output = io.StringIO()
            pending = _Import(thread, thread.submit(lambda: importlib.import_module(module_name)), output)
            _IMPORTS[module_name] = pending
            wait = limit
        else:  # still importing since an earlier load: report it again at once, or take its outcome
            wait = 0.0
    try:
        module = _wait_for_import(pending, wait)
    except Overrun:
        raise PullmodeError(
            redact(
                f"cannot import {module_name}: the import did not finish within {limit:g} s (a module that waits "
                f"or runs a program at import?){_printed(pending.output)}"
            )
        ) from None
    except Raised as raised:
        exc = raised.error
        raise PullmodeError(
            redact(f"cannot import {module_name}: {_exception_line(exc)}{_printed(pending.output)}")
        ) from None
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
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PullmodeError(f"{module_name} has no {class_name}")
    if not (isinstance(cls, type) and issubclass(cls, Puller)) or cls is Puller:
        raise PullmodeError(f"{path} is not a subclass of pullmode_dagster.Puller")
    return cls


def _wait_for_import(pending: _Import, wait: float) -> Any:
    """Wait for the import with the importing thread's output kept aside. After a timeout the
    stand-ins stay in place, so what the abandoned import prints later is kept aside too."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _ThreadOutput(saved[0], pending.thread.ident, pending.output)  # type: ignore[assignment]
    sys.stderr = _ThreadOutput(saved[1], pending.thread.ident, pending.output)  # type: ignore[assignment]
    finished = False
    try:
        module = pending.thread.result(pending.call, wait)
        finished = True
        return module
    except Raised:
        finished = True
        raise
    finally:
        if finished:
            sys.stdout, sys.stderr = saved


def _printed(output: io.StringIO) -> str:
    """The last line the module printed while importing (argparse's error line), if any."""
    lines = [line.strip() for line in output.getvalue().splitlines() if line.strip()]
    return f" (it printed: {lines[-1][:300]})" if lines else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _exception_line(exc: BaseException) -> str:
    """``Type: first line of the message``; the type alone when the message is empty."""
    line = _first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _kind(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


_END = object()


class CustomPuller(Puller):
    """Runs the user's puller on a :class:`UserThread`, each call bounded by the pull's deadline,
    turning whatever it raises, and every page it yields wrongly, into one redacted line."""

    config_model = CustomSource
    source: CustomSource

    def __init__(self, source: CustomSource, **kwargs: Any):  # type: ignore[override]
        super().__init__(source, **kwargs)
        self._iterator: Iterator[Any] | None = None
        self._thread: UserThread | None = None
        try:
            cls = load_puller_class(source.module, redact=self.redact)
        except PullmodeError as exc:
            raise PullError(self.redact(f"source {source.name!r}: module: {exc}")) from None
        self._thread = UserThread(f"pullmode-custom-{source.name}")
        # The inner puller shares this one's context (its logger redacts) and redactor.
        try:
            self.inner: Puller = self._call(
                lambda: cls(source, credentials=self.credentials, context=self.context, redactor=self.redact),
                "while being created",
                failed="could not be created",
            )
        except BaseException:
            self._thread.stop()  # nobody will close a puller that was never made
            raise
        self.position_model = self.inner.position_model  # type: ignore[misc]
        self.window_by_event_time = self.inner.window_by_event_time  # type: ignore[misc]

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
            exc = raised.error
            if isinstance(exc, PullmodeError):
                exc.args = (self.redact(str(exc)),)  # the engine's own errors are; a puller's may not be
                raise exc from None
            raise self._failed(f"{failed}: {_exception_line(exc)}") from None

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        try:
            pages = self._call(lambda: self.inner.pages(start, window=window), "in pages()")
            if not isinstance(pages, Iterable):
                raise self._failed(f"returned {_kind(pages)} from pages(), expected an iterator of Page")
            self._iterator = iterator = self._call(lambda: iter(pages), "in pages()")
            while (page := self._call(lambda: next(iterator, _END), "before its next page")) is not _END:
                self.requests = self.inner.requests
                yield self._checked(page)
        finally:
            self.requests = self.inner.requests
            self._close_iterator()

    def _checked(self, page: object) -> Page:
        """``page`` if it is a Page the engine can use; else one line, and nothing of it is stored
        (the cursor stays at the last good page)."""
        problem = page_problem(page, self.inner.position_model)
        if problem is not None:
            raise self._failed(f"yielded {problem}")
        assert isinstance(page, Page)
        page.location = self.redact(page.location)  # it reaches the log and the rejects table
        return page

    def _close_iterator(self) -> None:
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "close", None)
        if close is not None and self._thread is not None and not (self._thread.stuck or self._thread.stopped):
            self._call(close, "closing its pages")

    def close(self) -> None:
        thread = self._thread
        if thread is None or thread.stuck or thread.stopped:
            return
        try:
            self._close_iterator()
            inner = getattr(self, "inner", None)
            if inner is not None:
                self._call(inner.close, "in close()")
        finally:
            thread.stop()


def page_problem(page: object, position_model: type[Position]) -> str | None:
    """What is wrong with a yielded page, in one phrase (``a dict, expected a pullmode_dagster.Page``);
    None when the engine can use it. A declared ``position_model`` checks ``resume`` as the next
    pull will."""
    if not isinstance(page, Page):
        return f"{_kind(page)}, expected a pullmode_dagster.Page"
    for name, ok, expected in (
        ("records", isinstance(page.records, list), "a list of records"),
        ("nbytes", _count(page.nbytes), "a count of bytes (an int >= 0)"),
        ("location", isinstance(page.location, str), "a str"),
        ("resume", isinstance(page.resume, dict), "a dict (the position after this page)"),
        ("drained", isinstance(page.drained, bool), "True or False"),
        ("boundary", isinstance(page.boundary, bool), "True or False"),
        ("plain", isinstance(page.plain, bool), "True or False"),
        ("files", _count(page.files), "a count of files (an int >= 0)"),
        ("rejects", isinstance(page.rejects, list) and all(isinstance(r, Reject) for r in page.rejects), "a list"),
        ("where", page.where is None or callable(page.where), "None or a function"),
    ):
        if not ok:
            return f"a Page whose {name} is {_kind(getattr(page, name))}, expected {expected}"
    if not all(isinstance(key, str) for key in page.resume):
        return "a Page whose resume has a key that is not a str, expected str keys (the cursor is a JSON object)"
    try:
        json.dumps(page.resume, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"a Page whose resume is not JSON ({_first_line(exc)}), expected JSON values only (the cursor is JSON)"
    if position_model is not Position:
        try:
            position_model.model_validate({k: v for k, v in page.resume.items() if v is not None})
        except ValidationError as exc:
            return (
                f"a Page whose resume does not fit its position_model {position_model.__name__} "
                f"({position_problems(exc)}); the next pull could not start from it"
            )
    return None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


register(Adapter("custom", CustomSource, CustomPuller, kind="python"))
