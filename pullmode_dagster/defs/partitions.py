"""Re-pull windows: one time partition per day (or hour) from the source's ``startDate``.

A poll run targets the partition of its cron tick, but its events fall wherever their timestamps
are; so it also reports a materialization, with the count, of every partition its events fall in
(``data_partitions``). The Partitions tab then shows which windows hold data; "missing" means no
pull has written an event dated in that window (or re-pulled it)."""

from __future__ import annotations

import dagster as dg

from ..engine.declare.models import SourceConfig


def partitions_for(source: SourceConfig) -> dg.TimeWindowPartitionsDefinition:
    """``end_offset=1`` includes the partition in progress, so the poller can target the partition
    that contains its tick. The first partition is the UTC day (or hour) that holds ``startDate``'s
    instant, whatever offset it was written with; ``isoformat`` keeps the year four digits."""
    start = source.start_datetime  # UTC
    day = start.date().isoformat()
    if source.partitioning == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=f"{day}-{start.hour:02d}:00", end_offset=1, timezone="UTC")
    return dg.DailyPartitionsDefinition(start_date=day, end_offset=1, timezone="UTC")


def data_partitions(source: SourceConfig, hour_counts: dict[str, int]) -> dict[str, int]:
    """Events per partition key, from events per UTC hour (``2026-03-01T10``), keeping only keys
    the partitions definition has (an event dated before ``startDate`` has no partition)."""
    counts: dict[str, int] = {}
    for hour, n in hour_counts.items():
        key = f"{hour[:10]}-{hour[11:13]}:00" if source.partitioning == "hourly" else hour[:10]
        counts[key] = counts.get(key, 0) + n
    first = partitions_for(source).get_first_partition_key()
    return {k: n for k, n in sorted(counts.items()) if first is not None and k >= first}
