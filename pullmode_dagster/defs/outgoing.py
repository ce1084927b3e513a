"""The Dagster layer's one way out: every value it writes outside the process passes here first.

Materialization and observation metadata, failure descriptions, log lines, skip reasons, sensor
cursors, run config and tags, what ``pullmode pull`` prints, and alert payloads: each is redacted
with the source's redactor (``engine/fetch/redaction.py``), and every cursor is sealed
(``engine/fetch/sealing.py``) or refused. The engine seals positions as it pulls; this is the same rule
for what the poller and the CLI hand on.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from ..engine.cursor import CursorState
from ..engine.declare.credentials import ResolvedCredentials
from ..engine.declare.models import SourceConfig
from ..engine.fetch.redaction import Redactor
from ..engine.fetch.sealing import Sealer
from ..engine.pull import seal_state


def secrets_for(source: SourceConfig) -> ResolvedCredentials:
    """``source``'s secrets that can be read now (never fails: a missing one fails its pull, not
    the poller, the CLI or an alert). Its ``redact`` is what an alert payload goes through."""
    return ResolvedCredentials.available(source)


def metadata(values: Mapping[str, object], redact: Redactor) -> dict[str, object]:
    """Dagster metadata with every text redacted: plain text, JSON documents and table records."""
    out: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = redact(value)
        elif isinstance(value, dict | list):
            value = dg.MetadataValue.json(redact.scrub(value))
        elif isinstance(value, dg.JsonMetadataValue):
            value = dg.MetadataValue.json(redact.scrub(value.data))
        elif isinstance(value, dg.TextMetadataValue):
            value = dg.MetadataValue.text(redact(value.text))
        elif isinstance(value, dg.TableMetadataValue):
            records = [dg.TableRecord(redact.scrub(dict(r.data))) for r in value.records]
            value = dg.MetadataValue.table(records=records, schema=value.schema)
        out[key] = value
    return out


class CursorSeal:
    """Seals the cursors the poller and ``pullmode pull`` store and hand to a run, with the
    source's secrets read once per evaluation; a cursor that cannot be sealed is refused."""

    def __init__(self, source: SourceConfig, secrets: ResolvedCredentials | None = None):
        self.source = source
        self.secrets = secrets if secrets is not None else secrets_for(source)
        self.redact = self.secrets.redact
        self._sealer = Sealer(self.secrets.values, self.redact)

    def __call__(self, state: CursorState, what: str = "cursor") -> CursorState:
        return seal_state(self._sealer, state, source=self.source.name, what=what)
