"""The one ``Definitions`` of tradegraph: assets, resources, jobs, checks, schedules, sensors, executor."""

from __future__ import annotations

import dagster as dg

from assets.arbitrated_scores.asset import arbitrated_scores
from assets.bars.asset import bars
from assets.blended_alpha.asset import blended_alpha
from assets.executions.asset import executions
from assets.executions.checks import bar_outcome_check
from assets.features.asset import features
from assets.gated_signals.asset import gated_signals
from assets.model_skill.asset import model_skill
from assets.pnl.asset import pnl
from assets.positions.asset import positions
from assets.predictions.asset import predictions
from assets.sized_orders.asset import sized_orders
from dagster_project.audit_checks import audit_verdict
from dagster_project.jobs import audit_job, trading_job
from dagster_project.monitoring import kill_switch_watch, run_failure_alerts
from dagster_project.schedules import JOBS as SCHEDULED_JOBS
from dagster_project.schedules import SCHEDULES
from dagster_project.sensors import bar_sensor
from dagster_project.sweep_job import sweep_job, sweep_result
from resources.brokers.resource import BrokerResource
from resources.kill_switch.resource import KillSwitchResource
from resources.lineage.io_manager import LineageIOManager
from resources.lineage.resource import LineageResource
from resources.market.resource import MarketDataResource
from resources.model_registry import ModelRegistryResource

ALL_ASSETS = [bars, features, predictions, model_skill, blended_alpha, positions, arbitrated_scores,
              gated_signals, sized_orders, executions, pnl]
ALL_CHECKS = [bar_outcome_check, audit_verdict]



def build_resources() -> dict:
    """The resources, configured by the deployment when the code location loads (CONFIG and the environment):
    none has a field, so a launch that sets any resource config is rejected by Dagster's own validation
    (``DagsterInvalidConfigError``) before it runs; credentials are read inside the resources
    (``dagster.EnvVar(...).get_value()``)."""
    return {
        "market": MarketDataResource.from_config(),
        "lineage": LineageResource(),
        "lineage_io": LineageIOManager(),
        "models": ModelRegistryResource(),
        "broker": BrokerResource.from_config(),
        "kill_switch": KillSwitchResource(),
    }


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[*ALL_ASSETS, sweep_result],
        asset_checks=ALL_CHECKS,
        jobs=[trading_job, audit_job, *SCHEDULED_JOBS, sweep_job],
        schedules=SCHEDULES,
        sensors=[bar_sensor, run_failure_alerts, kill_switch_watch],
        resources=build_resources(),
        executor=dg.in_process_executor,
    )


RESOURCES = build_resources()
defs = build_definitions()
