"""The one ``Definitions`` of tradegraph: assets, resources, jobs, checks, schedules, sensors, executor."""

from __future__ import annotations

import dagster as dg

from assets.bars.asset import bars
from assets.features.asset import features
from resources.lineage.io_manager import LineageIOManager
from resources.lineage.resource import LineageResource
from resources.market.resource import MarketDataResource

ALL_ASSETS = [bars, features]

trading_job = dg.define_asset_job(
    "trading_job",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    description="The whole graph for one bar partition: market snapshot → features → … → orders → P&L.",
    tags={"tradegraph/mode": "live"},
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[trading_job],
    resources={
        "market": MarketDataResource(),
        "lineage": LineageResource(),
        "lineage_io": LineageIOManager(),
    },
    executor=dg.in_process_executor,
)
