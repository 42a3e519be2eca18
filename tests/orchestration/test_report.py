"""The period report works when nothing filled (issue 10: it crashed on the missing ``pnl_symbols`` table)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from assets.pnl.logic import PnlBook
from assets.pnl.stage import compute_pnl
from assets.positions.stage import empty_taken
from dagster_project.commands.report import summary, write_report
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
