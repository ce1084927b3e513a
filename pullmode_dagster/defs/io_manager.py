"""How a downstream asset receives a source's events: ``ingestion/<name>`` (or the key a translator
gave it) as an input, annotated ``pandas.DataFrame`` or ``pyarrow.Table``.

An IO manager on every source asset; its write is a no-op, because a pull stores its events itself,
batch by batch as it goes. Design: docs/design/exports-and-arrow.md#the-io-manager
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dagster as dg

from .names import SOURCE_TAG
from .resources import TraceStoreResource

EVENTS_IO_MANAGER_KEY = "pullmode_events"


class TraceStoreEventsIOManager(dg.ConfigurableIOManager):
    """Loads a source asset's stored events: those of the partitions the downstream asset depends on
    (a daily asset over an hourly source: its day), or every event of the source when the
    downstream asset is not partitioned."""

    trace_store: TraceStoreResource

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Nothing to write: the pull already stored the events (docs/design/exports-and-arrow.md says why)."""

    def load_input(self, context: dg.InputContext) -> Any:
        # Imported here: a code location that never loads events never imports pyarrow or pandas.
        from ..engine.store.arrow import read_dataframe, read_table

        source = _source(context)
        start, end = _window(context)
        wanted = _wanted(context)
        with self.trace_store.open() as store:
            if wanted == "table":
                table = read_table(store, source=source, start=start, end=end)
                rows = table.num_rows
                result: Any = table
            else:
                result = read_dataframe(store, source=source, start=start, end=end)
                rows = len(result)
        span = f"{start.isoformat()} .. {end.isoformat()}" if start and end else "all stored events"
        context.log.info(f"{source}: loaded {rows} events ({span})")
        return result


def _source(context: dg.InputContext) -> str:
    """The source whose events the input is: the ``pullmode/source`` tag every source asset carries
    (a translator may give the asset any key)."""
    return context.upstream_output.asset_spec.tags[SOURCE_TAG]


def _window(context: dg.InputContext) -> tuple[datetime | None, datetime | None]:
    """The upstream time window a partitioned downstream step depends on; none (every event) for an
    unpartitioned step."""
    if not context.has_partition_key or not context.has_asset_partitions:
        return None, None
    window = context.asset_partitions_time_window
    return window.start, window.end


def _wanted(context: dg.InputContext) -> str:
    """``table`` for ``pyarrow.Table``, ``frame`` for ``pandas.DataFrame`` or no annotation; else a
    clear error rather than Dagster's type check failing after the load."""
    annotation = context.dagster_type.typing_type
    qualified = f"{getattr(annotation, '__module__', '')}.{getattr(annotation, '__qualname__', annotation)}"
    if qualified.startswith("pyarrow.") and qualified.endswith(".Table"):
        return "table"
    if (qualified.startswith("pandas.") and qualified.endswith(".DataFrame")) or annotation in (Any, object, None):
        return "frame"
    raise dg.Failure(
        description=f"input {context.name!r} ({context.asset_key.to_user_string()}): annotate it "
        f"pandas.DataFrame or pyarrow.Table to receive the stored events (it is {qualified})"
    )
