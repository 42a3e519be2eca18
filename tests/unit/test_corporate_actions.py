"""Corporate actions (SPEC §10), worked by hand: the adjusted history, the broker's book, the engine's expected
book and the P&L book all move to the post-split basis on the effective date, each exactly once."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import adjust_history
from assets.pnl.logic import PnlBook, apply_actions
from assets.pnl.stage import due_actions
from assets.positions.logic import expected_positions
from resources.market.adjustments import read_adjustments, with_factors
from resources.market.calendar import get_calendar

OPEN = pd.Timestamp("2025-06-03 13:30", tz="UTC")  # 09:30 New York, the effective session's open


def actions(split=2.0, dividend=0.0) -> pd.DataFrame:
    return pd.DataFrame({"symbol": ["X"], "effective_date": [dt.date(2025, 6, 3)], "split_ratio": [split],
                         "cash_dividend": [dividend], "effective_open": [OPEN], "prev_close": [100.0],
                         "price_factor": [(1 / split) * (1 - dividend / 100.0)], "volume_factor": [split]})


def test_history_before_the_effective_open_is_back_adjusted():
    hist = pd.DataFrame({"ts": [OPEN - pd.Timedelta(hours=17, minutes=30), OPEN + pd.Timedelta(minutes=5)] * 2,
                         "symbol": ["X", "X", "Y", "Y"], "open": 100.0, "high": 101.0, "low": 99.0,
                         "close": [100.0, 50.0, 10.0, 10.0], "volume": 1000.0, "bid": 99.9, "ask": 100.1})
    out = adjust_history(hist, actions(split=2.0, dividend=1.0))
    # price factor (1/2)·(1 − 1/100) = 0.495 before the open, volume × 2; after it and other symbols untouched
    assert out["close"].tolist() == [pytest.approx(49.5), 50.0, 10.0, 10.0]
    assert out["volume"].tolist() == [2000.0, 1000.0, 1000.0, 1000.0]
    assert out.loc[0, ["open", "high", "low", "bid", "ask"]].tolist() == pytest.approx([49.5, 49.995, 49.005,
                                                                                       49.4505, 49.5495])
    assert hist["close"].tolist() == [100.0, 50.0, 10.0, 10.0]  # the raw history is not changed


def test_adjustments_file_is_validated_and_priced(tmp_path):
    f = tmp_path / "adj.csv"
    f.write_text("symbol,effective_date,split_ratio,cash_dividend\nX,2025-06-03,2,\nY,2025-06-03,,0.5\n")
    got = read_adjustments(f, get_calendar())
    assert got[["symbol", "split_ratio", "cash_dividend"]].values.tolist() == [["X", 2.0, 0.0], ["Y", 1.0, 0.5]]
    assert (got["effective_open"] == OPEN).all()
    rows = pd.DataFrame({"ts": [OPEN - pd.Timedelta(hours=17, minutes=30)] * 2, "symbol": ["X", "Y"],
                         "close": [100.0, 25.0]})
    priced = with_factors(got, rows)
    assert priced["prev_close"].tolist() == [100.0, 25.0]
    assert priced["price_factor"].tolist() == pytest.approx([0.5, 1 - 0.5 / 25.0])
    f.write_text("symbol,effective_date,split_ratio,cash_dividend\nX,2025-06-07,2,0\n")  # a Saturday
    with pytest.raises(ValueError, match=r"adj\.csv: row 0: effective_date 2025-06-07: .*not a trading session"):
        read_adjustments(f, get_calendar())
    f.write_text("symbol,effective_date,split_ratio,cash_dividend\nX,2025-06-03,-2,0\n")
    with pytest.raises(ValueError, match=r"row 0: .*split_ratio > 0"):
        read_adjustments(f, get_calendar())


def test_expected_book_counts_fills_before_a_split_times_its_ratio():
    fills = pd.DataFrame({"fill_id": ["a", "b"], "symbol": ["X", "X"], "side": ["BUY", "BUY"],
                          "quantity": [100.0, 10.0], "ts": [OPEN - pd.Timedelta(days=1), OPEN + pd.Timedelta(hours=1)]})
    assert expected_positions(fills).to_dict() == {"X": 110.0}
    assert expected_positions(fills, actions(split=2.0)).to_dict() == {"X": 210.0}  # 100 × 2 + 10


def test_pnl_book_splits_and_pays_the_dividend_keeping_its_value():
    book = PnlBook(1_000.0, pd.DataFrame({"quantity": [100.0], "avg_cost": [90.0], "mark": [100.0]}, index=["X"]),
                   realised=5.0, fees=1.0, value=11_000.0)
    new, paid = apply_actions(book, actions(split=2.0, dividend=1.0))
    assert new.positions.loc["X"].tolist() == [200.0, 45.0, 50.0]
    assert (new.cash, new.realised, paid) == (1_100.0, 105.0, 100.0)  # 100 shares × $1, before the split
    # value at the adjusted mark: 1,100 + 200 × 50 = 11,100 = old value + the dividend
    assert new.cash + float((new.positions["quantity"] * new.positions["mark"]).sum()) == 11_100.0
    short = PnlBook(0.0, pd.DataFrame({"quantity": [-10.0], "avg_cost": [100.0], "mark": [100.0]}, index=["X"]))
    assert apply_actions(short, actions(split=1.0, dividend=2.0))[0].cash == -20.0  # a short pays it


def test_the_book_applies_an_action_at_its_first_bar_of_the_session_only():
    a = actions()
    assert due_actions(a, "2025-06-02", dt.date(2025, 6, 3)) is not None  # first bar of the effective session
    assert due_actions(a, "2025-06-03", dt.date(2025, 6, 3)) is None      # later bars: already applied
    assert due_actions(a, "2025-05-30", dt.date(2025, 6, 4)) is not None  # the engine did not run on the 3rd
    assert due_actions(a, "2025-06-03", dt.date(2025, 6, 4)) is None
    assert due_actions(a, None, dt.date(2025, 6, 3)) is None              # a fresh book holds nothing


def test_paper_broker_applies_each_action_once(tmp_path):
    from CONFIG.config_loader import use_config
    from resources.brokers.paper import PaperBroker
    from resources.brokers.protocol import Fill, Side

    with use_config({"paths": {"paper_broker_db": str(tmp_path / "paper.duckdb")}}):
        broker = PaperBroker()
        broker.book_fill(Fill("f1", "c1", "X", Side.BUY, 100.0, 100.0, 0.0,
                              dt.datetime(2025, 6, 2, 15, tzinfo=dt.UTC), 0, 100.0))
        cash = broker.account().cash
        got = broker.apply_corporate_action("X", dt.date(2025, 6, 3), 2.0, 1.0)
        assert got == {"applied": True, "qty_before": 100.0, "qty_after": 200.0, "cash_change": 100.0}
        assert broker.positions() == {"X": 200.0} and broker.account().cash == cash + 100.0
        again = broker.apply_corporate_action("X", dt.date(2025, 6, 3), 2.0, 1.0)
        assert again["applied"] is False and broker.positions() == {"X": 200.0}
        assert broker.account(marks={"X": 50.0}).equity == pytest.approx(cash + 100.0 + 200 * 50.0)
        assert np.isclose(broker.apply_corporate_action("Y", dt.date(2025, 6, 3), 3.0, 0.0)["qty_after"], 0.0)
