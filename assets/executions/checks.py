"""The run's verdict on its live bar, as the last step of ``trading_job``: a refused bar is a failed run.

Why a separate, blocking check on ``pnl`` (the last asset): ``executions`` must finish and ``pnl`` must still
mark the bar (a refused late bar keeps its marks and the P&L book continuous), but a run whose live bar was
refused or sent nothing because of an error must not show as a green run. (A check on ``executions`` itself
would run before ``pnl``: Dagster orders an asset's checks before its downstream assets.) A blocking check that fails with ERROR
severity fails its step (Dagster 1.13: ``blocking=True``), so the run ends failed after everything was
recorded. The outcome is the run tag ``tradegraph/outcome`` written by ``executions``.
"""

import dagster as dg

from resources.launch_proof import OUTCOME_TAG
from resources.lineage.io_manager import MODE_TAG

FAILING_OUTCOMES = ("refused", "error")


@dg.asset_check(asset="pnl", name="bar_outcome", blocking=True,
                description="The live bar's outcome (run tag tradegraph/outcome) after P&L is recorded: fails the "
                            "run when the bar was refused or sent nothing because of an error; passes when it "
                            "traded, had nothing to trade, was halted or denied by the kill switch (those show as "
                            "a WARN on reached_the_broker).")
def bar_outcome_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    run = context.instance.get_run_by_id(context.run.run_id)
    tags = run.tags if run else {}
    outcome, mode = tags.get(OUTCOME_TAG, ""), tags.get(MODE_TAG, "live")
    bar = tags.get("dagster/partition", "")
    failed = mode == "live" and outcome in FAILING_OUTCOMES
    return dg.AssetCheckResult(passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
                               description=f"bar {bar}: {outcome or 'no outcome recorded'} ({mode})",
                               metadata={"bar": bar, "outcome": outcome, "mode": mode})
