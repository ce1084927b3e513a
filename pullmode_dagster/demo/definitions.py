"""The demo's code location: every source, plus the downstream asset a project would add
(``usage/daily_cost_by_actor``), merged the way the README shows. ``pullmode demo --ui`` loads it."""

from __future__ import annotations

import dagster as dg

from ..definitions import build_definitions
from ..defs.sensors import INTERVAL_SECONDS
from .downstream import daily_cost_by_actor

COST_JOB = "daily_cost_by_actor"
AUTOMATION_SENSOR = "usage_automation"

automation = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=[daily_cost_by_actor.key],
    # Dagster's default automation sensor starts stopped; this one runs as soon as the daemon does
    # (`dagster dev` starts it), so the downstream asset follows the pulls with nothing to switch on.
    default_status=dg.DefaultSensorStatus.RUNNING,
    # The pollers' interval (Dagster's default, 30 s): the downstream asset follows a pull one
    # evaluation later, and the end-to-end test's shorter interval reaches this sensor too.
    minimum_interval_seconds=INTERVAL_SECONDS,
    description="Materializes usage/daily_cost_by_actor for today after each pull of demo_usage.",
)


def build_demo_definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        build_definitions(),
        dg.Definitions(
            assets=[daily_cost_by_actor],
            jobs=[dg.define_asset_job(COST_JOB, selection=[daily_cost_by_actor.key])],
            sensors=[automation],
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_demo_definitions()
