"""The ``sized_orders`` stage for one bar, pure: z-scores, caps, band, gross targeting, shares, order ids,
netted against open orders and under the session rules (SPEC §7).

Netting: the position a target is compared with is the book **plus the remaining quantity of the orders
still working** (``positions.pending_qty``), so a carried or delayed order is never ordered again.

Session rules, by the bar's place in its session (``session_phase``):

* ``closing`` — the session's closing bar (16:00, 13:00 on a half day) is observe-only: everything is
  computed and recorded, no order is made (status ``session_closed``): a market order sent then would
  reach a venue that has closed;
* ``last`` — the bar before it: orders are of type ``execution.close_order_type`` (``market``: they fill
  at the closing bar's open; ``moc``: at the session's closing price). With
  ``execution.flatten_before_close`` every position of the book is exited on this bar (status
  ``flatten_before_close``, reduce-only), nothing is opened, and ``executions`` cancels every working
  order first (so a remainder that would expire at the close cannot leave a position behind);
* ``open`` — every other bar: market orders.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from assets.history import ChainHistory
from assets.sized_orders.logic import Params, size_orders
from assets.take import as_text, in_symbol_order, indexer, taken
from CONFIG.config_loader import get_cfg
from resources.brokers.protocol import OrderType
from resources.market.calendar import TradingCalendar, bar_keys, get_calendar, parse_bar_key

SESSION_CLOSED = "session_closed"
FLATTEN = "flatten_before_close"


@dataclass(frozen=True)
class SessionRules:
    """``execution.*``: flatten on the bar before the close, and the order type of that bar's orders."""

    flatten_before_close: bool
    close_order_type: OrderType

    @classmethod
    def from_cfg(cls) -> SessionRules:
        return cls(bool(get_cfg("execution.flatten_before_close")),
                   OrderType(str(get_cfg("execution.close_order_type")).upper()))


def session_phase(bar: str) -> str:
    """``closing`` (the session's closing bar), ``last`` (the bar before it) or ``open``."""
    return _session_phase(get_calendar(), bar)


@functools.lru_cache(maxsize=4096)
def _session_phase(cal: TradingCalendar, bar: str) -> str:
    """:func:`session_phase` of one calendar (a frozen value: its sessions are cached by value too)."""
    ts = parse_bar_key(bar)
    closes = cal.session_bars(cal.session_of(ts))
    if ts == closes[-1]:
        return "closing"
    return "last" if len(closes) > 1 and ts == closes[-2] else "open"


@functools.lru_cache(maxsize=4096)
def _previous_keys(cal: TradingCalendar, bar: str, n: int) -> tuple[str, ...]:
    """:func:`~assets.predictions.stage.previous_bar_keys` of one calendar, computed once per bar (the stepping
    loop asks for the same window's keys again at every run of a bar, and each was a calendar search)."""
    return tuple(bar_keys(cal.previous_bars(parse_bar_key(bar), n + 1)[:-1]))


def _pending_on(pending: pd.Series | None, symbols: np.ndarray) -> np.ndarray:
    """``pending.reindex(symbols).fillna(0.0)`` as float64 (absent symbols and NaN: 0)."""
    if pending is None or not len(pending):
        return np.zeros(len(symbols), dtype=float)
    if pending.index.is_unique and pending.dtype == np.float64:
        return taken(indexer(pending.index, symbols), pending.to_numpy(), 0.0)
    return pending.reindex(symbols).fillna(0.0).to_numpy(float)


