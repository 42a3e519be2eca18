"""Jobs: the trading job (the whole graph for one bar), and its audit variant by tag.

A run's ``runs`` row (SPEC §7) is written ``running`` by its first step (``bars``) and stays so until the
run's **last** step has finished: the success hook counts the run's finished steps against its execution
plan and writes ``success`` only then, and only over ``running`` (a ``refused: …`` or ``failed: …`` run
stays what it was). A failed step writes ``failed: <step>`` (never over a refusal). A run killed with no
chance to write stays ``running`` until the next run finds its process gone
(``resources.lineage.run_status``). Every write carries the run's mode, code version and configuration
hash, so a row is never left without its mode (e.g. when the first step lost the lineage lock).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import dagster as dg

from assets.asset_helpers import run_identity
from dagster_project.audit_checks import audit_verdict
from dagster_project.monitoring import monitor_bar
from resources.launch_proof import OUTCOME_TAG
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.run_status import ACTIVE_RUNS, set_status
from resources.lineage.store import LineageStore

SKIPPED_TAG = "tradegraph/skipped_bars"
OBSERVE_ONLY_TAG = "tradegraph/observe_only"
TRADING_ASSETS = (dg.AssetSelection.groups("market", "signals", "execution")
                  - dg.AssetSelection.checks(audit_verdict))  # the audit's checks belong to audit_job
_FINISHED: Counter[str] = Counter()  # run id → steps finished in this process (the in-process executor)


def _run(context: dg.HookContext) -> tuple[dg.DagsterRun | None, str | None]:
    run = context.instance.get_run_by_id(context.run_id)
    return run, (run.tags.get("dagster/partition") if run else None)


def _last_step(context: dg.HookContext, run: dg.DagsterRun) -> bool:
    """This step's success completes the run's plan (every step runs in this process)."""
    _FINISHED[context.run_id] += 1
    keys = run.step_keys_to_execute
    if keys is None:
        keys = context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute
    return _FINISHED[context.run_id] >= len(keys)


@dg.success_hook(name="record_step_success")
def record_step_success(context: dg.HookContext) -> None:
    run, bar = _run(context)
    if bar is None or not _last_step(context, run):
        return
    _FINISHED.pop(context.run_id, None)
    ACTIVE_RUNS.discard(context.run_id)
    set_status(LineageStore(), context.run_id, bar, "success", only_if=("running",),
               ended_at=dt.datetime.now(dt.UTC))


@dg.failure_hook(name="record_step_failure")
def record_step_failure(context: dg.HookContext) -> None:
    run, bar = _run(context)
    if bar is None:
        return
    ACTIVE_RUNS.discard(context.run_id)
    _FINISHED.pop(context.run_id, None)
    mode = run.tags.get(MODE_TAG, "live")
    fresh = context.instance.get_run_by_id(context.run_id)
    if fresh is not None and OUTCOME_TAG not in fresh.tags:  # a refused run keeps its outcome
        context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: "error"})
    set_status(LineageStore(), context.run_id, bar, f"failed: {context.step_key}", only_if=("running", "success"),
               ended_at=dt.datetime.now(dt.UTC), **run_identity(mode))


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
                "and config; writes audit__ tables and never reaches a broker. Ends with the audit_identical "
                "checks: per audited asset, identical or differing rows per table, and a markdown summary.",
    tags={MODE_TAG: "audit"},
    hooks={record_step_success, record_step_failure},
)
