"""Alerts and metrics wiring: a hook on ``trading_job``, a run-failure sensor and a kill-switch watcher.

The assets are untouched: :func:`monitor_bar` reads each finished step's output values
(``HookContext.op_output_values``) and turns them into alerts and metrics (pure rules in
``resources/monitoring/bar_events.py``). Nothing here can fail a step or make trading wait: delivery runs on
a background thread (``resources/monitoring/alerts.py``) and every error is logged, never raised.
"""

from __future__ import annotations

import datetime as dt
import logging

import dagster as dg
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.launch_proof import OUTCOME_TAG
from resources.lineage.io_manager import MODE_TAG
from resources.monitoring import alerts, bar_events, metrics, switch_watch

log = logging.getLogger("tradegraph.monitoring")
WATCHED_STEPS = ("positions", "executions", "pnl")
_REFUSED_RUNS: set[str] = set()  # runs of this process whose executions step was refused
_HELD: dict[str, tuple] = {}      # run id → what its positions step said, until its executions step


def bar_close_wall(bar_ts: pd.Timestamp) -> pd.Timestamp:
    """The wall-clock instant of a bar close: itself on the wall clock; on the accelerated clock (``make ui``)
    the instant the clock file maps it to (wall start + (bar − market start) / speed)."""
    if get_cfg("clock.mode") == "wall":
        return bar_ts
    from TRAINING.common.utils.file_utils import read_json

    state = read_json(resolve_path("clock.file"))
    return (pd.Timestamp(state["wall_start"]) + (bar_ts - pd.Timestamp(state["market_start"]))
            / float(state["speed"]))


def observe_step(step: str, output: object, mode: str, bar: str, run_id: str = "",
                 now: dt.datetime | None = None, outcome: str | None = None) -> list[alerts.Alert]:
    """Alerts and metrics for one finished step of a trading run; returns the alerts queued.

    What ``positions`` says (reconciliation) is held until the run's ``executions`` step: a run whose bar
    was refused (a past bar rerun live) keeps the book recorded when the bar ran, already reported then, so
    it is dropped, and the P&L gauges are left alone (they show the latest bar, not the last one computed).
    """
    from assets.pnl.stage import account_of
    from resources.market.calendar import parse_bar_key

    account = account_of(mode)
    bar_ts = parse_bar_key(bar)
    if step == "positions":
        _HELD[run_id] = (bar_events.step_observation(step, output, account),
                         bar_events.step_alerts(step, output, mode, account, bar))
        return []
    held_obs, found = _HELD.pop(run_id, (None, [])) if step == "executions" else (None, [])
    latency = None
    if step == "executions" and mode == "live":
        now_ts = pd.Timestamp(now or dt.datetime.now(dt.UTC))
        latency = max((now_ts - bar_close_wall(bar_ts)).total_seconds(), 0.0)
    obs = bar_events.step_observation(step, output, account, latency, bar_ts.to_pydatetime())
    if obs is not None and obs.outcome == "refused":
        _REFUSED_RUNS.add(run_id)
        held_obs, found = None, []
    for o in (held_obs, obs):
        if o is not None and not (step == "pnl" and run_id in _REFUSED_RUNS):
            metrics.record_bar(o)
    found = found + bar_events.step_alerts(step, output, mode, account, bar, outcome)
    moved = [a for a in found if a.kind == "kill_switch"]
    if moved:
        switch_watch.note_state(account, moved[-1].title.split("->")[-1])
    alerts.send(found)
    return found


@dg.success_hook(name="monitor_bar")
def monitor_bar(context: dg.HookContext) -> None:
    """After ``positions``, ``executions`` and ``pnl``: alerts (live bars) and metrics (every account)."""
    step = context.step_key
    if step not in WATCHED_STEPS:
        return
    try:
        run = context.instance.get_run_by_id(context.run_id)
        bar = run.tags.get("dagster/partition") if run else None
        if bar is None:
            return
        output = context.op_output_values.get("result")
        sent = observe_step(step, output, run.tags.get(MODE_TAG, "live"), bar, context.run_id,
                            outcome=run.tags.get(OUTCOME_TAG))
        for alert in sent:
            context.log.warning(f"alert {alert.kind}: {alert.title}")
    except Exception as exc:  # monitoring never fails a trading step
        context.log.error(f"monitoring of step {step} failed (trading unaffected): {type(exc).__name__}: {exc}")


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=get_cfg("alerts.poll_seconds"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (alerts.urls / alerts.config_file) and counts (tradegraph_run_failures_total) every "
                "failed run of this code location.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    if run.tags.get(OUTCOME_TAG) == "refused":  # alerted once as refused_bar by the run itself
        return
    bar = run.tags.get("dagster/partition", "")
    message = context.failure_event.message or "failed"
    metrics.record_run_failure(run.job_name)
    account = "replay" if run.tags.get(MODE_TAG) == "replay" else "live"
    alerts.send([alerts.Alert("run_failure", f"{run.job_name} run {run.run_id[:8]} failed",
                              f"{message}\nrun id: {run.run_id}", "failure", account, bar)])


@dg.sensor(
    name="kill_switch_watch",
    minimum_interval_seconds=get_cfg("alerts.poll_seconds"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts a kill-switch state change made outside a bar (CLI trip/reset, reset job, pre-open "
                "re-base, an unreadable state file); reads only the live switch's state file.",
)
def kill_switch_watch(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    found = switch_watch.poll("live")
    alerts.send(found)
    return dg.SkipReason("; ".join(a.body for a in found) or "kill switch unchanged")
