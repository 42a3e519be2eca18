"""P&L by hand for a scripted sequence of fills, fees and marks; reconciliation of expected vs broker."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from assets.pnl.logic import PnlBook, apply_fills, bar_pnl
from assets.pnl.stage import start_of_bar
from assets.positions.logic import (
    classify_fills,
    expected_positions,
    fills_frame,
    merge_fills,
    reconcile,
    slippage_bps,
)
from assets.positions.stage import book_tables

CASH = 100_000.0


def fills(*rows) -> pd.DataFrame:
    cols = ["fill_id", "symbol", "side", "quantity", "price", "fee", "seq", "mid", "est_cost_bps"]
    return pd.DataFrame([dict(zip(cols, r, strict=False)) for r in rows], columns=cols)


def approx(x):
    return pytest.approx(x, abs=1e-9)


def test_hand_worked_pnl_sequence():
    book = PnlBook.start(CASH)

    # Bar 1: BUY 100 AAA @ 50.00, fee 1.00 (mid 49.98, estimated cost 5 bps). Mark AAA 51.
    #   cash = 100,000 − 100 × 50 − 1 = 94,999;  AAA 100 @ avg 50
    #   unrealised = 100 × (51 − 50) = 100;  PV = 94,999 + 100 × 51 = 100,099
    #   realised cost = (50.00 − 49.98) × 100 + 1 = 3.00  → 3 / (100 × 49.98) = 6.0024 bps
    #   estimated cost = 5 bps × 4,998 = 2.499;  daily return = 100,099 / 100,000 − 1 = 0.00099
    book, row, _ = bar_pnl(book, fills(("f1", "AAA", "BUY", 100, 50.00, 1.00, 1, 49.98, 5.0)), {"AAA": 51.0},
                           start_of_day_equity=CASH)
    assert row["cash"] == approx(94_999.0)
    assert row["portfolio_value"] == approx(100_099.0)
    assert (row["unrealised_pnl"], row["realised_pnl"], row["fees"]) == (approx(100.0), 0.0, 1.0)
    assert (row["gross_exposure"], row["net_exposure"]) == (approx(5_100.0), approx(5_100.0))
    assert row["realised_cost"] == approx(3.0)
    assert row["realised_cost_bps"] == pytest.approx(3.0 / 4_998.0 * 1e4)
    assert row["est_cost"] == approx(2.499)
    assert row["daily_return"] == approx(0.00099)
    assert row["pnl"] == approx(99.0)

    # Bar 2: BUY 100 AAA @ 52 fee 1; SELL 50 BBB @ 20 fee 0.5 (opens a short). Marks AAA 53, BBB 19.
    #   AAA 200 @ avg (100 × 50 + 100 × 52) / 200 = 51;  BBB −50 @ 20
    #   cash = 94,999 − 5,200 − 1 + 1,000 − 0.5 = 90,797.5
    #   PV = 90,797.5 + 200 × 53 − 50 × 19 = 100,447.5;  unrealised = 200 × 2 + (−50) × (−1) = 450
    #   gross = 10,600 + 950 = 11,550;  net = 9,650;  bar P&L = 100,447.5 − 100,099 = 348.5
    book, row, per = bar_pnl(book, fills(("f2", "AAA", "BUY", 100, 52.0, 1.0, 2),
                                         ("f3", "BBB", "SELL", 50, 20.0, 0.5, 3)),
                             {"AAA": 53.0, "BBB": 19.0}, start_of_day_equity=CASH)
    assert book.positions.loc["AAA", "avg_cost"] == approx(51.0)
    assert (row["cash"], row["portfolio_value"], row["unrealised_pnl"]) == (
        approx(90_797.5), approx(100_447.5), approx(450.0))
    assert (row["gross_exposure"], row["net_exposure"], row["pnl"]) == (
        approx(11_550.0), approx(9_650.0), approx(348.5))
    assert (row["fees_cum"], row["realised_pnl_cum"]) == (approx(2.5), 0.0)
    assert math.isnan(row["realised_cost_bps"]) and row["n_fills_costed"] == 0   # no mids given: not costed

    # Bar 3: SELL AAA 150 @ 54 fee 1 then 100 @ 55 fee 1 (crosses zero); BUY 50 BBB @ 18 fee 0.5 (cover).
    #   AAA: 150 × (54 − 51) = 450 realised, 50 left @ 51;  then 50 × (55 − 51) = 200, opens −50 @ 55
    #   BBB: covers 50 @ 18 against 20: 50 × (18 − 20) × (−1) = 100 realised
    #   realised = 750;  cash = 90,797.5 + 8,100 + 5,500 − 900 − 2.5 = 103,495
    #   mark AAA 56: unrealised = −50 × (56 − 55) = −50;  PV = 103,495 − 2,800 = 100,695
    #   identity: 100,000 + 750 (realised) − 5 (fees) − 50 (unrealised) = 100,695
    book, row, per = bar_pnl(book, fills(("f4", "AAA", "SELL", 150, 54.0, 1.0, 4),
                                         ("f6", "BBB", "BUY", 50, 18.0, 0.5, 6),
                                         ("f5", "AAA", "SELL", 100, 55.0, 1.0, 5)),
                             {"AAA": 56.0}, start_of_day_equity=CASH)
    assert (row["realised_pnl"], row["realised_pnl_cum"]) == (approx(750.0), approx(750.0))
    assert (row["cash"], row["portfolio_value"], row["unrealised_pnl"]) == (
        approx(103_495.0), approx(100_695.0), approx(-50.0))
    assert (row["gross_exposure"], row["net_exposure"], row["fees_cum"]) == (
        approx(2_800.0), approx(-2_800.0), approx(5.0))
    assert row["portfolio_value"] == approx(CASH + row["realised_pnl_cum"] - row["fees_cum"] + row["unrealised_pnl"])
    assert book.positions.loc["AAA", "avg_cost"] == approx(55.0) and "BBB" not in book.positions.index
    assert per.set_index("symbol")["realised_pnl"].to_dict() == {"AAA": approx(650.0), "BBB": approx(100.0)}

    # Bar 4: no fills, no mark for AAA: the last mark (56) is kept and flagged, nothing moves
    book, row, per = bar_pnl(book, fills(), {}, start_of_day_equity=100_695.0)
    assert (row["portfolio_value"], row["stale_marks"], row["pnl"], row["daily_return"]) == (
        approx(100_695.0), 1, 0.0, 0.0)
    assert per["mark_stale"].tolist() == [True]


def test_pnl_refuses_bad_fills_and_missing_marks():
    book = PnlBook.start(CASH)
    with pytest.raises(ValueError, match="repeated fill_id"):
        apply_fills(book, fills(("f1", "AAA", "BUY", 1, 10.0, 0.0, 1), ("f1", "AAA", "BUY", 1, 10.0, 0.0, 1)))
    with pytest.raises(ValueError, match="finite positive"):
        apply_fills(book, fills(("f1", "AAA", "BUY", 1, math.nan, 0.0, 1)))
    with pytest.raises(ValueError, match="unknown side"):
        apply_fills(book, fills(("f1", "AAA", "HOLD", 1, 10.0, 0.0, 1)))
    held = PnlBook(CASH, pd.DataFrame({"quantity": [5.0], "avg_cost": [10.0], "mark": [math.nan]}, index=["X"]))
    with pytest.raises(ValueError, match="no mark"):
        bar_pnl(held, fills(), {}, start_of_day_equity=CASH)


def test_reconcile_tolerance_and_table():
    expected = {"A": 100.0, "B": -50.0}
    broker = {"A": 100.0, "B": -40.0, "C": 10.0}
    strict = reconcile(expected, broker, tolerance=0.0)
    assert strict.mismatch and strict.n_mismatched == 2
    assert strict.table.to_dict("list") == {"symbol": ["A", "B", "C"], "expected": [100.0, -50.0, 0.0],
                                            "broker": [100.0, -40.0, 10.0], "difference": [0.0, 10.0, 10.0],
                                            "mismatch": [False, True, True]}
    assert not reconcile(expected, broker, tolerance=10.0).mismatch
    assert reconcile({}, {}).table.empty and not reconcile({}, {}).mismatch
    assert reconcile({"A": math.nan}, {"A": 1.0}, tolerance=5.0).mismatch       # NaN is never "close enough"


def test_expected_positions_count_each_fill_once():
    rows = [{"fill_id": "x", "symbol": "A", "side": "BUY", "quantity": 10.0, "seq": 1},
            {"fill_id": "y", "symbol": "A", "side": "SELL", "quantity": 4.0, "seq": 2},
            {"fill_id": "z", "symbol": "B", "side": "SELL", "quantity": 3.0, "seq": 3}]
    recorded = merge_fills(fills_frame(rows[:2]), fills_frame(rows))     # x, y reported twice
    assert recorded["fill_id"].tolist() == ["x", "y", "z"]
    assert expected_positions(recorded).to_dict() == {"A": 6.0, "B": -3.0}
    assert expected_positions(fills_frame([])).empty


def test_fractional_residue_is_rounded_away_in_every_book():
    """Issue 11 §9: 0.1 + 0.2 − 0.3 is 5.55e-17 in binary: the expected book, the reconciliation and the P&L
    book all round to broker.qty_decimals, so it is flat (no exit for 5.55e-17 shares); ten fills of 0.1 are
    1.0, not 0.9999999999999999, and reconcile against a broker's 1.0 with a tolerance of 0."""
    rows = [{"fill_id": f"f{i}", "symbol": "A", "side": s, "quantity": q, "price": 10.0, "fee": 0.0, "seq": i}
            for i, (s, q) in enumerate([("BUY", 0.1), ("BUY", 0.2), ("SELL", 0.3)])]
    assert 0.1 + 0.2 - 0.3 != 0.0 and expected_positions(fills_frame(rows)).empty
    # a broker reporting the residue: the book holds nothing, so no exit is sized for 5.55e-17 shares
    book_in = book_tables(pd.Series({"A": 0.1 + 0.2 - 0.3}), pd.Series({"A": 10.0}), CASH, pd.Series(dtype=float),
                          "paper:live")
    assert book_in["positions"].empty and not book_in["positions_account"]["mismatch"].iloc[0]
    book, _, per = bar_pnl(PnlBook.start(CASH), fills_frame(rows), {"A": 10.0}, start_of_day_equity=CASH)
    assert book.positions.empty and per["quantity"].tolist() == [0.0]
    tens = fills_frame([{"fill_id": f"t{i}", "symbol": "A", "side": "BUY", "quantity": 0.1, "price": 10.0,
                         "fee": 0.0, "seq": i} for i in range(10)])
    assert sum([0.1] * 10) != 1.0 and expected_positions(tens).to_dict() == {"A": 1.0}
    assert not reconcile(expected_positions(tens), {"A": 0.9999999999999999}, tolerance=0.0).mismatch
    assert reconcile(expected_positions(tens), {"A": 1.000002}, tolerance=0.0).mismatch   # a real difference


