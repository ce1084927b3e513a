"""Event content outside the trace store: what of a pulled event's field values the project may
write where the store's access control and retention do not reach (Dagster's run metadata, logs,
asset-check metadata, alert payloads). The store keeps every value; this decides what is shown of
them elsewhere.

One setting per deployment (``$PULLMODE_EVENT_CONTENT``), overridden per source (``eventContent``):

- ``hidden`` (the default): no event field value but its timestamps (the cursor needs them); no
  preview table, check examples withheld.
- ``masked``: a preview whose ``actor`` and ``target`` are per-run pseudonyms (a keyed hash whose key
  lives in the run's memory only, so Dagster's storage holds nothing linkable to a person); event ids,
  timestamps, actions, costs and token counts as they are.
- ``shown``: the preview and the examples as they are.

Why ``hidden`` by default, and why per-run pseudonyms rather than ``a***@example.com``: docs/compliance.md
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, cast, get_args

from ..errors import PullmodeError
from ..fetch.redaction import without_email_addresses

EVENT_CONTENT_ENV = "PULLMODE_EVENT_CONTENT"
EventContent = Literal["hidden", "masked", "shown"]
EVENT_CONTENT_CHOICES: tuple[str, ...] = get_args(EventContent)
DEFAULT_EVENT_CONTENT: EventContent = "hidden"
MASKED_FIELDS = ("actor", "target")
"""What ``masked`` pseudonymizes: who, and on what (a model, but also a file, a conversation, a person)."""
MASK_PREFIX = "masked:"
MASK_HEX_DIGITS = 10
"""40 bits: distinct people in one preview never collide in practice; nothing to look up either."""


def deployment_event_content(value: str | None = None) -> EventContent:
    """The deployment's setting: ``value`` (a resource's), else ``$PULLMODE_EVENT_CONTENT``, else
    ``hidden``. A value that is none of the choices is an error naming the variable: a typo must not
    show what the deployment meant to hide (nor hide what it meant to show, silently)."""
    text = (value if value is not None else os.environ.get(EVENT_CONTENT_ENV, "")).strip()
    if not text:
        return DEFAULT_EVENT_CONTENT
    if text not in EVENT_CONTENT_CHOICES:
        shown = f"{text[:20]!r}" if text.isprintable() else "the value given"
        raise PullmodeError(f"${EVENT_CONTENT_ENV} must be one of {', '.join(EVENT_CONTENT_CHOICES)}, not {shown}")
    return cast(EventContent, text)  # one of the choices, checked above


def event_content_problem() -> str | None:
    """What is wrong with ``$PULLMODE_EVENT_CONTENT`` (None: nothing), for ``pullmode validate``."""
    try:
        deployment_event_content()
    except PullmodeError as exc:
        return str(exc)
    return None


class ContentSource(Protocol):
    """What a policy needs of a source: its ``eventContent`` (a :class:`~.models.SourceConfig`, which
    holds an :data:`EventContent` field, so this module does not import it back)."""

    @property
    def event_content(self) -> EventContent | None: ...


class ContentPolicy:
    """One run's rule for event content outside the store. Masking keys are drawn per policy (per
    run) and never written anywhere: the same actor is the same pseudonym throughout one run's
    metadata, and no pseudonym can be matched to a person afterwards, not even by a dictionary of
    the company's email addresses."""

    def __init__(self, mode: EventContent, *, key: bytes | None = None):
        if mode not in EVENT_CONTENT_CHOICES:
            raise ValueError(f"event content must be one of {', '.join(EVENT_CONTENT_CHOICES)}, not {mode!r}")
        self.mode: EventContent = mode
        self._key = key if key is not None else secrets.token_bytes(32)

    @classmethod
    def for_source(cls, source: ContentSource, deployment: str | None = None) -> ContentPolicy:
        """The source's ``eventContent``, else the deployment's (``deployment``, else the environment)."""
        return cls(source.event_content or deployment_event_content(deployment))

    def mask(self, value: str | None) -> str | None:
        """A pseudonym for ``value`` (None and "" stay as they are: whether a field was mapped at all
        is what an operator debugging a mapping needs to see)."""
        if not value:
            return value
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return MASK_PREFIX + digest[:MASK_HEX_DIGITS]

    def preview(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
        """The preview's rows as this policy lets them out of the store; None: no preview at all."""
        if self.mode == "hidden":
            return None
        if self.mode == "shown":
            return [dict(row) for row in rows]
        return [{k: self.mask(v) if k in MASKED_FIELDS else v for k, v in row.items()} for row in rows]

    def vendor_text(self, text: str) -> str:
        """A vendor's own words (an error response) as a failure message may quote them: that message
        reaches Dagster's run storage and the alerts, so unless content is ``shown`` an email address
        in it (the person a 403 names, an actor a 400 echoes back) is removed. ``pullmode preview``
        shows the response as received (docs/compliance.md says why not withheld whole)."""
        return text if self.mode == "shown" else without_email_addresses(text)

    @classmethod
    def for_puller(cls, source: ContentSource, given: ContentPolicy | None) -> ContentPolicy:
        """``given`` (the caller's, as the Dagster layer resolved it), else the source's and the
        environment's; a setting that is none of the choices counts as ``hidden`` here (the run
        fails on it with its own message; an error path must not fail anew, nor show more)."""
        if given is not None:
            return given
        try:
            return cls.for_source(source)
        except PullmodeError:
            return cls(DEFAULT_EVENT_CONTENT)

    def examples(self, event_ids: Sequence[str]) -> str:
        """Offending events named in check metadata: their ids, unless content is hidden (then only
        where to find them: the count is beside it, and the store has the rows)."""
        if not event_ids:
            return "none"
        if self.mode == "hidden":
            return "withheld (eventContent: hidden); the trace store has the rows"
        return ", ".join(event_ids)
