"""The period report works when nothing filled (issue 10: it crashed on the missing ``pnl_symbols`` table)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from assets.pnl.logic import PnlBook
from assets.pnl.stage import compute_pnl
from assets.positions.stage import empty_taken
from dagster_project.commands.performance import benchmark_equity
from dagster_project.commands.report import summarise, summary, write_report
from resources.lineage.store import LineageStore


def test_report_with_no_fill_at_all(tmp_path):
    store = LineageStore(tmp_path / "lineage.duckdb")
    book, sod, prev = PnlBook.start(1_000_000.0), None, None
    bars = ["2025-06-02T13:35Z", "2025-06-02T13:40Z", "2025-06-03T13:35Z"]
    with store.connect() as con:
        for bar in bars:
            session = dt.date.fromisoformat(bar[:10])
            book, out = compute_pnl(empty_taken(), pd.Series(dtype=float), pd.Series(dtype=float), book, sod, prev,
                                    session, "replay")
            sod, prev = float(out["pnl"]["start_of_day_equity"].iloc[0]), session.isoformat()
            for table, frame in out.items():
                store.write_partition(con, table, bar, frame)
    assert "pnl_symbols" not in store.tables()  # nothing held, nothing filled: never created
    stats = summary(store, "replay")
    assert stats["bars"] == 3 and stats["fills"] == 0 and stats["total_return_pct"] == 0.0
    assert stats["hit_rate"] != stats["hit_rate"]  # NaN: no realised trade to count
    report = write_report(store, "replay", tmp_path / "report")
    assert report.exists() and (tmp_path / "report" / "equity_curve.png").exists()


# A small book worked by hand: 2 sessions × 2 bars, starting equity 1,000.
#   portfolio value 1010, 1020 | 1000, 1010; costs (fees + realised cost) 2, 0 | 2, 0 → cumulative 2, 2, 4, 4
#   daily after costs:  1020/1000 - 1 = 0.02,  1010/1020 - 1 = -1/102
#   daily before costs: 1022/1000 - 1 = 0.022, 1014/1022 - 1 = -8/1022
#   benchmark (S1: 10, 11, 12, 12; S2: 20, missing → 20, 18, 22; S3 has no first close: left out)
#   relative 1, 1.05, 1.05, 1.15 → days 0.05, 1.15/1.05 - 1
BARS = ["2025-06-02T13:35Z", "2025-06-02T13:40Z", "2025-06-03T13:35Z", "2025-06-03T13:40Z"]


def _book() -> pd.DataFrame:
    return pd.DataFrame({
        "bar": BARS, "session": ["2025-06-02"] * 2 + ["2025-06-03"] * 2,
        "start_of_day_equity": [1000.0, 1000.0, 1020.0, 1020.0],
        "portfolio_value": [1010.0, 1020.0, 1000.0, 1010.0],
        "fees": [1.0, 0.0, 2.0, 0.0], "realised_cost": [1.0, 0.0, 0.0, 0.0],
        "gross_exposure": [505.0, 510.0, 1000.0, 1010.0], "net_exposure": [505.0, -510.0, 500.0, 0.0],
        "traded_notional": [500.0, 0.0, 1000.0, 0.0], "decided_notional": [400.0, 0.0, 600.0, 0.0],
        "slippage": [0.5, 0.0, 0.7, 0.0], "est_cost": [0.2, 0.0, 0.3, 0.0], "n_fills": [1, 0, 2, 0]})


def _closes() -> pd.DataFrame:
    rows = [(b, "S1", c) for b, c in zip(BARS, [10.0, 11.0, 12.0, 12.0], strict=True)]
    rows += [(b, "S2", c) for b, c in zip(BARS, [20.0, np.nan, 18.0, 22.0], strict=True)]
    rows += [(b, "S3", c) for b, c in zip(BARS, [np.nan, 5.0, 5.0, 9.0], strict=True)]
    return pd.DataFrame(rows, columns=["bar", "symbol", "close"])


def _sharpe_of_two(a: float, b: float) -> float:
    """mean / std(ddof=1) × √252 of two returns: ((a+b)/2) / (|a-b|/√2) × √252."""
    return (a + b) / 2 / (abs(a - b) / math.sqrt(2)) * math.sqrt(252)


def test_report_figures_worked_by_hand():
    stats = summarise(_book(), _closes(), pd.Series([3.0, -1.0, 2.0]), 1, min_sessions=60)
    a, b = 0.02, -1 / 102
    assert stats["days"] == 2 and stats["bars"] == 4 and stats["start_value"] == 1000.0
    assert stats["total_return_pct"] == pytest.approx(1.0)
    assert stats["total_return_before_costs_pct"] == pytest.approx(1.4)
    assert stats["sharpe_annualised"] == pytest.approx(_sharpe_of_two(a, b))
    assert stats["sharpe_annualised"] == pytest.approx(3.8401, abs=1e-4)
    sr_day = _sharpe_of_two(a, b) / math.sqrt(252)
    assert stats["sharpe_standard_error"] == pytest.approx(math.sqrt((1 + sr_day ** 2 / 2) / 2) * math.sqrt(252))
    assert stats["sharpe_before_costs"] == pytest.approx(_sharpe_of_two(0.022, -8 / 1022))
    assert stats["volatility_annualised_pct"] == pytest.approx(abs(a - b) / math.sqrt(2) * math.sqrt(252) * 100)
    assert stats["benchmark_return_pct"] == pytest.approx(15.0)
    assert stats["benchmark_sharpe"] == pytest.approx(_sharpe_of_two(0.05, 1.15 / 1.05 - 1))
    assert stats["max_drawdown_pct"] == pytest.approx((1000 / 1020 - 1) * 100)   # intraday, bar closes
    assert stats["max_daily_drawdown_pct"] == pytest.approx((1010 / 1020 - 1) * 100)
    assert stats["costs"] == 4.0 and stats["costs_bps"] == pytest.approx(4 / 1500 * 1e4)
    assert stats["slippage_vs_decision_bps"] == pytest.approx(1.2 / 1000 * 1e4)
    assert stats["turnover_per_session"] == pytest.approx(1500 / 1010 / 2)
    assert stats["mean_gross_exposure_pct"] == pytest.approx((0.5 + 0.5 + 1.0 + 1.0) / 4 * 100)
    assert stats["max_gross_exposure_pct"] == pytest.approx(100.0)
    assert stats["mean_net_exposure_pct"] == pytest.approx((0.5 - 0.5 + 0.5 + 0.0) / 4 * 100)
    assert stats["hit_rate"] == pytest.approx(2 / 3) and stats["fills"] == 3
    assert stats["kill_switch_transitions"] == 1


def test_short_sample_is_flagged_and_a_long_one_is_not():
    short = summarise(_book(), _closes(), pd.Series([], dtype=float), 0, min_sessions=3)
    assert "only 2 trading days" in short["sample_warning"] and "report.min_sessions = 3" in short["sample_warning"]
    assert summarise(_book(), _closes(), pd.Series([], dtype=float), 0, min_sessions=2)["sample_warning"] == ""


def test_one_day_has_no_sharpe_and_no_closes_no_benchmark():
    stats = summarise(_book().iloc[:2], _closes().iloc[:0], pd.Series([], dtype=float), 0, min_sessions=1)
    assert stats["days"] == 1 and stats["total_return_pct"] == pytest.approx(2.0)
    assert math.isnan(stats["sharpe_annualised"]) and math.isnan(stats["sharpe_standard_error"])
    assert math.isnan(stats["benchmark_return_pct"])


def test_benchmark_equity_per_bar():
    eq = benchmark_equity(_closes())
    assert eq.to_numpy() == pytest.approx([1.0, 1.05, 1.05, 1.15])
    with pytest.raises(ValueError, match="no symbol has a close"):
        benchmark_equity(_closes()[_closes()["symbol"] == "S3"])


def test_written_report_shows_the_warning_on_top(tmp_path):
    store = LineageStore(tmp_path / "lineage.duckdb")
    with store.connect() as con:
        for bar, row in zip(BARS, _book().drop(columns="bar").to_dict("records"), strict=True):
            store.write_partition(con, "pnl", bar, pd.DataFrame([{**row, "account": "replay"}]))
            closes = _closes()
            store.write_partition(con, "bars", bar, closes[closes["bar"] == bar].drop(columns="bar"))
    report = write_report(store, "replay", tmp_path / "report")
    text = report.read_text()
    assert text.splitlines()[2].startswith("> **WARNING: only 2 trading days")
    assert "| benchmark_return_pct | 15.0000 |" in text
    assert all((tmp_path / "report" / n).exists() for n in ("equity_curve.png", "drawdown.png", "daily_returns.png"))
