"""The ``positions`` stage: the book before this bar's orders, from the broker, reconciled.

The broker is the source of truth. The engine's expected book is the sum of the fills it recorded; a
difference beyond ``kill_switch.reconciliation_tolerance_shares`` is a mismatch, recorded here and acted on
by the kill switch (``kill_switch.on_reconciliation_mismatch``).
Tables: ``positions`` (symbol, qty, price, market_value, weight, expected_qty, difference, mark_stale) and
``positions_account`` (one row: cash, equity, portfolio_value, gross/net exposure, mismatch count, stale marks,
source).

Marks (SPEC §9 "a held name with no bar is valued at its last good mark, flagged stale"): a held symbol is
marked at this bar's close when its row is ``ok`` and it is not held for a split-like jump; otherwise at its
last good close in the window (adjusted to today's basis), else at the last mark the P&L book recorded, and
``mark_stale`` says so. A missing, skipped or phantom price therefore never moves the portfolio value, so no
loss limit of the kill switch fires on it and no order is sized on a value it invented.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.positions.logic import expected_positions, reconcile
from resources.brokers.protocol import Broker

POSITION_COLUMNS = {"symbol": object, "qty": float, "price": float, "market_value": float, "weight": float,
                    "expected_qty": float, "difference": float, "mark_stale": bool}


def typed_book(out: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A recorded book with typed columns even when it was empty: an empty first write creates no lineage
    table, so an empty ``positions`` partition reads back without columns (and must not crash an audit)."""
    pos = out["positions"]
    if pos.empty:
        pos = pd.DataFrame({c: pd.Series(dtype=t) for c, t in POSITION_COLUMNS.items()})
    return {**out, "positions": pos}


def marks_from(snapshot: pd.DataFrame) -> pd.Series:
    """This bar's closes of the symbols with a good row (``ok`` and not held for a split-like jump)."""
    ok = snapshot["status"] == "ok"
    if "hold_reason" in snapshot:
        ok &= snapshot["hold_reason"].fillna("").astype(str) == ""
    good = snapshot[ok]
    return pd.Series(good["close"].to_numpy(dtype=float), index=good["symbol"].to_numpy(), dtype=float)


MARK_COLUMNS = ["symbol", "mark", "mark_ts", "stale"]


def window_marks(window: BarWindow, fallback: pd.Series | None = None) -> pd.DataFrame:
    """Per universe symbol (and every ``fallback`` symbol) its last good mark at the window's bar (module
    docstring): ``mark``, the bar it is from (``mark_ts``; NaT for a fallback mark) and ``stale``."""
    panel = window.panel()
    close = np.array(panel["close"], dtype=float)
    snap = window.snapshot.set_index("symbol").reindex(panel.symbols)
    if "hold_since" in snap and len(panel.times):
        since = pd.DatetimeIndex(pd.to_datetime(snap["hold_since"], utc=True))
        held = since.notna()
        if held.any():  # a suspected split's prices are not marks for an unadjusted book
            at = panel.times.get_indexer(since[held]) if len(since[held]) else np.array([], int)
            cols = np.nonzero(np.asarray(held))[0]
            rows = np.arange(len(panel.times))[:, None]
            start = np.where(at >= 0, at, 0)
            close[:, cols] = np.where(rows >= start[None, :], np.nan, close[:, cols])
    ok = np.isfinite(close) & (close > 0)
    last = np.where(ok, np.arange(len(close))[:, None], -1).max(axis=0) if len(close) else np.full(
        len(panel.symbols), -1)
    mark = np.where(last >= 0, close[np.maximum(last, 0), np.arange(close.shape[1])] if len(close) else np.nan,
                    np.nan)
    mark_ts = pd.DatetimeIndex([panel.times[i] if i >= 0 else pd.NaT for i in last], tz="UTC") \
        if len(close) else pd.DatetimeIndex([pd.NaT] * len(panel.symbols), tz="UTC")
    out = pd.DataFrame({"symbol": panel.symbols.astype(object), "mark": mark, "mark_ts": mark_ts,
                        "stale": last != len(close) - 1})
    if fallback is not None and len(fallback):
        fb = pd.Series(fallback, dtype=float)
        need = out.set_index("symbol")["mark"].reindex(fb.index)
        extra = fb[need.isna().to_numpy() & np.isfinite(fb.to_numpy())]
        if len(extra):
            out = out[~out["symbol"].isin(extra.index)]
            out = pd.concat([out, pd.DataFrame({"symbol": extra.index.astype(object), "mark": extra.to_numpy(),
                                                "mark_ts": pd.DatetimeIndex([pd.NaT] * len(extra), tz="UTC"),
                                                "stale": True})], ignore_index=True)
    return out.sort_values("symbol", kind="mergesort").reset_index(drop=True)[MARK_COLUMNS]


