"""Jobs: the trading job (the whole graph for one bar), and its audit and replay variants by tag."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from dagster_project.monitoring import monitor_bar
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.store import LineageStore

SKIPPED_TAG = "tradegraph/skipped_bars"
TRADING_ASSETS = dg.AssetSelection.groups("market", "signals", "execution")


def _finish(context: dg.HookContext, status: str) -> None:
    """Close this run's ``runs`` row (a failed step is never overwritten by a later success)."""
    run = context.instance.get_run_by_id(context.run_id)
    bar = run.tags.get("dagster/partition") if run else None
    if bar is None:
        return
    store = LineageStore()
    with store.connect() as con:
        current = con.execute("SELECT status FROM runs WHERE run_id = ? AND bar = ?", [context.run_id, bar]).fetchall()
        current = current[0] if current else None
        if current and str(current[0]).startswith("failed"):
            return
        store.upsert_run(con, run_id=context.run_id, bar=bar, ended_at=dt.datetime.now(dt.UTC), status=status)


@dg.success_hook(name="record_step_success")
def record_step_success(context: dg.HookContext) -> None:
    _finish(context, "success")


@dg.failure_hook(name="record_step_failure")
def record_step_failure(context: dg.HookContext) -> None:
    _finish(context, f"failed: {context.step_key}")


trading_job = dg.define_asset_job(
    "trading_job",
    selection=TRADING_ASSETS,
    description="The whole graph for one bar partition: snapshot → features → predictions → … → orders → P&L. "
                "Tag tradegraph/mode = live (default) | audit | replay.",
    tags={MODE_TAG: "live"},
    hooks={record_step_success, record_step_failure, monitor_bar},
)

audit_job = dg.define_asset_job(
    "audit_job",
    selection=dg.AssetSelection.assets("bars", "positions", "features", "predictions", "model_skill",
                                       "blended_alpha", "arbitrated_scores", "gated_signals", "sized_orders"),
    description="Rematerialize a past bar from its recorded bars and positions with the recorded model versions "
                "and config; writes audit__ tables and never reaches a broker.",
    tags={MODE_TAG: "audit"},
    hooks={record_step_success, record_step_failure},
)
