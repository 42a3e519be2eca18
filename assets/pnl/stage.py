"""The ``pnl`` stage: book this bar's fills, mark the book to the bar's closes, report.

The engine's P&L book (cash, average costs, realised P&L, fees) carries from the previous recorded bar of
the same account (``live`` or ``replay``), so every Dagster run — a new process — continues it exactly.
The fills applied at bar t are every fill recorded after the previous recorded P&L bar up to t
(``positions_fills`` ∪ ``executions_fills``, each ``fill_id`` once ever): normally the fills taken in at
t's ``positions`` (orders decided at t−1, filled at t's open) and those reported at once to t's
``executions``; after a crashed bar, its fills too.

When lineage has no previous book for the account (a first bar, or a lost lineage file while the broker
holds positions), the book starts **from the broker** as ``positions`` read it at this bar: its cash, its
positions and their cost basis (``Account.cost_basis``; a position without one is based at its mark, so
its unrealised P&L starts at 0) — recorded as ``book_source = broker`` — and only the fills reported after
that read (``executions_fills``) are applied. Start-of-day equity is the portfolio value at the previous
session's last bar (or the start value); the daily return is value / start-of-day − 1. Estimated cost per
fill = half the quoted spread + the square-root impact from ``arbitrated_scores``; realised cost = signed
(fill − mid)·qty + fee; slippage = signed (fill − decision price)·qty.
Tables: ``pnl`` (one row per bar and account) and ``pnl_book`` (per held symbol: quantity, avg_cost, mark …).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from assets.pnl.logic import BOOK_COLUMNS, PnlBook, apply_actions, bar_pnl
from assets.take import indexer, one_row, taken


def previous_book(prev_row: pd.DataFrame, prev_book: pd.DataFrame) -> tuple[PnlBook, float | None, str | None] | None:
    """The book after the previous recorded bar, or None when lineage has none."""
    if prev_row is None or prev_row.empty:
        return None
    r = prev_row.iloc[0]
    book = prev_book.set_index("symbol")[BOOK_COLUMNS].astype(float) if len(prev_book) else pd.DataFrame(
        columns=BOOK_COLUMNS, dtype=float)
    return (PnlBook(float(r["cash"]), book, float(r["realised_pnl_cum"]), float(r["fees_cum"]),
                    float(r["portfolio_value"])), float(r["start_of_day_equity"]), str(r["session"]))


def due_actions(actions: pd.DataFrame | None, prev_session: str | None, session: dt.date) -> pd.DataFrame | None:
    """The corporate actions the book has not seen: effective after the book's previous session and by this
    one (applied at the book's first bar of a session, so each once)."""
    if actions is None or not len(actions) or prev_session is None or prev_session == session.isoformat():
        return None
    day = pd.to_datetime(actions["effective_date"]).dt.date
    due = actions[((day > dt.date.fromisoformat(prev_session)) & (day <= session)).to_numpy()]
    return due.sort_values(["effective_date", "symbol"], kind="mergesort") if len(due) else None


def broker_book(positions: dict[str, pd.DataFrame]) -> PnlBook:
    """The book as the broker reported it at this bar's ``positions``: cash, quantities, cost basis, marks."""
    pos = positions["positions"]
    acct = positions["positions_account"].iloc[0]
    held = pos[pos["qty"] != 0]
    mark = held["price"].to_numpy(dtype=float)
    basis = held["cost_basis"].to_numpy(dtype=float) if "cost_basis" in held else np.full(len(held), np.nan)
    table = pd.DataFrame({"quantity": held["qty"].to_numpy(dtype=float),
                          "avg_cost": np.where(np.isfinite(basis), basis, mark), "mark": mark},
                         index=held["symbol"].to_numpy())
    return PnlBook(float(acct["cash"]), table, 0.0, 0.0, float(acct["portfolio_value"]))


def compute_pnl(fills: pd.DataFrame, marks: pd.Series, est_cost_bps: pd.Series, book: PnlBook,
                prev_sod: float | None, prev_session: str | None, session: dt.date,
                account: str, book_source: str = "lineage",
                actions: pd.DataFrame | None = None) -> tuple[PnlBook, dict[str, pd.DataFrame]]:
    """``book_source``: where the book came from (``lineage``, or ``broker`` when lineage had none);
    ``actions``: the window's corporate actions (``BarWindow.adjustments``); the ones due are applied to the
    book before the bar's fills (:func:`assets.pnl.logic.apply_actions`)."""
    sod = book.value if prev_session != session.isoformat() else prev_sod
    book, dividends = apply_actions(book, due_actions(actions, prev_session, session))
    f = fills.copy()
    if len(f):
        if est_cost_bps.index.is_unique and est_cost_bps.dtype == np.float64:   # one indexer, no reindex
            f["est_cost_bps"] = taken(indexer(est_cost_bps.index, f["symbol"]), est_cost_bps.to_numpy())
        else:
            f["est_cost_bps"] = est_cost_bps.reindex(f["symbol"]).to_numpy(dtype=float)
    new, row, per_symbol = bar_pnl(book, f, marks, start_of_day_equity=sod)
    row = {"account": account, "session": session.isoformat(), "start_of_day_equity": float(sod),
           "book_source": book_source, **row}
    if dividends:
        row["realised_pnl"] += dividends
    row["dividends"] = dividends
    book_table = pd.DataFrame({"symbol": new.positions.index, **{c: new.positions[c].to_numpy() for c in
                                                                 new.positions.columns}, "account": account})
    per_symbol["account"] = account   # bar_pnl's own new table: the column added in place (was ``assign``)
    return new, {"pnl": one_row(row), "pnl_book": book_table, "pnl_symbols": per_symbol}



def start_of_bar(previous: tuple[PnlBook, float | None, str | None] | None, positions: dict[str, pd.DataFrame],
                 fills_since_previous: pd.DataFrame, executed: pd.DataFrame) -> tuple[
                     PnlBook, float | None, str | None, pd.DataFrame, str]:
    """(book, start-of-day equity, its session, fills to apply, book source) for one bar: the previous
    recorded book and every fill since it, or — without one — the broker's book and only the fills
    reported after it was read."""
    if previous is not None:
        return (*previous, fills_since_previous, "lineage")
    return broker_book(positions), None, None, executed, "broker"


def est_costs(scores: pd.DataFrame) -> pd.Series:
    """Symbol → estimated cost of a fill (bps): half the quoted spread + the impact (``arbitrated_scores``)."""
    cost = scores["spread_bps"].to_numpy() / 2 + scores["impact_bps"].to_numpy()
    return pd.Series(cost, index=pd.Index(scores["symbol"]), dtype=float)


def account_of(mode: str) -> str:
    return "replay" if mode == "replay" else "live"
