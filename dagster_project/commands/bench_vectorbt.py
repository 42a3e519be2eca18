"""The replay's stepping loop vs vectorbt's ``Portfolio.from_orders`` on the same orders (issue 12, the
``stepping_vs_vectorbt`` benchmark).

**The stepping loop** is what replay must do bar after bar, in order: the stages ``positions`` (the paper
venue settled at the bar — fills due at its open, MOC at the close, expiries — fills taken in, the book
reconciled), ``executions`` (the kill switch, then the submits to the paper venue) and ``pnl`` (the bar's fills
applied, marked to the close). Its time is the sum of those three entries of ``ReplayResult.stage_seconds``
(:data:`STEPPING_STAGES`); everything before them (bars, features, inference, skill, blending, arbitration,
gating, sizing) is stateless per bar and excluded, and so is the lineage write.

**vectorbt's side** is the same trading as a bars × symbols order matrix: every fill the replay recorded
(``positions_fills`` ∪ ``executions_fills``, each fill once) is put at the bar that recorded it — the bar whose
``pnl`` applied it — as a signed quantity at its price with its fee as a fixed fee; fills of one bar × symbol
× side are summed (quantity, notional, fee) and priced at their volume-weighted price, so cash moves by exactly
Σ quantity × price + fee. A bar × symbol with both a buy and a sell gets a second row (vectorbt takes one order
per cell). Positions are marked at each bar's close (carried over a halt, like the replay's marks). Timed: the
simulation (``from_orders``, one cash-sharing group, ``size_type="amount"``, ``direction="both"``,
``allow_partial=False`` and ``raise_reject=True`` so vectorbt executes every order exactly or fails) plus the
per-bar portfolio value (what ``pnl`` computes), after one untimed call that compiles vectorbt's numba
kernels; the median of :data:`REPEATS` runs.

**Same work, checked**: vectorbt's final cash must equal the P&L book's and the paper account's, its final
positions the paper account's, and its final value the last ``pnl`` row's portfolio value, to the
tolerances below (floating sums in another order; quantities are rounded to ``broker.qty_decimals``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

STEPPING_STAGES = ("positions", "executions", "pnl")
REPEATS = 3
CASH_RTOL = 1e-9      # × initial cash: $0.001 on $1M (sums of ~10⁵ fills in another order)
QTY_ATOL = 1e-6       # shares (quantities are rounded to 6 decimals by the venue)


class VectorbtUnavailable(ImportError):
    """vectorbt (the ``bench`` extra) is not installed."""


class CrossCheckFailed(AssertionError):
    """vectorbt's final book differs from the replay's: the two did not do the same work."""


def stepping_seconds(stage_seconds: dict[str, float]) -> float:
    """Seconds of the stepping loop (:data:`STEPPING_STAGES`) in a replay's ``stage_seconds``; a missing stage
    is an error (a renamed stage must be mapped here, never silently dropped from the sum)."""
    missing = [s for s in STEPPING_STAGES if s not in stage_seconds]
    if missing:
        raise KeyError(f"stepping stages {missing} not in the replay's stage_seconds {sorted(stage_seconds)}")
    return float(sum(stage_seconds[s] for s in STEPPING_STAGES))


@dataclass
class OrderPanel:
    """The replay's fills as vectorbt's inputs: (R, N) arrays, R ≥ bars (a second row where a bar × symbol
    has both a buy and a sell), NaN size = no order."""

    symbols: list[str]
    close: np.ndarray      # the row's bar close, carried over halts (NaN before a symbol's first bar)
    size: np.ndarray       # signed shares
    price: np.ndarray      # volume-weighted fill price (the close where there is no order)
    fees: np.ndarray       # absolute fee of the order (0 where none)
    fills: int
    orders: int


def recorded_fills(store, bars: list[str]) -> pd.DataFrame:
    """Every fill recorded at ``bars`` (``positions_fills`` ∪ ``executions_fills``): bar, symbol, side,
    quantity, price, fee, fill_id; a fill_id recorded twice is an error (the design records each once)."""
    parts = []
    with store.connect(read_only=True) as con:
        # tables or views (a bulk lineage store may serve them as views over Parquet)
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in ("positions_fills", "executions_fills"):
            if table in tables:
                parts.append(con.execute(f"SELECT bar, symbol, side, quantity, price, fee, fill_id FROM {table}")
                             .df())
    fills = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["bar", "symbol", "side", "quantity", "price", "fee", "fill_id"])
    fills = fills[fills["bar"].isin(set(bars))].reset_index(drop=True)
    if fills["fill_id"].duplicated().any():
        raise CrossCheckFailed(f"fill ids recorded twice: {fills.loc[fills['fill_id'].duplicated(), 'fill_id'].tolist()[:5]}")
    return fills


def order_panel(fills: pd.DataFrame, closes: pd.DataFrame, bars: list[str]) -> OrderPanel:
    """Build vectorbt's (R, N) inputs from ``fills`` (:func:`recorded_fills`) and ``closes`` (bar × symbol
    closes, index = ``bars``; NaN where a symbol had no bar, carried forward here)."""
    symbols = sorted(set(closes.columns) | set(fills["symbol"]))
    close_bn = closes.reindex(index=bars, columns=symbols).ffill().to_numpy(dtype=float)
    f = fills.assign(sign=np.where(fills["side"].astype(str).str.upper() == "BUY", 1.0, -1.0))
    f = f.assign(signed=f["sign"] * f["quantity"].astype(float), notional=f["quantity"].astype(float) * f["price"].astype(float),
                 fee=f["fee"].astype(float))
    g = f.groupby(["bar", "symbol", "sign"], sort=True).agg(signed=("signed", "sum"), notional=("notional", "sum"),
                                                            fee=("fee", "sum")).reset_index()
    bar_pos = {b: i for i, b in enumerate(bars)}
    sym_pos = {s: j for j, s in enumerate(symbols)}
    g["b"] = g["bar"].map(bar_pos).astype(int)
    g["n"] = g["symbol"].map(sym_pos).astype(int)
    g["k"] = g.groupby(["b", "n"]).cumcount()          # 0, or 1 for the second side of a bar × symbol
    rows_per_bar = np.ones(len(bars), dtype=int)
    if len(g):
        np.maximum.at(rows_per_bar, g["b"].to_numpy(), g["k"].to_numpy() + 1)
    first_row = np.concatenate([[0], np.cumsum(rows_per_bar)[:-1]])
    r_total = int(rows_per_bar.sum())
    row_bar = np.repeat(np.arange(len(bars)), rows_per_bar)
    close = close_bn[row_bar]
    size = np.full((r_total, len(symbols)), np.nan)
    fees = np.zeros((r_total, len(symbols)))
    price = close.copy()
    r = first_row[g["b"].to_numpy()] + g["k"].to_numpy()
    n = g["n"].to_numpy()
    size[r, n] = g["signed"].to_numpy()
    price[r, n] = g["notional"].to_numpy() / np.abs(g["signed"].to_numpy())
    fees[r, n] = g["fee"].to_numpy()
    return OrderPanel(symbols, close, size, price, fees, fills=len(fills), orders=len(g))


def _import_vectorbt():
    try:
        import vectorbt as vbt
    except ImportError as exc:  # the bench extra is optional
        raise VectorbtUnavailable("vectorbt is not installed: `pip install -e '.[bench]'` (make bench-year does)") from exc
    return vbt


def simulate(panel: OrderPanel, init_cash: float, rows: slice | None = None):
    """vectorbt's portfolio over ``panel`` (rows ``rows``) and its per-row value."""
    vbt = _import_vectorbt()
    sl = rows or slice(None)
    pf = vbt.Portfolio.from_orders(
        panel.close[sl], panel.size[sl], price=panel.price[sl], fixed_fees=panel.fees[sl], fees=0.0, slippage=0.0,
        init_cash=init_cash, cash_sharing=True, group_by=True, size_type="amount", direction="both",
        allow_partial=False, raise_reject=True, call_seq="default", freq="5min")
    return pf, pf.value()