def compute_sized(bar: str, gated: pd.DataFrame, features: pd.DataFrame, portfolio_value: float,
                  history: ChainHistory, params: Params | None = None, pending: pd.Series | None = None,
                  rules: SessionRules | None = None, phase: str | None = None) -> pd.DataFrame:
    """Sized orders of one bar; ``pending`` is symbol → signed remaining quantity of working orders."""
    params = params or Params.from_cfg()
    rules = rules or SessionRules.from_cfg()
    phase = phase or session_phase(bar)
    g = in_symbol_order(gated).reset_index(drop=True)
    symbols = g["symbol"].to_numpy()
    source = pd.Index(features["symbol"])
    keys = list(_previous_keys(get_calendar(), bar, params.z_window_bars))
    raw_hist = history.sizing_raw(keys)["raw"].to_numpy(dtype=float)
    names = ("sigma_bps", "price", "sigma_daily_bps", "adv_bar_dollars")
    if source.is_unique:   # the features' rows of the gated symbols, one indexer for the four columns
        at = indexer(source, symbols)
        col = {c: taken(at, features[c].to_numpy(dtype=float)) for c in names}
    else:                  # reindex says what is wrong with them
        f = features.set_index("symbol").reindex(symbols)
        col = {c: f[c].to_numpy(dtype=float) for c in names}
    held = g["current_qty"].to_numpy(dtype=float)
    pend = _pending_on(pending, symbols)
    net = held + pend
    signal, is_exit, hold = (g["signal_bps"].to_numpy(dtype=float), g["is_exit"].to_numpy(bool),
                             g["hold"].to_numpy(bool))
    flatten = phase == "last" and rules.flatten_before_close
    if phase == "closing":
        hold = np.ones(len(g), dtype=bool)
        is_exit = np.zeros(len(g), dtype=bool)
    elif flatten:  # the working orders are cancelled by executions: the book alone is exited
        net = held
        # … except a symbol held by the data (its prices may be on another share basis: gated_signals/logic.py)
        reason = g["reason"].astype(str) if "reason" in g else pd.Series("", index=g.index)
        data_hold = (g["gate"].astype(str) == "hold").to_numpy() & reason.str.startswith("data_hold").to_numpy()
        signal, is_exit, hold = np.zeros(len(g)), (net != 0.0) & ~data_hold, data_hold
    o = size_orders(signal, col["sigma_bps"], g["size_mult"].to_numpy(dtype=float), is_exit, hold, net,
                    col["price"], col["sigma_daily_bps"], col["adv_bar_dollars"], float(portfolio_value), raw_hist,
                    symbols, bar, params)
    status = o.status.astype(object)
    if phase == "closing":
        status = np.full(len(g), SESSION_CLOSED, dtype=object)
    elif flatten:
        status = np.where(o.has_order, FLATTEN, status)
    order_type = rules.close_order_type if phase == "last" else OrderType.MARKET
    return pd.DataFrame({
        "symbol": as_text(g["symbol"]), "gate": as_text(g["gate"]), "price": col["price"], "raw": o.raw, "z": o.z,
        "w_signal": o.w_signal, "w_target": o.w_target, "w_current": o.w_current, "w_post": o.w_post,
        "trade_notional": o.trade_notional, "shares": o.shares, "side": o.side.astype(object),
        "caps": o.caps.astype(object), "status": status, "has_order": o.has_order.astype(bool),
        "client_order_id": o.client_order_id.astype(object),
        "robust_scale": float(o.scale), "gross_before": float(o.gross_before), "gross_after": float(o.gross_after),
        "pending_qty": pend, "order_type": np.where(o.has_order, order_type.value, "").astype(object),
        "reduce_only": (is_exit & o.has_order).astype(bool), "session_phase": phase,
    })


def cancels_working_orders(bar: str, rules: SessionRules | None = None) -> bool:
    """The bar flattens the book before the close: its working orders are cancelled before its exits."""
    rules = rules or SessionRules.from_cfg()
    return rules.flatten_before_close and session_phase(bar) == "last"


def pending_of(positions: dict[str, pd.DataFrame]) -> pd.Series:
    """Symbol → signed remaining quantity of the working orders, from the ``positions`` output."""
    pos = positions["positions"]
    if "pending_qty" not in pos or pos.empty:
        return pd.Series(dtype=float)
    return pd.Series(pos["pending_qty"].to_numpy(dtype=float), index=pos["symbol"].to_numpy(), dtype=float)


def orders_only(sized: pd.DataFrame) -> pd.DataFrame:
    """The rows that become orders (``has_order``), in symbol order."""
    return sized[sized["has_order"]].reset_index(drop=True)