def test_fills_the_broker_reports_are_classified_by_what_lineage_knows():
    ts = pd.Timestamp("2025-06-03T14:05Z")
    incoming = fills_frame([
        {"fill_id": "a", "client_order_id": "sent", "symbol": "A", "side": "BUY", "quantity": 1.0, "price": 10.0,
         "fee": 0.0, "ts": ts, "seq": 1},
        {"fill_id": "b", "client_order_id": "sent-earlier", "symbol": "A", "side": "BUY", "quantity": 1.0,
         "price": 10.0, "fee": 0.0, "ts": ts - pd.Timedelta(minutes=2), "seq": 2},
        {"fill_id": "c", "client_order_id": "intent", "symbol": "B", "side": "SELL", "quantity": 2.0,
         "price": 20.0, "fee": 0.0, "ts": ts, "seq": 3},
        {"fill_id": "d", "client_order_id": "by-hand", "symbol": "C", "side": "BUY", "quantity": 3.0, "price": 5.0,
         "fee": 0.0, "ts": ts, "seq": 4},
        {"fill_id": "e", "client_order_id": "sent", "symbol": "A", "side": "BUY", "quantity": 1.0, "price": 10.0,
         "fee": 0.0, "ts": ts, "seq": 5}])
    orders = pd.DataFrame({"client_order_id": ["sent", "sent-earlier", "intent"], "sent": [True, True, False],
                           "decision_price": [9.5, 9.8, 21.0]})
    own, foreign = classify_fills(incoming, {"e"}, orders, ts)          # "e" is already recorded
    assert own[["fill_id", "source", "decision_price"]].values.tolist() == [
        ["a", "settled", 9.5], ["b", "broker", 9.8], ["c", "recovered", 21.0]]
    assert foreign["fill_id"].tolist() == ["d"]
    # slippage vs the decision: BUY 10 vs 9.5 → +526.3 bps; SELL 20 vs 21 → +476.2 bps (worse for both)
    assert slippage_bps(own).tolist() == pytest.approx([0.5 / 9.5 * 1e4, 0.2 / 9.8 * 1e4, 1.0 / 21.0 * 1e4])


