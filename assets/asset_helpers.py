"""Small helpers every ``asset.py`` shares: the run's mode, run records and metadata shapes."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from CONFIG.config_loader import built_hash, effective_config, effective_config_hash, get_cfg, install_config
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.records import located, recorded_run
from resources.lineage.run_status import fail_dead_runs, record_process, set_status
from resources.lineage.store import LineageStore
from TRAINING.common.utils.code_version import code_version

MODES = ("live", "audit", "replay")
BROKER_STEPS = frozenset({"positions", "executions"})  # the steps that reach a broker in live mode


_AUDIT_CONFIGURED: set[str] = set()


def mode_of(context: dg.AssetExecutionContext) -> str:
    """The run's mode: tag ``tradegraph/mode`` or ``engine.mode``; an unknown mode is an error.

    An audit run (from the CLI or launched in the UI) installs the configuration recorded with the bar
    before its first step computes anything, so it replays the bar under the config that traded it.
    """
    mode = context.run.tags.get(MODE_TAG, get_cfg("engine.mode"))
    if mode not in MODES:
        raise ValueError(f"run tag {MODE_TAG}={mode!r} is not one of {MODES}")
    if mode == "audit" and context.run.run_id not in _AUDIT_CONFIGURED:
        store = LineageStore()
        cfg, recorded_hash, _ = recorded_run(store, context.partition_key)
        here = located(cfg, store.path)   # where the files are is this process's, not the recorded run's
        if built_hash(here) != built_hash(located(effective_config(), store.path)):   # differs beyond paths
            install_config(here)
            context.log.info(f"audit: running under the recorded configuration {recorded_hash[:16]}")
        _AUDIT_CONFIGURED.add(context.run.run_id)
    return mode


def record_run(store: LineageStore, run_id: str, bar: str, mode: str, status: str, *,
               model_versions: str | None = None, start: bool = False) -> None:
    """Upsert this run's row in ``runs`` (and the effective config under its hash).

    ``running`` is written only by the run's first step (``start``): a later step that adds its facts (e.g.
    ``predictions``' model versions) never overwrites an outcome another step already recorded — a failed
    ``positions`` step runs in parallel with ``predictions``, and its ``failed: positions`` must stay."""
    now = dt.datetime.now(dt.UTC)
    running = status == "running"
    with store.connect() as con:
        store.record_config(con, effective_config_hash(), effective_config())
        store.upsert_run(con, run_id=run_id, bar=bar, **run_identity(mode), model_versions=model_versions,
                         started_at=now if start else None, ended_at=None if running else now,
                         status=None if running and not start else status)


def run_identity(mode: str) -> dict[str, object]:
    """The ``runs`` columns that say what ran: mode, code version, configuration hash (always written together,
    so no ``runs`` row is ever left without its mode)."""
    return {"mode": mode, "code_version": code_version(), "config_hash": effective_config_hash()}


def start_run(context: dg.AssetExecutionContext, store: LineageStore, bar: str, mode: str) -> None:
    """The first step of a run: mark runs killed earlier as failed, record this run's process, refuse a live
    rerun under another configuration (see :func:`refuse_changed_config`), then record the run ``running``."""
    instance = context.instance

    def finished(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is None or run.is_finished

    run_id = context.run.run_id
    with store.connect() as con:
        store.record_config(con, effective_config_hash(), effective_config())
        dead = fail_dead_runs(store, con, run_id, finished)
        record_process(store, con, run_id)
    if dead:
        context.log.warning(f"runs left 'running' by a killed process, now recorded as failed: {', '.join(dead)}")
    if mode == "live":
        if plan_steps(context) & BROKER_STEPS:
            authorize_live(context, store, bar)
        try:
            refuse_changed_config(store, run_id, bar)
        except ConfigChanged as exc:
            from resources.monitoring import alerts

            set_outcome(context, "refused")
            alerts.send([alerts.Alert("refused_bar", f"bar {bar} refused: another configuration",
                                      f"{exc.description}\nrun id: {run_id}", "warning", "live", bar)])
            raise
    record_run(store, run_id, bar, mode, "running", start=True)


class ConfigChanged(dg.Failure):
    pass


def refuse_changed_config(store: LineageStore, run_id: str, bar: str) -> None:
    """A live bar is traded under one configuration: a rerun under another hash than the one its decisions
    were recorded with is refused before anything is computed (so neither the kill switch nor the broker is
    asked and nothing recorded is replaced), recorded as ``refused: configuration …`` in ``runs`` and in
    ``executions_refusals``, and fails the run. Audit is the way to try another configuration on a past bar."""
    with store.connect() as con:
        rows = con.execute("""
            SELECT r.config_hash FROM runs r JOIN materializations m ON m.run_id = r.run_id AND m.bar = r.bar
            WHERE r.bar = ? AND r.mode = 'live' AND r.run_id <> ? AND m.asset = 'sized_orders'
            ORDER BY r.started_at LIMIT 1""", [bar, run_id]).fetchall()
    current = effective_config_hash()
    if not rows or rows[0][0] == current:
        return
    reason = (f"refused: configuration {current[:16]} differs from {rows[0][0][:16]} recorded for live bar {bar}; "
              "a traded bar is never traded again under another configuration (audit it instead)")
    from assets.executions.stage import refusal_frame
    from resources.market.clock import market_now

    now = dt.datetime.now(dt.UTC)
    with store.connect() as con:
        store.append_rows(con, "executions_refusals",
                          {bar: refusal_frame(market_now(), "live", run_id, 0, reason).assign(run_id=run_id)})
        store.upsert_run(con, run_id=run_id, bar=bar, **run_identity("live"), started_at=now, ended_at=now,
                         status=reason)
    raise ConfigChanged(description=reason)


def mark_run_status(store: LineageStore, run_id: str, bar: str, status: str) -> None:
    """Record that this run ends as ``status`` (e.g. ``refused: …``) whatever its later steps do."""
    set_status(store, run_id, bar, status, only_if=("running",))


def frame_metadata(frame: pd.DataFrame, value_columns: list[str] | None = None) -> dict:
    """Row count, symbols and NaN share: what a person checks first in the UI."""
    cols = value_columns or [c for c in frame.columns if frame[c].dtype.kind == "f"]
    values = frame[cols].to_numpy(dtype=float) if cols and len(frame) else np.empty((0, 0))
    nan_share = float(np.mean(~np.isfinite(values))) if values.size else 0.0
    meta = {"rows": len(frame), "nan_share": round(nan_share, 6)}
    if "symbol" in frame:
        meta["symbols"] = int(frame["symbol"].nunique())
    return meta


class LiveLaunchRefused(dg.Failure):
    """A live run that may not reach the broker (launched by hand, a forged or reused proof)."""


_AUTHORIZED: set[str] = set()  # run ids whose launch proof this process has checked and redeemed


def plan_steps(context: dg.AssetExecutionContext) -> set[str]:
    """The step keys this run executes (its plan: every step runs in this process)."""
    run = context.run
    keys = run.step_keys_to_execute
    if keys is None:
        keys = context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute
    return set(keys)


def set_outcome(context: dg.AssetExecutionContext | dg.HookContext, outcome: str) -> None:
    """Tag the run ``tradegraph/outcome`` (shown in the runs list): traded, nothing_to_trade, denied, halted,
    refused or error."""
    from resources.launch_proof import OUTCOME_TAG

    run_id = context.run.run_id if isinstance(context, dg.AssetExecutionContext) else context.run_id
    context.instance.add_run_tags(run_id, {OUTCOME_TAG: outcome})


def authorize_live(context: dg.AssetExecutionContext, store: LineageStore, bar: str) -> None:
    """Let this live run reach the broker only when it proves a signed launch (the bar sensor or the engine,
    :mod:`resources.launch_proof`) that no other run has used, or ``engine.allow_manual_live_runs`` is set in
    the configuration. Otherwise, before the kill switch or the broker is asked: the refusal is recorded
    (``runs`` status ``refused: …``, a row in ``executions_refusals``, run tag ``tradegraph/outcome=refused``,
    a ``refused_bar`` alert) and the run fails (:class:`LiveLaunchRefused`)."""
    from resources.launch_proof import NONCE_TAG, manual_live_allowed, proof_problem, redeem
    from resources.market.clock import market_now

    run = context.run
    if run.run_id in _AUTHORIZED:
        return
    problem = proof_problem(run.tags, bar)
    if problem is None:
        with store.connect() as con:
            first = redeem(con, run.tags[NONCE_TAG], bar, run.run_id, dt.datetime.now(dt.UTC))
        if first is not None:
            problem = (f"launch proof already used by run {first} (a re-executed or copied launch: UI re-execution "
                       "copies the sensor's tags)")
    if problem is not None and manual_live_allowed():
        context.log.warning(f"live run allowed by engine.allow_manual_live_runs although {problem}")
        problem = None
    if problem is None:
        _AUTHORIZED.add(run.run_id)
        return
    reason = (f"refused: {problem}; nothing was sent and the kill switch was not asked "
              "(engine.allow_manual_live_runs is false)")
    from assets.executions.stage import refusal_frame
    from resources.monitoring import alerts

    now = dt.datetime.now(dt.UTC)
    with store.connect() as con:
        store.record_config(con, effective_config_hash(), effective_config())
        store.append_rows(con, "executions_refusals",
                          {bar: refusal_frame(market_now(), "live", run.run_id, 0, reason).assign(run_id=run.run_id)})
        store.upsert_run(con, run_id=run.run_id, bar=bar, **run_identity("live"), started_at=now, ended_at=now,
                         status=reason)
    set_outcome(context, "refused")
    alerts.send([alerts.Alert("refused_bar", f"bar {bar} refused: live run not launched by the sensor",
                              f"{reason}\nrun id: {run.run_id}", "warning", "live", bar)])
    context.log.error(reason)
    raise LiveLaunchRefused(description=reason)
