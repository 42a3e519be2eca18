"""The one ``Definitions`` of tradegraph: assets, resources, jobs, checks, schedules, sensors, executor."""

from __future__ import annotations

import dagster as dg

from assets.bars.asset import bars
from assets.features.asset import features
from dagster_project.jobs import audit_job, trading_job
from dagster_project.sensors import bar_sensor
from resources.lineage.io_manager import LineageIOManager
from resources.lineage.resource import LineageResource
from resources.market.resource import MarketDataResource

ALL_ASSETS = [bars, features]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[trading_job, audit_job],
    sensors=[bar_sensor],
    resources={
        "market": MarketDataResource(),
        "lineage": LineageResource(),
        "lineage_io": LineageIOManager(),
    },
    executor=dg.in_process_executor,
)
