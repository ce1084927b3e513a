"""Each source asset's freshness policy, derived from its cron: a source whose poller stopped, or
whose pulls keep failing, turns visibly stale in the UI.

It warns after two cron intervals without a successful pull and fails after three.
Design (the rule): docs/design/monitoring.md#freshness
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from croniter import croniter

REFERENCE = datetime(2026, 1, 5, tzinfo=UTC)
"""Gaps are measured from a fixed Monday, so a policy never changes from one load to the next."""
SAMPLE_TICKS = 60
MIN_WARN = timedelta(minutes=10)
MIN_FAIL = timedelta(minutes=15)


def cron_interval(schedule: str) -> timedelta:
    """The longest gap between consecutive ticks among the first ``SAMPLE_TICKS`` after REFERENCE."""
    ticks = croniter(schedule, REFERENCE)
    previous = ticks.get_next(datetime)
    longest = timedelta(0)
    for _ in range(SAMPLE_TICKS):
        current = ticks.get_next(datetime)
        longest = max(longest, current - previous)
        previous = current
    return longest


def freshness_for(schedule: str) -> dg.FreshnessPolicy:
    interval = cron_interval(schedule)
    return dg.FreshnessPolicy.time_window(
        fail_window=max(3 * interval, MIN_FAIL), warn_window=max(2 * interval, MIN_WARN)
    )