def run_vectorbt(panel: OrderPanel, init_cash: float, repeats: int = REPEATS) -> dict:
    """Time vectorbt on ``panel`` (compile first, untimed) and return its final book and timings."""
    _import_vectorbt()   # fail before timing anything
    t = time.perf_counter()
    simulate(panel, init_cash, slice(0, min(2, len(panel.close))))   # numba compiles for these dtypes/flags
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        pf, value = simulate(panel, init_cash)
        times.append(time.perf_counter() - t)
    cash = float(np.asarray(pf.cash()).ravel()[-1])
    assets = np.asarray(pf.assets())[-1]
    return {"seconds": statistics.median(times), "seconds_all": times, "compile_s": compile_s,
            "orders_executed": int(pf.orders.count()), "final_cash": cash,
            "final_value": float(np.asarray(value).ravel()[-1]),
            "positions": {s: float(q) for s, q in zip(panel.symbols, assets, strict=True) if q != 0}}


def cross_check(vbt_out: dict, panel: OrderPanel, init_cash: float, pnl_cash: float, pnl_value: float,
                venue_cash: float, venue_positions: dict[str, float]) -> dict:
    """Differences between vectorbt's final book and the replay's; raises :class:`CrossCheckFailed` beyond
    :data:`CASH_RTOL` × initial cash (cash, value) or :data:`QTY_ATOL` (shares)."""
    syms = sorted(set(vbt_out["positions"]) | {s for s, q in venue_positions.items() if q != 0})
    qty_diff = max((abs(vbt_out["positions"].get(s, 0.0) - venue_positions.get(s, 0.0)) for s in syms), default=0.0)
    diffs = {"orders": panel.orders, "orders_executed": vbt_out["orders_executed"],
             "cash_vs_pnl": vbt_out["final_cash"] - pnl_cash, "cash_vs_venue": vbt_out["final_cash"] - venue_cash,
             "value_vs_pnl": vbt_out["final_value"] - pnl_value, "max_position_diff": qty_diff,
             "cash_tolerance": CASH_RTOL * init_cash, "qty_tolerance": QTY_ATOL}
    bad = [k for k in ("cash_vs_pnl", "cash_vs_venue", "value_vs_pnl") if not abs(diffs[k]) <= diffs["cash_tolerance"]]
    if qty_diff > QTY_ATOL:
        bad.append("max_position_diff")
    if panel.orders != vbt_out["orders_executed"]:
        bad.append("orders_executed")
    if bad:
        raise CrossCheckFailed(f"vectorbt's book differs from the replay's in {bad}: {diffs}")
    return diffs


