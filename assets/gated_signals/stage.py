"""The ``gated_signals`` stage for one bar, pure: barrier gates, spread gate and exits against the book."""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.gated_signals.logic import Params, gate_signals
from assets.take import in_symbol_order, indexer, taken


def current_quantities(positions: pd.DataFrame, symbols: np.ndarray) -> np.ndarray:
    """Signed shares held per symbol (0 where the book has none)."""
    if positions is None or not len(positions):
        return np.zeros(len(symbols))
    source = pd.Index(positions["symbol"])
    if source.is_unique and positions["qty"].dtype.kind == "f":   # one indexer (no set_index of the book)
        return taken(indexer(source, symbols), positions["qty"].to_numpy(), 0.0)
    return positions.set_index("symbol")["qty"].reindex(symbols).fillna(0.0).to_numpy(dtype=float)


def barrier_on(barrier: pd.DataFrame, symbols: np.ndarray) -> dict[str, np.ndarray]:
    """The barrier's ``p_peak``, ``p_valley`` (float64, NaN where absent) and ``source`` (objects, NaN where
    absent) on ``symbols``: ``barrier.set_index("symbol").reindex(symbols)``'s columns, by one indexer when
    the barrier's symbols are unique (else that reindex, which says what is wrong with them)."""
    source = pd.Index(barrier["symbol"])
    if not source.is_unique:
        b = barrier.set_index("symbol").reindex(symbols)
        return {"p_peak": b["p_peak"].to_numpy(dtype=float), "p_valley": b["p_valley"].to_numpy(dtype=float),
                "source": b["source"].astype(object).to_numpy()}
    at = indexer(source, symbols)
    src = barrier["source"].astype(object).to_numpy()
    found = at >= 0
    how = np.full(len(at), np.nan, dtype=object)
    how[found] = src[at[found]]
    return {"p_peak": taken(at, barrier["p_peak"].to_numpy(dtype=float)),
            "p_valley": taken(at, barrier["p_valley"].to_numpy(dtype=float)), "source": how}


def compute_gated(scores: pd.DataFrame, barrier: pd.DataFrame, positions: pd.DataFrame,
                  params: Params | None = None) -> pd.DataFrame:
    s = in_symbol_order(scores).reset_index(drop=True)
    symbols = s["symbol"].to_numpy()
    b = barrier_on(barrier, symbols)
    qty = current_quantities(positions, symbols)
    # the quote's age from the bar (quote time, or bars since it changed; NaN = unknown = stale)
    quote_age = s["quote_age_bars"].to_numpy(dtype=float) if "quote_age_bars" in s else np.zeros(len(symbols))
    estimated = s["spread_estimated"].to_numpy(dtype=bool) if "spread_estimated" in s else None
    hold = s["hold_reason"].fillna("").astype(str).to_numpy() != "" if "hold_reason" in s else None
    g = gate_signals(s["direction"].to_numpy(dtype=float), s["final_score_bps"].to_numpy(dtype=float),
                     s["decision"].to_numpy(), s["reserve_bps"].to_numpy(dtype=float),
                     b["p_peak"], b["p_valley"], qty,
                     s["spread_bps"].to_numpy(dtype=float), quote_age, params, spread_estimated=estimated,
                     data_hold=hold)
    return pd.DataFrame({
        "symbol": symbols, "p_peak": b["p_peak"], "p_valley": b["p_valley"], "barrier_source": b["source"],
        "direction": s["direction"].to_numpy(),
        "final_score_bps": s["final_score_bps"].to_numpy(dtype=float), "decision": s["decision"].to_numpy(),
        "current_qty": qty, "quote_age_bars": quote_age, "gate": g.gate.astype(object),
        "reason": g.reason.astype(object),
        "size_mult": g.size_mult, "signal_bps": g.signal_bps, "is_exit": g.is_exit.astype(bool),
        "hold": g.hold.astype(bool),
    })
