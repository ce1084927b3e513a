"""Re-pull windows: one time partition per day (or hour) from the source's ``startDate``."""

from __future__ import annotations

import dagster as dg

from ..engine.config import SourceConfig


def partitions_for(source: SourceConfig) -> dg.TimeWindowPartitionsDefinition:
    """``end_offset=1`` includes the partition in progress, so the poller can target the partition
    that contains its tick."""
    start = source.start_datetime
    if source.partitioning == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), end_offset=1, timezone="UTC")
    return dg.DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), end_offset=1, timezone="UTC")
