"""Sizing against the book *and* the working orders, and the session rules (SPEC §7): the closing bar is
observe-only, the bar before it may flatten the book, and its orders may be market-on-close."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.sized_orders.stage import SESSION_CLOSED, SessionRules, compute_sized, session_phase
from resources.brokers.protocol import OrderType
from tests.unit.test_sized_orders_logic import SP

BAR = "2025-06-03T18:00Z"
MARKET = SessionRules(flatten_before_close=False, close_order_type=OrderType.MARKET)


class History:
    """Sizing history with a median |raw| of 1 (robust scale 1.4826), as the logic tests use."""

    def sizing_raw(self, bars):
        return pd.DataFrame({"raw": np.ones(1000)})


def inputs(signal=(100.0, 0.0), held=(0.0, 0.0)):
    symbols = ["AAA", "BBB"]
    gated = pd.DataFrame({"symbol": symbols, "gate": "allowed", "signal_bps": list(signal), "size_mult": 1.0,
                          "is_exit": False, "hold": False, "current_qty": list(held)})
    features = pd.DataFrame({"symbol": symbols, "sigma_bps": 5.0, "price": 100.0, "sigma_daily_bps": 100.0,
                             "adv_bar_dollars": 1e9})
    return gated, features


def sized(pending=None, rules=MARKET, phase="open", **kw):
    gated, features = inputs(**kw)
    return compute_sized(BAR, gated, features, 1e6, History(), SP, pending=pd.Series(pending or {}, dtype=float),
                         rules=rules, phase=phase).set_index("symbol")


def test_working_orders_are_netted_against_the_target():
    # raw 100/5 = 20 → z clipped at 3 → w .05 → 50 000 $ → 500 shares to buy from flat
    assert sized().loc["AAA", "shares"] == 500.0
    # a BUY of which 300 are still working: only the rest is ordered (not BUY 500 on top of it)
    s = sized(pending={"AAA": 300.0})
    assert (s.loc["AAA", "shares"], s.loc["AAA", "side"], s.loc["AAA", "pending_qty"]) == (200.0, "BUY", 300.0)
    assert s.loc["AAA", "w_current"] == pytest.approx(0.03)            # book + working orders
    over = sized(pending={"AAA": 800.0})                               # more working than wanted: sell back
    assert (over.loc["AAA", "shares"], over.loc["AAA", "side"]) == (-300.0, "SELL")


def test_the_closing_bar_is_observe_only():
    s = sized(phase="closing", held=(100.0, 50.0))
    assert not s["has_order"].any() and (s["status"] == SESSION_CLOSED).all()
    assert (s["shares"] == 0).all() and (s["client_order_id"] == "").all()


def test_flatten_before_close_exits_the_book_only_and_opens_nothing():
    rules = SessionRules(flatten_before_close=True, close_order_type=OrderType.MOC)
    s = sized(phase="last", rules=rules, signal=(100.0, 100.0), held=(0.0, 120.0), pending={"BBB": 30.0})
    assert not s.loc["AAA", "has_order"]                               # a strong signal, but nothing opens
    bbb = s.loc["BBB"]
    assert (bbb["shares"], bbb["side"], bbb["status"], bbb["reduce_only"], bbb["order_type"]) == (
        -120.0, "SELL", "flatten_before_close", True, "MOC")           # the working 30 are cancelled instead


def test_flatten_before_close_keeps_a_position_held_by_the_data():
    # a suspected split (gate hold, reason data_hold): its prices may be on another share basis than the book,
    # so the flatten does not sell it (an exit filled at the new basis books a fake P&L); BBB is flattened
    gated, features = inputs(signal=(0.0, 0.0), held=(80.0, 120.0))
    gated["gate"] = ["hold", "blocked"]
    gated["hold"] = [True, False]
    gated["reason"] = ["data_hold", "no_signal"]
    rules = SessionRules(flatten_before_close=True, close_order_type=OrderType.MOC)
    s = compute_sized(BAR, gated, features, 1e6, History(), SP, rules=rules, phase="last").set_index("symbol")
    assert not s.loc["AAA", "has_order"] and s.loc["AAA", "shares"] == 0.0
    assert (s.loc["BBB", "shares"], s.loc["BBB", "status"]) == (-120.0, "flatten_before_close")


def test_orders_of_the_bar_before_the_close_take_the_close_order_type():
    moc = SessionRules(flatten_before_close=False, close_order_type=OrderType.MOC)
    assert sized(phase="last", rules=moc).loc["AAA", "order_type"] == "MOC"
    assert sized(phase="open", rules=moc).loc["AAA", "order_type"] == "MARKET"
    assert sized(phase="last").loc["AAA", "order_type"] == "MARKET"


@pytest.mark.parametrize(("bar", "phase"), [
    ("2025-06-03T20:00Z", "closing"), ("2025-06-03T19:55Z", "last"), ("2025-06-03T19:50Z", "open"),
    ("2025-06-03T13:35Z", "open"),
    ("2026-11-27T18:00Z", "closing"), ("2026-11-27T17:55Z", "last"),     # a half day: 13:00 New York
])
def test_session_phase_from_the_calendar(bar, phase):
    assert session_phase(bar) == phase
