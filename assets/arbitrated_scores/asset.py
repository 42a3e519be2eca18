"""The ``arbitrated_scores`` asset: every cost term, the net score per horizon, selection and TRADE/HOLD."""

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext

from assets.arbitrated_scores.stage import compute_arbitrated
from dagster_project.partitions import bar_partitions


@dg.asset(
    partitions_def=bar_partitions,
    group_name="signals",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Per symbol and horizon: spread, volatility and square-root impact costs and the net score "
                "|α|−k₁·spread−k₂·σ√(h/5)−k₃·impact; per symbol the selected horizon(s) (winner 0.7/0.3 or "
                "softmax), final score, reserve = 2 + 0.5·spread and the TRADE/HOLD decision.",
    check_specs=[dg.AssetCheckSpec("no_nan_alpha_reaches_sizing", asset="arbitrated_scores",
                                   description="every TRADE has a finite final score, direction and reserve")],
)
def arbitrated_scores(context: AssetExecutionContext, blended_alpha: dict[str, pd.DataFrame],
                      features: pd.DataFrame, positions: dict[str, pd.DataFrame]):
    pv = float(positions["positions_account"]["portfolio_value"].iloc[0])
    out = compute_arbitrated(blended_alpha["blended_alpha"], features, pv)
    s = out["arbitrated_scores"]
    trade = s[s["decision"] == "TRADE"]
    finite = np.isfinite(trade[["final_score_bps", "reserve_bps"]].to_numpy(dtype=float)).all()
    meta = ({"rows": len(s), "trade": len(trade), "hold": int((s["decision"] == "HOLD").sum()),
                                 "portfolio_value": pv})
    yield dg.Output(out, metadata=meta)
    yield dg.AssetCheckResult(check_name="no_nan_alpha_reaches_sizing",
                              passed=bool(finite and (trade["direction"] != 0).all()))
