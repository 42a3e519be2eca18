"""The ``sized_orders`` stage for one bar, pure: z-scores, caps, band, gross targeting, shares, order ids."""

from __future__ import annotations

import pandas as pd

from assets.history import ChainHistory
from assets.predictions.stage import previous_bar_keys
from assets.sized_orders.logic import Params, size_orders


def compute_sized(bar: str, gated: pd.DataFrame, features: pd.DataFrame, portfolio_value: float,
                  history: ChainHistory, params: Params | None = None) -> pd.DataFrame:
    params = params or Params.from_cfg()
    g = gated.sort_values("symbol", kind="mergesort").reset_index(drop=True)
    symbols = g["symbol"].to_numpy()
    f = features.set_index("symbol").reindex(symbols)
    raw_hist = history.sizing_raw(previous_bar_keys(bar, params.z_window_bars))["raw"].to_numpy(dtype=float)
    col = {c: f[c].to_numpy(dtype=float) for c in ("sigma_bps", "price", "sigma_daily_bps", "adv_bar_dollars")}
    o = size_orders(g["signal_bps"].to_numpy(dtype=float), col["sigma_bps"], g["size_mult"].to_numpy(dtype=float),
                    g["is_exit"].to_numpy(bool), g["hold"].to_numpy(bool), g["current_qty"].to_numpy(dtype=float),
                    col["price"], col["sigma_daily_bps"], col["adv_bar_dollars"], float(portfolio_value), raw_hist,
                    symbols, bar, params)
    return pd.DataFrame({
        "symbol": symbols, "gate": g["gate"].to_numpy(), "price": col["price"], "raw": o.raw, "z": o.z,
        "w_signal": o.w_signal, "w_target": o.w_target, "w_current": o.w_current, "w_post": o.w_post,
        "trade_notional": o.trade_notional, "shares": o.shares, "side": o.side.astype(object),
        "caps": o.caps.astype(object), "status": o.status.astype(object), "has_order": o.has_order.astype(bool),
        "client_order_id": o.client_order_id.astype(object),
        "robust_scale": float(o.scale), "gross_before": float(o.gross_before), "gross_after": float(o.gross_after),
    })


def orders_only(sized: pd.DataFrame) -> pd.DataFrame:
    """The rows that become orders (``has_order``), in symbol order."""
    return sized[sized["has_order"]].reset_index(drop=True)