def test_slippage_against_the_decision_price_by_hand():
    # BUY 100 @ 50.10 decided at 50.00 → 10 $; SELL 50 @ 19.90 decided at 20.00 → 5 $; decided 5 000 + 1 000
    f = fills(("f1", "AAA", "BUY", 100, 50.10, 0.0, 1), ("f2", "BBB", "SELL", 50, 19.90, 0.0, 2)).assign(
        decision_price=[50.0, 20.0])
    _, row, _ = bar_pnl(PnlBook.start(CASH), f, {"AAA": 50.0, "BBB": 20.0}, start_of_day_equity=CASH)
    assert row["slippage"] == approx(15.0) and row["decided_notional"] == approx(6_000.0)
    assert row["slippage_bps"] == pytest.approx(15.0 / 6_000.0 * 1e4)


def test_the_pnl_book_starts_from_the_broker_without_a_previous_book():
    positions = {"positions": pd.DataFrame({"symbol": ["A", "B", "C"], "qty": [10.0, -5.0, 0.0],
                                            "price": [12.0, 30.0, 7.0], "cost_basis": [11.0, math.nan, math.nan]}),
                 "positions_account": pd.DataFrame([{"cash": 900.0, "portfolio_value": 900.0 + 120.0 - 150.0}])}
    book, sod, session, applied, source = start_of_bar(None, positions, None, fills())
    assert (source, sod, session, book.cash, book.value) == ("broker", None, None, 900.0, 870.0)
    # A at its cost basis; B has none reported: based at its mark, so its unrealised P&L starts at 0
    assert book.positions.to_dict("index") == {"A": {"quantity": 10.0, "avg_cost": 11.0, "mark": 12.0},
                                               "B": {"quantity": -5.0, "avg_cost": 30.0, "mark": 30.0}}
    _, row, _ = bar_pnl(book, applied, {"A": 12.0, "B": 30.0}, start_of_day_equity=870.0)
    assert (row["portfolio_value"], row["unrealised_pnl"], row["realised_pnl_cum"]) == (870.0, 10.0, 0.0)
    previous = (PnlBook.start(CASH), CASH, "2025-06-02")
    assert start_of_bar(previous, positions, fills(), None)[4] == "lineage"
