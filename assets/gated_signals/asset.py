"""The ``gated_signals`` asset: barrier gates, the spread gate and exits, against the current book."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.gated_signals.stage import compute_gated
from dagster_project.partitions import bar_partitions


@dg.asset(
    partitions_def=bar_partitions,
    group_name="signals",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Per symbol: P(peak), P(valley), the gate (allowed, blocked, preferred, exit, hold) and its "
                "reason, the size multiplier 1−P(against) and the signed signal in bps.",
    check_specs=[dg.AssetCheckSpec("multiplier_in_unit_interval", asset="gated_signals",
                                   description="every size multiplier is in [0, 1]")],
)
def gated_signals(context: AssetExecutionContext, arbitrated_scores: dict[str, pd.DataFrame],
                  predictions: dict[str, pd.DataFrame], positions: dict[str, pd.DataFrame]):
    out = compute_gated(arbitrated_scores["arbitrated_scores"], predictions["predictions_barrier"],
                        positions["positions"])
    counts = out["gate"].value_counts()
    meta = ({"rows": len(out), **{f"gate/{k}": int(v) for k, v in sorted(counts.items())}})
    yield dg.Output(out, metadata=meta)
    yield dg.AssetCheckResult(check_name="multiplier_in_unit_interval",
                              passed=bool(out["size_mult"].between(0, 1).all()))
