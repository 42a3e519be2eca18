"""The ``sized_orders`` asset: target weights, every cap that bit, shares, side and client_order_id."""

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext

from assets.history import LineageHistory
from assets.sized_orders.stage import compute_sized, pending_of
from CONFIG.config_loader import get_cfg
from dagster_project.partitions import bar_partitions
from resources.lineage.resource import LineageResource


def cap_breaches(sized: pd.DataFrame, features: pd.DataFrame, pv: float) -> int:
    """Orders whose trade breaches the participation cap or whose target breaches the per-name risk cap."""
    f = features.set_index("symbol").reindex(sized["symbol"])
    orders = sized["has_order"].to_numpy() & ~sized["reduce_only"].to_numpy(bool)
    part = np.abs(sized["trade_notional"].to_numpy()) > get_cfg("sizing.participation_beta") * f[
        "adv_bar_dollars"].to_numpy() * (1 + 1e-9)
    risk = np.minimum(get_cfg("sizing.max_position_pct") * pv,
                      get_cfg("sizing.name_risk_budget") * pv / (f["sigma_daily_bps"].to_numpy() / 1e4))
    name = np.abs(sized["w_target"].to_numpy()) * pv > risk * (1 + 1e-9)
    return int((orders & (part | name)).sum())


@dg.asset(
    partitions_def=bar_partitions,
    group_name="signals",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Per symbol: z (robust, clipped ±3), target and current weight (book + working orders), every "
                "cap that bit (risk, participation, gross), the no-trade band, shares rounded toward zero, side, "
                "order type and a deterministic client_order_id (same decision → same id, so a rerun can never "
                "place an order twice). The session's closing bar is observe-only (no order); the bar before it "
                "may flatten every position (execution.flatten_before_close).",
    check_specs=[
        dg.AssetCheckSpec("gross_within_target", asset="sized_orders", blocking=True,
                          description="Σ|w| ≤ sizing.gross_target; blocking: a breach stops executions"),
        dg.AssetCheckSpec("orders_within_caps", asset="sized_orders", blocking=True,
                          description="no order breaches a per-name risk cap or the participation cap; "
                                      "blocking: a breach stops executions"),
    ],
)
def sized_orders(context: AssetExecutionContext, gated_signals: pd.DataFrame, features: pd.DataFrame,
                 positions: dict[str, pd.DataFrame], lineage: LineageResource):
    pv = float(positions["positions_account"]["portfolio_value"].iloc[0])
    out = compute_sized(context.partition_key, gated_signals, features, pv, LineageHistory(lineage.store()),
                        pending=pending_of(positions))
    orders = out[out["has_order"]]
    gross = float(out["gross_after"].iloc[0]) if len(out) else 0.0
    meta = {"rows": len(out), "orders": len(orders), "gross_after": gross,
            "buy": int((orders["side"] == "BUY").sum()), "sell": int((orders["side"] == "SELL").sum()),
            "session_phase": str(out["session_phase"].iloc[0]) if len(out) else "",
            "pending_symbols": int((out["pending_qty"] != 0).sum())}
    yield dg.Output(out, metadata=meta)
    mode_cap = get_cfg("sizing.gross_mode") == "cap"
    yield dg.AssetCheckResult(check_name="gross_within_target",
                              passed=bool(not mode_cap or gross <= get_cfg("sizing.gross_target") + 1e-9),
                              metadata={"gross_after": gross})
    yield dg.AssetCheckResult(check_name="orders_within_caps", passed=cap_breaches(out, features, pv) == 0)
