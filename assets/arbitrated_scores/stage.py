"""The ``arbitrated_scores`` stage for one bar, pure: costs, net scores per horizon, selection, TRADE/HOLD.

Tables: ``arbitrated_scores`` (per symbol: selected horizon(s), final score, direction, reserve, decision,
reason; and the bar's data facts the gate reads: quote age, estimated spread, hold reason) and ``arbitrated_scores_terms`` (per symbol × horizon: α, spread/vol/impact costs, net, weight).
The impact reference trade uses the portfolio value from ``positions``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.arbitrated_scores.logic import Arbitration, Params, arbitrate
from assets.take import as_text, in_symbol_order
from CONFIG.config_loader import get_cfg


def alpha_matrix(alpha: pd.DataFrame, symbols: np.ndarray, horizons: list[int]) -> np.ndarray:
    """(N, H) α in bps on the given symbols × horizons, NaN where absent (a scatter: pivoting costs more)."""
    out = np.full((len(symbols), len(horizons)), np.nan)
    if not len(alpha):
        return out
    rows, cols = pd.Index(symbols), pd.Index(horizons)
    r = c = None
    if rows.is_unique and cols.is_unique:   # every row on the grid: a repeated (r, c) is a repeated row
        r, c = rows.get_indexer(alpha["symbol"]), cols.get_indexer(alpha["horizon"])
        if not ((r >= 0) & (c >= 0)).all():
            r = c = None
    if r is not None:
        cell = r * len(horizons) + c
        repeated = len(np.unique(cell)) < len(cell)
    else:
        repeated = bool(alpha.duplicated(["symbol", "horizon"]).any())
    if repeated:
        raise ValueError("blended_alpha holds more than one row for a (symbol, horizon)")
    if r is None:
        r, c = rows.get_indexer(alpha["symbol"]), cols.get_indexer(alpha["horizon"])
    ok = (r >= 0) & (c >= 0)
    out[r[ok], c[ok]] = alpha["alpha_bps"].to_numpy(dtype=float)[ok]
    return out


def compute_arbitrated(alpha: pd.DataFrame, features: pd.DataFrame, portfolio_value: float,
                       params: Params | None = None) -> dict[str, pd.DataFrame]:
    horizons = sorted(get_cfg("horizons.minutes"))
    f = in_symbol_order(features)
    symbols = f["symbol"].to_numpy()
    text = as_text(f["symbol"])   # the symbols as they are (no conversion), when a frame would keep them so
    text = text if not isinstance(text, np.ndarray) else None
    col = {c: f[c].to_numpy(dtype=float) for c in ("spread_bps", "sigma_bps", "sigma_daily_bps", "adv_shares",
                                                    "price")}
    a = alpha_matrix(alpha, symbols, horizons)
    arb: Arbitration = arbitrate(a, np.asarray(horizons), get_cfg("market.bar_minutes"), col["spread_bps"],
                                 col["sigma_bps"], col["sigma_daily_bps"], col["adv_shares"], col["price"],
                                 float(portfolio_value), params)
    scores = pd.DataFrame({
        "symbol": text if text is not None else symbols, "spread_bps": col["spread_bps"], "sigma_bps": col["sigma_bps"],
        "impact_bps": arb.impact_bps, "selected_h_min": arb.selected_h_min, "runner_up_h_min": arb.runner_up_h_min,
        "final_score_bps": arb.final_score_bps, "direction": arb.direction.astype(np.int64),
        "reserve_bps": arb.reserve_bps, "decision": arb.decision.astype(object), "reason": arb.reason.astype(object),
        # the bar's data facts, for the gate
        **{c: as_text(f[c]) for c in ("quote_age_bars", "spread_estimated", "hold_reason") if c in f.columns},
    })
    n, h = a.shape
    terms = pd.DataFrame({
        "symbol": text.take(np.repeat(np.arange(n), h)) if text is not None else np.repeat(symbols, h),
        "horizon": np.tile(np.asarray(horizons, dtype=np.int64), n),
        "alpha_bps": a.ravel(), "spread_cost_bps": arb.spread_cost_bps.ravel(),
        "vol_cost_bps": arb.vol_cost_bps.ravel(), "impact_cost_bps": arb.impact_cost_bps.ravel(),
        "cost_bps": arb.cost_bps.ravel(), "net_bps": arb.net_bps.ravel(), "weight": arb.horizon_weight.ravel(),
    })
    return {"arbitrated_scores": scores, "arbitrated_scores_terms": terms}
