"""What user code writes, redacted: ``print`` / ``sys.stdout`` / ``sys.stderr``, ``warnings``,
stdlib ``logging`` (any logger) and ``sys.unraisablehook`` (a ``__del__`` that raises).

User code runs on threads of its own (``adapters/custom.py``). Each such thread is attached here
with its source's redactor; thread-aware stand-ins, installed once and re-checked before user code
runs (something may have replaced ``sys.stderr`` since), redact what an attached thread writes and
pass everyone else's output through untouched, so Dagster's own logging and other threads are as
they were. Bytes written past Python (``os.write`` to a file descriptor, C extensions) are not seen.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..fetch.redaction import Redactor


@dataclass
class _Attached:
    redact: Redactor
    kept: io.StringIO | None = None
    """When set, what the thread prints is kept here (an import's output, quoted on failure)
    rather than written out."""
    pending: dict[int, str] = field(default_factory=dict)
    """Per stream, the text after the last newline: redacted only once its line is whole, so a
    secret written in pieces is still recognized."""


_ATTACHED: dict[int, _Attached] = {}
"""Thread ident -> what its writes go through. Each thread touches only its own entry."""
_INSTALL_LOCK = threading.Lock()


def _current() -> _Attached | None:
    return _ATTACHED.get(threading.get_ident())


class _RedactingStream:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: an attached thread's writes are redacted line
    by line (or kept aside); every other thread's pass through to the stream it wraps."""

    def __init__(self, original: Any):
        self._original = original

    def write(self, text: str) -> int:
        attached = _current()
        if attached is None:
            return self._original.write(text)
        whole = attached.pending.pop(id(self), "") + str(text)
        lines, newline, rest = whole.rpartition("\n")
        if rest:
            attached.pending[id(self)] = rest
        if newline:
            self._emit(attached, lines + newline)
        return len(text)

    def flush(self) -> None:
        attached = _current()
        if attached is not None and (rest := attached.pending.pop(id(self), "")):
            self._emit(attached, rest)
        self._original.flush()

    def _emit(self, attached: _Attached, text: str) -> None:
        if attached.kept is not None:
            attached.kept.write(text)
        else:
            self._original.write(attached.redact(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _redacting_record_factory(previous: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        attached = _current()
        if attached is not None:  # format here, on the user's thread, and hand on only redacted text
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            record.msg, record.args = attached.redact(message), None
            if record.exc_info:
                record.exc_text = attached.redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
                record.exc_info = None  # the exception object stays on this thread
            if record.stack_info:
                record.stack_info = attached.redact(record.stack_info)
        return record

    make.pullmode_redacting = True  # type: ignore[attr-defined]  # a marker on the function: ours, installed once
    return make


def _redacting_unraisablehook(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        attached = _current()
        if attached is None:
            previous(unraisable)
            return
        try:
            lines = traceback.format_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
            where = f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}\n"
        except Exception:  # a repr that raises: the type is all there is
            lines, where = [f"{getattr(unraisable.exc_type, '__name__', 'an exception')}\n"], "Exception ignored\n"
        sys.stderr.write(attached.redact(where + "".join(lines)))

    hook.pullmode_redacting = True  # type: ignore[attr-defined]  # a marker on the function: ours, installed once
    return hook


def install() -> None:
    """Put the stand-ins in place, once each (again for a stream something else replaced since)."""
    with _INSTALL_LOCK:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _RedactingStream):
                setattr(sys, name, _RedactingStream(stream))
        factory = logging.getLogRecordFactory()
        if not getattr(factory, "pullmode_redacting", False):
            logging.setLogRecordFactory(_redacting_record_factory(factory))
        if not getattr(sys.unraisablehook, "pullmode_redacting", False):
            sys.unraisablehook = _redacting_unraisablehook(sys.unraisablehook)


@contextlib.contextmanager
def attached(redact: Redactor, kept: io.StringIO | None = None) -> Iterator[None]:
    """While inside, what this thread writes is redacted with ``redact`` (or kept in ``kept``)."""
    install()
    ident = threading.get_ident()
    _ATTACHED[ident] = _Attached(redact, kept)
    try:
        yield
    finally:
        flush()
        _ATTACHED.pop(ident, None)


def flush() -> None:
    """Write out this thread's unfinished lines (at the end of each call into user code)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _RedactingStream):
            with contextlib.suppress(Exception):
                stream.flush()
