"""The demo's downstream asset: what a project builds on a source's events (README, "Downstream
assets"). It declares ``ingestion/demo_usage`` as its input and receives the day's events as a
DataFrame; nothing here knows about the trace store. Its automation condition makes it follow the
pulls: today's partition is recomputed after each pull of the usage feed (``automation``)."""

import warnings

import dagster as dg
import pandas as pd

from .setup import demo_start

DAILY = dg.DailyPartitionsDefinition(start_date=demo_start().isoformat(), timezone="UTC", end_offset=1)
"""From the demo usage source's ``startDate`` (a week back); ``end_offset=1``: today, in progress, is
a partition too."""

with warnings.catch_warnings():
    # Beta in Dagster 1.13, and the one way to say it: today's partition depends on hours that have
    # not come yet, and receives those that have.
    warnings.simplefilter("ignore", dg.BetaWarning)
    HOURS_SO_FAR = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)

FOLLOWS_THE_PULLS = (
    dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()).with_label("follows the pulls")
)
"""Today's partition, after any of today's usage hours was pulled (and not while a pull of them, or
this asset, is in progress). ``eager()`` would also wait for every hour of the day so far to hold a
pull: an hour the demo was not running would hold the day back."""


@dg.asset(
    key=["usage", "daily_cost_by_actor"],
    ins={"events": dg.AssetIn(key=["ingestion", "demo_usage"], partition_mapping=HOURS_SO_FAR)},
    partitions_def=DAILY,
    group_name="usage",
    kinds={"pandas"},
    automation_condition=FOLLOWS_THE_PULLS,
    description="Cost and tokens per actor per UTC day, from the demo usage feed.",
)
def daily_cost_by_actor(context: dg.AssetExecutionContext, events: pd.DataFrame) -> dg.MaterializeResult:
    by_actor = cost_by_actor(events)
    context.log.info(f"{context.partition_key}: {len(events)} events, {len(by_actor)} actors")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(by_actor),
            "events": len(events),
            "total_cost_usd": round(float(by_actor["cost_usd"].sum()), 6),
            "by_actor": dg.MetadataValue.table(
                records=[dg.TableRecord(row) for row in by_actor.to_dict("records")],
                schema=dg.TableSchema(
                    columns=[
                        dg.TableColumn("actor", "string"),
                        dg.TableColumn("events", "int"),
                        dg.TableColumn("cost_usd", "float"),
                        dg.TableColumn("tokens_input", "int"),
                        dg.TableColumn("tokens_output", "int"),
                    ]
                ),
            ),
        }
    )


def cost_by_actor(events: pd.DataFrame) -> pd.DataFrame:
    """One row per actor (no actor: ``(none)``), most expensive first."""
    grouped = events.assign(actor=events["actor"].fillna("(none)")).groupby("actor", as_index=False)
    table = grouped.agg(
        events=("source_event_id", "count"),
        cost_usd=("cost_usd", "sum"),
        tokens_input=("tokens_input", "sum"),
        tokens_output=("tokens_output", "sum"),
    )
    table["cost_usd"] = table["cost_usd"].round(6)
    return table.sort_values(["cost_usd", "actor"], ascending=[False, True]).reset_index(drop=True)
