"""The bar sensor: one trading run per newly closed bar, during market hours, never a bar twice."""

from __future__ import annotations

import dagster as dg

from CONFIG.config_loader import get_cfg
from dagster_project.jobs import OBSERVE_ONLY_TAG, SKIPPED_TAG, trading_job
from dagster_project.sensor_logic import decide
from resources.launch_proof import signed_tags
from resources.lineage.io_manager import MODE_TAG
from resources.market.calendar import get_calendar
from resources.market.clock import market_now


@dg.sensor(
    job=trading_job,
    minimum_interval_seconds=get_cfg("orchestration.sensor_interval_seconds"),
    default_status=dg.DefaultSensorStatus.RUNNING if get_cfg("orchestration.sensor_autostart")
    else dg.DefaultSensorStatus.STOPPED,
    description="Requests one trading_job run for each newly closed bar (run_key = bar) during market hours; "
                "a missed bar is never traded late: only the latest bar runs, skipped bars are recorded. The "
                "session's closing bar runs observe-only (no order); nothing is requested after it.",
)
def bar_sensor(context: dg.SensorEvaluationContext):
    decision = decide(market_now(), context.cursor, get_calendar())
    if decision.bar is None:
        return dg.SkipReason(decision.reason)
    context.update_cursor(decision.bar)
    if decision.skipped:
        context.log.warning(f"skipped {len(decision.skipped)} missed bar(s): {', '.join(decision.skipped)}")
    tags = {MODE_TAG: "live", SKIPPED_TAG: ",".join(decision.skipped), **signed_tags(decision.bar)}
    if decision.observe_only:
        tags[OBSERVE_ONLY_TAG] = "true"
    return dg.RunRequest(run_key=decision.bar, partition_key=decision.bar, tags=tags)
