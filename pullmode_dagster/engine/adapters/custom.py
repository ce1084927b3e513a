"""``custom``: a puller class of your own, named by ``module: package.module:ClassName``.

The class subclasses :class:`pullmode_dagster.Puller` (README, "Writing a custom puller") and gets
everything a built-in adapter gets: ``eventMapping``, dedup, checkpoints and cursor commit, metadata,
checks, redaction and the CLI. An import error is a validation problem naming ``module``; anything
the puller raises becomes one redacted line naming the source.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, field_validator

from ..config import ConfigProblem, EventMapping
from ..cursor import CursorState
from ..errors import PullError, PullmodeError
from .base import HttpSourceConfig, Page, Puller, Window
from .registry import Adapter, register

MODULE_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


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
            load_puller_class(self.module)
        except PullmodeError as exc:
            return [("module", str(exc))]
        return []

    def describe(self) -> str:
        return f"Pulls with the custom puller {self.module} (custom)"


def load_puller_class(path: str) -> type[Puller]:
    """The class ``path`` names; a clear error when it cannot be imported or is not a Puller."""
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raises while importing
        raise PullmodeError(f"cannot import {module_name}: {type(exc).__name__}: {_first_line(exc)}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PullmodeError(f"{module_name} has no {class_name}")
    if not (isinstance(cls, type) and issubclass(cls, Puller)) or cls is Puller:
        raise PullmodeError(f"{path} is not a subclass of pullmode_dagster.Puller")
    return cls


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


class CustomPuller(Puller):
    """Runs the user's puller, turning whatever it raises into one redacted line."""

    config_model = CustomSource
    source: CustomSource

    def __init__(self, source: CustomSource, **kwargs: Any):  # type: ignore[override]
        super().__init__(source, **kwargs)
        try:
            cls = load_puller_class(source.module)
            self.inner = cls(source, **kwargs)
        except PullmodeError as exc:
            raise PullError(self.redact(f"source {source.name!r}: module: {exc}")) from None
        except Exception as exc:
            raise self._failed("could not be created", exc) from None
        self.position_model = self.inner.position_model  # type: ignore[misc]
        self.window_by_event_time = self.inner.window_by_event_time  # type: ignore[misc]

    def _failed(self, what: str, exc: BaseException) -> PullError:
        return PullError(
            self.redact(
                f"source {self.source.name!r}: custom puller {self.source.module} {what}: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            )
        )

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        try:
            for page in self.inner.pages(start, window=window):
                self.requests = self.inner.requests
                yield page
        except PullmodeError as exc:
            exc.args = (self.redact(str(exc)),)  # the engine's own errors are; a puller's may not be
            raise
        except Exception as exc:
            raise self._failed("raised", exc) from None
        finally:
            self.requests = self.inner.requests

    def close(self) -> None:
        inner = getattr(self, "inner", None)
        if inner is not None:
            inner.close()


register(Adapter("custom", CustomSource, CustomPuller, kind="python"))
