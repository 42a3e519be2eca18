"""The year benchmark's harness (issue 12): keys, the vectorbt cross-check, resume; its order panel by hand."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from CONFIG.config_loader import resolve_path
from dagster_project.commands import bench_research, bench_vectorbt

HAVE_VECTORBT = importlib.util.find_spec("vectorbt") is not None
NO_VECTORBT = "vectorbt is not installed (the benchmark-only extra: pip install -e '.[bench]')"

BARS = ["2025-06-02T13:35Z", "2025-06-02T13:40Z", "2025-06-02T13:45Z"]


def _fills() -> pd.DataFrame:
    # bar 0: A buys 10 @ 100 (fee 1) and 30 @ 102 (fee 2) → one order +40 @ (1000 + 3060) / 40 = 101.5, fee 3
    # bar 1: B sells 5 @ 50 (fee 0.5); A sells 4 @ 103 (fee 0.25) and buys 2 @ 104 (fee 0.125) → a second row
    return pd.DataFrame({
        "bar": [BARS[0], BARS[0], BARS[1], BARS[1], BARS[1]],
        "symbol": ["A", "A", "B", "A", "A"],
        "side": ["BUY", "BUY", "SELL", "SELL", "BUY"],
        "quantity": [10.0, 30.0, 5.0, 4.0, 2.0],
        "price": [100.0, 102.0, 50.0, 103.0, 104.0],
        "fee": [1.0, 2.0, 0.5, 0.25, 0.125],
        "fill_id": ["f1", "f2", "f3", "f4", "f5"]})


def _closes() -> pd.DataFrame:
    # B has no bar at 13:45 (a halt): its close is carried from 13:40
    return pd.DataFrame({"A": [101.0, 103.5, 105.0], "B": [51.0, 49.0, np.nan]}, index=BARS)


def test_order_panel_by_hand():
    p = bench_vectorbt.order_panel(_fills(), _closes(), BARS)
    assert p.symbols == ["A", "B"] and p.fills == 5 and p.orders == 4
    # rows: bar 0, bar 1 (sells, sign −1 sorts first), bar 1 again (A's buy), bar 2
    nan = np.nan
    np.testing.assert_array_equal(p.size, [[40.0, nan], [-4.0, -5.0], [2.0, nan], [nan, nan]])
    np.testing.assert_array_equal(p.price, [[101.5, 51.0], [103.0, 50.0], [104.0, 49.0], [105.0, 49.0]])
    np.testing.assert_array_equal(p.fees, [[3.0, 0.0], [0.25, 0.5], [0.125, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(p.close, [[101.0, 51.0], [103.5, 49.0], [103.5, 49.0], [105.0, 49.0]])


def test_stepping_seconds_counts_the_stepping_stages_and_refuses_a_missing_one():
    stages = {"bars": 9.0, "predictions": 7.0, "positions": 1.5, "executions": 2.0, "pnl": 0.25, "lineage": 3.0}
    assert bench_vectorbt.stepping_seconds(stages) == 3.75
    with pytest.raises(KeyError, match="pnl"):
        bench_vectorbt.stepping_seconds({"positions": 1.0, "executions": 1.0})


@pytest.mark.skipif(not HAVE_VECTORBT, reason=NO_VECTORBT)
def test_vectorbt_book_by_hand():
    p = bench_vectorbt.order_panel(_fills(), _closes(), BARS)
    out = bench_vectorbt.run_vectorbt(p, init_cash=10_000.0, repeats=1)
    # cash: 10 000 − 40·101.5 − 3 + 4·103 − 0.25 + 5·50 − 0.5 − 2·104 − 0.125 = 6 390.125
    assert out["final_cash"] == pytest.approx(6390.125, abs=1e-9)
    assert out["positions"] == {"A": 38.0, "B": -5.0}
    assert out["final_value"] == pytest.approx(6390.125 + 38 * 105.0 - 5 * 49.0, abs=1e-9)
    assert out["orders_executed"] == 4
    with pytest.raises(bench_vectorbt.CrossCheckFailed, match="cash_vs_venue"):
        bench_vectorbt.cross_check(out, p, 10_000.0, 6390.125, out["final_value"], 6390.0,
                                   {"A": 38.0, "B": -5.0})


def test_keys_only_for_the_year_and_taken_from_the_last_year_run(tmp_path):
    out = {"replay_cold": {"seconds": 50.0}, "replay_warm": {"seconds": 10.0}, "bytes_per_symbol_bar_full": 300.0,
           "sweep_8_warm": {"seconds": 60.0, "whole_period": True}, "vectorbt": {"ratio": 2.5}}
    assert bench_research.keys_of(out, 100, 252) == {
        "replay_year_100_cold_s": 50.0, "replay_year_100_warm_s": 10.0, "sweep_8_warm_s": 60.0,
        "replay_bytes_per_symbol_bar": 300.0, "stepping_vs_vectorbt": 2.5}
    short = bench_research.keys_of(out, 100, 251)
    assert short == {k: None for k in bench_research.KEYS} | {"replay_bytes_per_symbol_bar": 300.0}
    assert bench_research.keys_of(out, 50, 252)["replay_year_100_cold_s"] is None
    partial = dict(out, sweep_8_warm={"seconds": 20.0, "whole_period": False})
    assert bench_research.keys_of(partial, 100, 252)["sweep_8_warm_s"] is None   # swept a shorter period
    year_file = tmp_path / "research_year.json"
    year_file.write_text(json.dumps({"when": "W", "code_version": "git:x",
                                     "keys": bench_research.keys_of(out, 100, 252)}))
    merged = bench_research.keys_with_year({"keys": short}, year_file)
    assert merged["replay_year_100_cold_s"] == 50.0 and merged["replay_bytes_per_symbol_bar"] == 300.0
    assert merged["research_keys_from"]["replay_year_100_cold_s"] == "year run of W (git:x)"
    assert merged["research_keys_from"]["replay_bytes_per_symbol_bar"] == "this run"


def test_a_work_dir_of_another_plan_is_refused(tmp_path):
    bench_research.Phases(tmp_path, {"sessions": 2}, persistent=True).run("x", lambda: {"seconds": 1.0})
    assert bench_research.Phases(tmp_path, {"sessions": 2}, persistent=True).done == {"x": {"seconds": 1.0}}
    with pytest.raises(bench_research.BenchPlanMismatch, match="another plan"):
        bench_research.Phases(tmp_path, {"sessions": 252}, persistent=True)


@pytest.mark.slow
def test_harness_on_two_sessions_of_five_symbols(trained, tmp_path, monkeypatch):
    """2 sessions × 5 symbols taken as "the year": every key written and positive (the sweep not run:
    tests/research/test_sweep.py covers the sweep job), vectorbt's book equal to the replay's, a rerun resumed."""
    monkeypatch.setattr(bench_research, "YEAR_SESSIONS", 2)
    monkeypatch.setattr(bench_research, "YEAR_SYMBOLS", 5)
    work = tmp_path / "work"
    work.mkdir()
    result = bench_research.run(work, trained, symbols=5, sessions=2, sweep=False, summary=False, persistent=True)
    result["when"] = "test"
    bench_research.write_results(result)
    results = json.loads((resolve_path("paths.bench") / "results.json").read_text())
    assert set(bench_research.KEYS) <= set(results)
    assert results["sweep_8_warm_s"] is None                  # not run here
    assert result["bars"] == 156 and result["replay_cold"]["cache_misses"] > 0
    assert result["replay_warm"]["cache_misses"] == 0 and result["replay_warm"]["cache_hits"] > 0
    for key in ("replay_year_100_cold_s", "replay_year_100_warm_s", "replay_bytes_per_symbol_bar"):
        assert results[key] > 0, key
    assert result["replay_warm"]["peak_rss_mb"] > 0 and result["bars_generated"]["rows"] > 0
    assert (resolve_path("paths.bench") / "research_year.json").exists()
    vbt = result["vectorbt"]
    assert vbt["stepping_s"] > 0 and vbt["stepping_stages"] == ["positions", "executions", "pnl"]

    def no_replay(*a, **k):
        raise AssertionError("a finished phase was run again")

    monkeypatch.setattr(bench_research, "replay", no_replay)
    again = bench_research.run(work, trained, symbols=5, sessions=2, sweep=False, summary=False, persistent=True)
    assert again["replay_warm"]["seconds"] == result["replay_warm"]["seconds"]
    if not HAVE_VECTORBT:
        assert "not installed" in vbt["skipped"] and results["stepping_vs_vectorbt"] is None
        pytest.skip(NO_VECTORBT + ": the harness passed, the cross-check was not run")
    check = vbt["check"]
    assert check["orders"] == check["orders_executed"] > 0
    assert abs(check["cash_vs_venue"]) <= check["cash_tolerance"] and check["max_position_diff"] <= 1e-6
    assert results["stepping_vs_vectorbt"] == vbt["ratio"] > 0