def book_tables(qty: pd.Series, marks: pd.Series, cash: float, expected: pd.Series, source: str,
                stale: pd.Series | None = None) -> dict:
    """Positions and account tables from quantities, marks, cash and the expected book (pure); ``stale``
    (symbol → bool) flags marks that are not this bar's close."""
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
    if stale is not None:
        positions["mark_stale"] = (pd.Series(stale, dtype=bool).reindex(symbols).fillna(False).to_numpy(dtype=bool)
                                   & (q != 0))
    account = pd.DataFrame([{
        "cash": float(cash), "equity": equity, "portfolio_value": equity,
        "gross_exposure": float(np.abs(mv_known).sum()) / equity if equity else np.nan,
        "net_exposure": float(mv_known.sum()) / equity if equity else np.nan,
        "unpriced_symbols": int((~np.isfinite(px) & (q != 0)).sum()),
        **({"stale_marks": int(positions["mark_stale"].sum())} if stale is not None else {}),
        "mismatch": bool(rec.mismatch), "n_mismatched": int(rec.n_mismatched), "source": source,
    }])
    return {"positions": positions, "positions_account": account}


ACTION_COLUMNS = ["symbol", "effective_date", "effective_open", "split_ratio", "cash_dividend", "qty_before",
                  "qty_after", "cash_change"]


def empty_actions() -> pd.DataFrame:
    return pd.DataFrame({"symbol": pd.Series(dtype=object), "effective_date": pd.Series(dtype=object),
                         "effective_open": pd.Series(dtype="datetime64[ns, UTC]"),
                         "split_ratio": pd.Series(dtype=float), "cash_dividend": pd.Series(dtype=float),
                         "qty_before": pd.Series(dtype=float), "qty_after": pd.Series(dtype=float),
                         "cash_change": pd.Series(dtype=float)})[ACTION_COLUMNS]


def apply_corporate_actions(broker: Broker, actions: pd.DataFrame | None) -> pd.DataFrame:
    """Have the broker apply the window's corporate actions in effect (``BarWindow.adjustments``) that it has
    not applied yet; the ones applied now, for lineage (``positions_adjustments``). A broker without
    ``apply_corporate_action`` (a real venue adjusts its own book) is left alone."""
    if actions is None or not len(actions) or not hasattr(broker, "apply_corporate_action"):
        return empty_actions()
    rows = []
    for a in actions.sort_values(["effective_open", "symbol"], kind="mergesort").to_dict("records"):  # a handful
        day = pd.Timestamp(a["effective_date"]).date()
        got = broker.apply_corporate_action(str(a["symbol"]), day, float(a["split_ratio"]), float(a["cash_dividend"]))
        if got["applied"]:
            rows.append({"symbol": a["symbol"], "effective_date": day.isoformat(),
                         "effective_open": pd.Timestamp(a["effective_open"]).tz_convert("UTC"),
                         "split_ratio": float(a["split_ratio"]), "cash_dividend": float(a["cash_dividend"]),
                         "qty_before": float(got["qty_before"]), "qty_after": float(got["qty_after"]),
                         "cash_change": float(got["cash_change"])})
    return pd.DataFrame(rows, columns=ACTION_COLUMNS) if rows else empty_actions()


def positions_from_broker(broker: Broker, snapshot: pd.DataFrame, recorded_fills: pd.DataFrame,
                          source: str, marks: pd.DataFrame | None = None, actions: pd.DataFrame | None = None,
                          applied_before: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Ask the broker for its book, mark it, reconcile against the recorded fills. ``marks`` (from
    :func:`window_marks`): last good marks, stale ones flagged; without them, this bar's closes only.
    ``actions``: the window's corporate actions, applied to the broker first (once each); ``applied_before``:
    the actions applied at earlier bars (the expected book counts a fill before a split × its ratio)."""
    applied = apply_corporate_actions(broker, actions)
    qty = pd.Series(broker.positions(), dtype=float).sort_index()
    cash = float(broker.account().cash)
    every = pd.concat([a for a in (applied_before, applied) if a is not None and len(a)], ignore_index=True) \
        if (applied_before is not None and len(applied_before)) or len(applied) else None
    expected = expected_positions(recorded_fills, every) if len(recorded_fills) else pd.Series(dtype=float)
    if marks is None:
        out = book_tables(qty[qty != 0], marks_from(snapshot), cash, expected, source)
    else:
        m = marks.set_index("symbol")
        out = book_tables(qty[qty != 0], m["mark"], cash, expected, source, stale=m["stale"])
    return {**out, "positions_adjustments": applied}
