"""The ``pnl`` stage: mark the book to this bar, book this bar's fills, report.

The engine's P&L book (cash, average costs, realised P&L, fees) carries from the previous recorded bar of
the same account (``live`` or ``replay``), so every Dagster run — a new process — continues it exactly.
Start-of-day equity is the portfolio value at the previous session's last bar; the daily return is
value / start-of-day − 1. Estimated cost per fill = half the quoted spread + the square-root impact from
``arbitrated_scores``; realised cost = signed (fill − mid)·qty + fee.
Tables: ``pnl`` (one row per bar and account) and ``pnl_book`` (per held symbol: quantity, avg_cost, mark …).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from assets.pnl.logic import BOOK_COLUMNS, PnlBook, apply_actions, bar_pnl


def previous_book(prev_row: pd.DataFrame, prev_book: pd.DataFrame, initial_cash: float) -> tuple[PnlBook, float | None, str | None]:
    """The book after the previous recorded bar (a fresh account when there is none)."""
    if prev_row is None or prev_row.empty:
        return PnlBook.start(initial_cash), None, None
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


def compute_pnl(fills: pd.DataFrame, marks: pd.Series, est_cost_bps: pd.Series, book: PnlBook,
                prev_sod: float | None, prev_session: str | None, session: dt.date,
                account: str, actions: pd.DataFrame | None = None) -> tuple[PnlBook, dict[str, pd.DataFrame]]:
    """``actions``: the window's corporate actions (``BarWindow.adjustments``); the ones due are applied to the
    book before the bar's fills (:func:`assets.pnl.logic.apply_actions`)."""
    sod = book.value if prev_session != session.isoformat() else prev_sod
    book, dividends = apply_actions(book, due_actions(actions, prev_session, session))
    f = fills.copy()
    if len(f):
        f["est_cost_bps"] = est_cost_bps.reindex(f["symbol"]).to_numpy(dtype=float)
    new, row, per_symbol = bar_pnl(book, f, marks, start_of_day_equity=sod)
    row = {"account": account, "session": session.isoformat(), "start_of_day_equity": float(sod), **row}
    if dividends:
        row["realised_pnl"] += dividends
    row["dividends"] = dividends
    held = new.positions.reset_index(names="symbol")
    return new, {"pnl": pd.DataFrame([row]), "pnl_book": held.assign(account=account),
                 "pnl_symbols": per_symbol.assign(account=account)}


def est_costs(scores: pd.DataFrame) -> pd.Series:
    s = scores.set_index("symbol")
    return (s["spread_bps"] / 2 + s["impact_bps"]).astype(float)


def account_of(mode: str) -> str:
    return "replay" if mode == "replay" else "live"



