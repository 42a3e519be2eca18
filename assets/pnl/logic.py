"""Per-bar P&L: apply the bar's fills to the book, mark it to market, report (pure: pandas in, out).

Realised P&L uses the **average-cost** method: a position's cost basis is the quantity-weighted average
price of the trades that built it; a trade against the position realises
``closed_qty × (price − avg_cost) × sign(position)`` and leaves the basis unchanged; a trade that crosses
zero first closes the whole position, then opens the rest at its own price; a flat position has no basis.
Why average cost: it is path-light (one number per symbol), what most brokers report, and its realised
plus unrealised P&L is independent of the method, so the portfolio value never depends on the choice.

Realised P&L is gross of fees; fees are reported on their own, so that
``portfolio_value = initial cash + realised_cum − fees_cum + unrealised`` holds exactly (tested).
Fills of one symbol within a bar are applied in booking order (``seq``), vectorised across symbols.

Costs per fill: realised = side × (price − mid) × quantity + fee (what the trade paid over the reference
price at the fill: the fill bar's open for a market order); estimated = ``est_cost_bps`` / 1e4 × quantity ×
mid (the arbitration's cost estimate joined to the fill by the caller); slippage = side × (price −
decision price) × quantity (what the trade paid over the price its order was decided at, the decision
bar's close: spread, impact and the move from the decision to the fill). Fills without a mid (or estimate) are left out of that sum and counted in
``n_fills_costed``. Daily return = portfolio value / start-of-day equity − 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from assets.positions.logic import signed_quantity
from assets.take import indexer, taken
from resources.brokers.quantity import round_qty

BOOK_COLUMNS = ["quantity", "avg_cost", "mark"]
SYMBOL_COLUMNS = ["symbol", "quantity", "avg_cost", "mark", "mark_stale", "market_value", "unrealised_pnl",
                  "realised_pnl"]


@dataclass(frozen=True)
class PnlBook:
    """The engine's book between bars: cash, per-symbol quantity / average cost / last mark (index
    symbol, open positions only), cumulative realised P&L and fees, and the last portfolio value."""

    cash: float
    positions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BOOK_COLUMNS, dtype=float))
    realised: float = 0.0
    fees: float = 0.0
    value: float | None = None

    @classmethod
    def start(cls, cash: float) -> PnlBook:
        return cls(cash=cash, value=cash)


def _check_fills(fills: pd.DataFrame) -> pd.DataFrame:
    ids = fills["fill_id"].tolist()
    unique = len(set(ids)) == len(ids) if all(type(i) is str for i in ids) else not fills["fill_id"].duplicated().any()
    if not unique:
        raise ValueError("fills with a repeated fill_id: deduplicate them (assets.positions.logic.merge_fills)")
    nums = np.column_stack([fills[c].to_numpy(dtype=float) for c in ("quantity", "price", "fee")])
    if not np.isfinite(nums).all() or (nums[:, :2] <= 0).any():
        raise ValueError("fills need finite positive quantity and price and a finite fee")
    if "seq" not in fills:
        return fills
    seq = fills["seq"].to_numpy()
    if seq.dtype.kind in "iu" and (len(seq) < 2 or bool((seq[1:] >= seq[:-1]).all())):
        return fills   # already in booking order (the usual case): a stable sort would not move a row
    return fills.sort_values("seq", kind="stable")


def apply_fills(book: PnlBook, fills: pd.DataFrame) -> tuple[PnlBook, pd.Series]:
    """The book after ``fills`` (columns fill_id, symbol, side, quantity, price, fee[, seq]) and the
    realised P&L of these fills per symbol."""
    pos = book.positions
    if not len(fills):
        return book, pd.Series(0.0, index=pos.index, name="realised_pnl")
    f = _check_fills(fills)
    symbols = pos.index.union(pd.Index(f["symbol"].unique())).sort_values()
    # the book's columns on ``symbols`` (fresh arrays: updated in place): quantity 0 where not held
    at = pos.index.get_indexer(symbols) if pos.index.is_unique else None
    if at is not None and all(pos[c].dtype.kind == "f" for c in BOOK_COLUMNS):
        held = at >= 0
        qty = np.where(held, pos["quantity"].to_numpy()[at] if len(pos) else 0.0, 0.0)
        avg, mark = (taken(at, pos[c].to_numpy()) for c in ("avg_cost", "mark"))
    else:
        qty = np.array(pos["quantity"].reindex(symbols, fill_value=0.0), dtype=float)
        avg = np.array(pos["avg_cost"].reindex(symbols), dtype=float)
        mark = np.array(pos["mark"].reindex(symbols), dtype=float)
    realised = np.zeros(len(symbols))
    d_all, x_all = signed_quantity(f), f["price"].to_numpy(dtype=float)
    where = symbols.get_indexer(f["symbol"])
    names = f["symbol"].tolist()
    if all(type(n) is str for n in names) and len(set(names)) == len(names):
        rank = np.zeros(len(names), dtype=np.int64)   # one fill per symbol (the usual bar): one pass
    else:
        rank = f.groupby("symbol", sort=False).cumcount().to_numpy()
    for k in range(int(rank.max()) + 1):  # k-th fill of each symbol in this bar: usually one pass
        sel = rank == k
        i, d, x = where[sel], d_all[sel], x_all[sel]
        p, a = qty[i], avg[i]
        same = (p == 0) | (np.sign(p) == np.sign(d))
        closed = np.where(same, 0.0, np.minimum(np.abs(d), np.abs(p)))
        realised[i] += closed * (x - np.nan_to_num(a)) * np.sign(p)
        p_new = round_qty(p + d)
        with np.errstate(invalid="ignore", divide="ignore"):
            added = (np.abs(p) * np.nan_to_num(a) + np.abs(d) * x) / np.abs(p_new)
        a_new = np.where(same, added, np.where(np.abs(d) > np.abs(p), x, a))
        qty[i], avg[i], mark[i] = p_new, np.where(p_new == 0, np.nan, a_new), x
    fees = float(f["fee"].sum())
    cash = book.cash - float(np.dot(d_all, x_all)) - fees
    open_ = qty != 0   # the open positions only, in one construction
    table = pd.DataFrame({"quantity": qty[open_], "avg_cost": avg[open_], "mark": mark[open_]},
                         index=symbols[open_])
    new = PnlBook(cash, table, book.realised + float(realised.sum()), book.fees + fees, book.value)
    return new, pd.Series(realised, index=symbols, name="realised_pnl")


def apply_actions(book: PnlBook, actions: pd.DataFrame | None) -> tuple[PnlBook, float]:
    """The book after corporate actions (symbol, split_ratio, cash_dividend), in order: a split scales the
    quantity by k and the average cost and mark by 1/k (value unchanged); a cash dividend D pays q·D into cash
    and realised P&L (a short pays it), so value = initial cash + realised − fees + unrealised still holds.
    Returns the new book and the dividends booked."""
    if actions is None or not len(actions) or book.positions.empty:
        return book, 0.0
    pos = book.positions.copy()
    cash, realised, paid = book.cash, book.realised, 0.0
    for sym, k, div in zip(actions["symbol"], actions["split_ratio"], actions["cash_dividend"], strict=True):
        if sym not in pos.index:  # a loop over the session's actions (a handful)
            continue
        q = float(pos.at[sym, "quantity"])
        pos.loc[sym, ["quantity", "avg_cost", "mark"]] = [q * float(k), pos.at[sym, "avg_cost"] / float(k),
                                                         pos.at[sym, "mark"] / float(k)]
        cash += q * float(div)
        realised += q * float(div)
        paid += q * float(div)
    return PnlBook(cash, pos, realised, book.fees, book.value), paid


def _slippage(fills: pd.DataFrame, side: np.ndarray, q: np.ndarray, px: np.ndarray) -> dict[str, float]:
    """What the fills paid over their orders' decision prices: side × (price − decision) × q, in money and in
    bps of the decided notional (fills without a decision price are left out)."""
    dp = fills["decision_price"].to_numpy(dtype=float) if "decision_price" in fills else np.full(len(fills), np.nan)
    ok = np.isfinite(dp)
    money = float((side * (px - dp) * q)[ok].sum())
    decided = float((dp * q)[ok].sum())
    return {"decided_notional": decided, "slippage": money,
            "slippage_bps": money / decided * 1e4 if decided else np.nan}


def _costs(fills: pd.DataFrame) -> dict[str, float]:
    if not len(fills):
        return {"traded_notional": 0.0, "n_fills_costed": 0, "realised_cost": 0.0, "realised_cost_bps": np.nan,
                "est_cost": 0.0, "est_cost_bps": np.nan, "decided_notional": 0.0, "slippage": 0.0,
                "slippage_bps": np.nan}
    q = fills["quantity"].to_numpy(dtype=float)
    px = fills["price"].to_numpy(dtype=float)
    mid = fills["mid"].to_numpy(dtype=float) if "mid" in fills else np.full(len(fills), np.nan)
    est_bps = fills["est_cost_bps"].to_numpy(dtype=float) if "est_cost_bps" in fills else np.full(len(fills), np.nan)
    side = np.sign(signed_quantity(fills))
    costed = np.isfinite(mid)
    realised = side * (px - mid) * q + fills["fee"].to_numpy(dtype=float)
    notional = q * mid
    est_ok = costed & np.isfinite(est_bps)
    est = est_bps / 1e4 * notional
    costed_notional = float(notional[costed].sum())
    est_notional = float(notional[est_ok].sum())
    return {
        "traded_notional": float((q * px).sum()),
        "n_fills_costed": int(costed.sum()),
        "realised_cost": float(realised[costed].sum()),
        "realised_cost_bps": float(realised[costed].sum() / costed_notional * 1e4) if costed_notional else np.nan,
        "est_cost": float(est[est_ok].sum()),
        "est_cost_bps": float(est[est_ok].sum() / est_notional * 1e4) if est_notional else np.nan,
        **_slippage(fills, side, q, px),
    }


def bar_pnl(book: PnlBook, fills: pd.DataFrame, marks: pd.Series | dict[str, float], *,
            start_of_day_equity: float | None) -> tuple[PnlBook, dict[str, float], pd.DataFrame]:
    """Apply one bar's fills, mark to ``marks`` (symbol → price; a held symbol without a finite mark keeps
    its last mark and is flagged ``mark_stale``) and report. Returns (new book, bar row, per-symbol rows).

    Raises ``ValueError`` if a held symbol has no mark at all (never a silent wrong portfolio value).
    """
    new, realised = apply_fills(book, fills)
    pos = new.positions
    given = pd.Series(marks, dtype=float)
    if given.index.is_unique:   # ``reindex(pos.index)`` with one indexer
        given = taken(indexer(given.index, pos.index), given.to_numpy())
    else:
        given = given.reindex(pos.index).to_numpy()
    fresh = np.isfinite(given) & (given > 0)
    mark = np.where(fresh, given, pos["mark"].to_numpy(dtype=float))
    if not np.isfinite(mark).all():
        raise ValueError(f"no mark for held symbols {list(pos.index[~np.isfinite(mark)])}")
    qty = pos["quantity"].to_numpy(dtype=float)
    mv = qty * mark
    unreal = qty * (mark - pos["avg_cost"].to_numpy(dtype=float))
    value = new.cash + float(mv.sum())
    new = PnlBook(new.cash, pos.assign(mark=mark), new.realised, new.fees, value)
    symbols = pos.index.union(realised.index).sort_values()
    # every column on ``symbols`` with one indexer per source (as ``reindex`` then ``fillna`` would give them)
    at = pos.index.get_indexer(symbols)
    at_realised = realised.index.get_indexer(symbols)
    quantity = taken(at, pos["quantity"].to_numpy(), 0.0)
    per_symbol = pd.DataFrame({
        "symbol": symbols.astype(str),
        "quantity": quantity,
        "avg_cost": taken(at, pos["avg_cost"].to_numpy()),
        "mark": taken(at, mark),
        "mark_stale": ~taken(at, fresh, True).astype(bool) & (quantity != 0),
        "market_value": taken(at, mv, 0.0),
        "unrealised_pnl": taken(at, unreal, 0.0),
        "realised_pnl": taken(at_realised, realised.to_numpy(), 0.0),
    }, columns=SYMBOL_COLUMNS)
    gross, net = float(np.abs(mv).sum()), float(mv.sum())
    fees_bar = float(fills["fee"].sum()) if len(fills) else 0.0
    row = {
        "portfolio_value": value,
        "cash": new.cash,
        "gross_exposure": gross,
        "net_exposure": net,
        "gross_leverage": gross / value if value > 0 else np.inf,
        "net_leverage": net / value if value > 0 else np.inf,
        "pnl": value - book.value if book.value is not None else np.nan,
        "realised_pnl": float(realised.sum()),
        "realised_pnl_cum": new.realised,
        "unrealised_pnl": float(unreal.sum()),
        "fees": fees_bar,
        "fees_cum": new.fees,
        "n_fills": int(len(fills)),
        "stale_marks": int((~fresh).sum()),
        **_costs(fills),
        "daily_return": value / start_of_day_equity - 1.0 if start_of_day_equity else np.nan,
    }
    return new, row, per_symbol
