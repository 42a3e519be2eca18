"""The ``positions`` stage: the book before this bar's orders, from the broker, reconciled.

The broker is the source of truth. The engine's expected book is the sum of the fills it recorded; a
difference beyond ``kill_switch.reconciliation_tolerance_shares`` is a mismatch, recorded here and acted on
by the kill switch (``kill_switch.on_reconciliation_mismatch``).
Tables: ``positions`` (symbol, qty, price, market_value, weight, expected_qty, difference) and
``positions_account`` (one row: cash, equity, portfolio_value, gross/net exposure, mismatch count, source).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.positions.logic import expected_positions, reconcile
from resources.brokers.protocol import Broker

POSITION_COLUMNS = {"symbol": object, "qty": float, "price": float, "market_value": float, "weight": float,
                    "expected_qty": float, "difference": float}


def typed_book(out: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A recorded book with typed columns even when it was empty: an empty first write creates no lineage
    table, so an empty ``positions`` partition reads back without columns (and must not crash an audit)."""
    pos = out["positions"]
    if pos.empty:
        pos = pd.DataFrame({c: pd.Series(dtype=t) for c, t in POSITION_COLUMNS.items()})
    return {**out, "positions": pos}


def marks_from(snapshot: pd.DataFrame) -> pd.Series:
    ok = snapshot[snapshot["status"] == "ok"]
    return pd.Series(ok["close"].to_numpy(dtype=float), index=ok["symbol"].to_numpy(), dtype=float)


def book_tables(qty: pd.Series, marks: pd.Series, cash: float, expected: pd.Series, source: str) -> dict:
    """Positions and account tables from quantities, marks, cash and the expected book (pure)."""
    rec = reconcile(expected, qty)
    symbols = qty.index.union(expected.index).sort_values()
    q = qty.reindex(symbols).fillna(0.0).to_numpy(dtype=float)
    px = marks.reindex(symbols).to_numpy(dtype=float)
    mv = q * px
    mv_known = np.where(np.isfinite(mv), mv, 0.0)
    equity = cash + float(mv_known.sum())
    table = rec.table.set_index("symbol") if len(rec.table) else pd.DataFrame(index=symbols)
    positions = pd.DataFrame({
        "symbol": symbols.astype(str), "qty": q, "price": px, "market_value": mv,
        "weight": mv / equity if equity else np.nan,
        "expected_qty": expected.reindex(symbols).fillna(0.0).to_numpy(dtype=float),
        "difference": table.reindex(symbols)["difference"].to_numpy(dtype=float) if "difference" in table else 0.0,
    })
    account = pd.DataFrame([{
        "cash": float(cash), "equity": equity, "portfolio_value": equity,
        "gross_exposure": float(np.abs(mv_known).sum()) / equity if equity else np.nan,
        "net_exposure": float(mv_known.sum()) / equity if equity else np.nan,
        "unpriced_symbols": int((~np.isfinite(px) & (q != 0)).sum()),
        "mismatch": bool(rec.mismatch), "n_mismatched": int(rec.n_mismatched), "source": source,
    }])
    return {"positions": positions, "positions_account": account}


def positions_from_broker(broker: Broker, snapshot: pd.DataFrame, recorded_fills: pd.DataFrame,
                          source: str) -> dict[str, pd.DataFrame]:
    """Ask the broker for its book, mark it at this bar's closes, reconcile against the recorded fills."""
    qty = pd.Series(broker.positions(), dtype=float).sort_index()
    cash = float(broker.account().cash)
    expected = expected_positions(recorded_fills) if len(recorded_fills) else pd.Series(dtype=float)
    return book_tables(qty[qty != 0], marks_from(snapshot), cash, expected, source)