def compare(store, bars: list[str], closes: pd.DataFrame, stage_seconds: dict[str, float], init_cash: float,
            venue, repeats: int = REPEATS) -> dict:
    """The whole benchmark for one finished replay: its recorded fills through vectorbt, checked against the
    replay's final book (``pnl`` in ``store``, the paper ``venue``), and the ratio stepping / vectorbt."""
    fills = recorded_fills(store, bars)
    panel = order_panel(fills, closes, bars)
    vbt_out = run_vectorbt(panel, init_cash, repeats)
    with store.connect(read_only=True) as con:
        last = con.execute("SELECT cash, portfolio_value FROM pnl WHERE bar = ?", [bars[-1]]).fetchone()
    if last is None:
        raise CrossCheckFailed(f"no pnl row at the replay's last bar {bars[-1]}")
    account = venue.account()
    check = cross_check(vbt_out, panel, init_cash, float(last[0]), float(last[1]), float(account.cash),
                        dict(venue.positions()))
    step_s = stepping_seconds(stage_seconds)
    return {"stepping_stages": list(STEPPING_STAGES), "stepping_s": step_s, "vectorbt_s": vbt_out["seconds"],
            "vectorbt_runs_s": vbt_out["seconds_all"], "vectorbt_compile_s": vbt_out["compile_s"],
            "ratio": step_s / vbt_out["seconds"], "rows": int(panel.close.shape[0]),
            "symbols": len(panel.symbols), "fills": panel.fills, "check": check}
