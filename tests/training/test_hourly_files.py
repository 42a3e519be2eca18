"""Training on hourly vendor files (issue 10: clock-aligned hourly bars, 10:00 … 16:00, were all skipped on the
old 10:30 … 15:30 grid, after which training said "no bars in the training window")."""

from __future__ import annotations

import pandas as pd

from CONFIG.config_loader import reset_config, use_config
from resources.market.calendar import get_calendar
from resources.market.simulator import MarketSimulator
from TRAINING.testing import small_training_overrides

HOURLY = {"market": {"bar_minutes": 60, "history_bars": 30},
          "horizons": {"minutes": [60, 120]}, "barrier": {"horizon_minutes": 60},
          "features": {"return_lookbacks": [1, 2, 3], "vol_windows": [3, 6], "volume_window": 5, "range_window": 2,
                       "ewma_halflife_bars": 3, "ewma_window_bars": 6},
          "training": {"sequential": {"window": 4}}}


def test_training_and_a_bar_on_hourly_vendor_files(tmp_path):
    over = small_training_overrides(n_symbols=8, sessions=20)
    over["training"].update(HOURLY["training"])
    with use_config({**over, **{k: v for k, v in HOURLY.items() if k != "training"}}):
        sim = MarketSimulator()
        days = sim.cal.sessions("2025-04-01", "2025-06-03")
        frame = pd.concat([sim.session_frame(d) for d in days], ignore_index=True)
        local = frame["ts"].dt.tz_convert("America/New_York").dt.strftime("%H:%M")
        assert sorted(local.unique()) == ["10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00"]
        d = tmp_path / "hourly"
        d.mkdir()
        for sym, g in frame.groupby("symbol"):  # as a vendor writes them: New York wall time, bar close
            g.drop(columns="symbol").assign(ts=g["ts"].dt.tz_convert("America/New_York").dt.strftime(
                "%Y-%m-%d %H:%M:%S")).to_csv(d / f"{sym}.csv", index=False)
    files = {"market": {"source": "files", "files_dir": str(d), "files_timezone": "America/New_York"},
             "paths": {"registry": str(tmp_path / "registry")}}
    over["market"] = {**HOURLY["market"], **files["market"]}
    with use_config({**over, **{k: v for k, v in HOURLY.items() if k not in ("training", "market")},
                     "paths": files["paths"]}):
        from resources.market.sources import make_source
        from TRAINING.train import train_all

        src = make_source()
        assert src.skips.empty and all(x.verdict == "ok" for x in src.diagnoses)
        summary = train_all(progress=False, force=True)
        assert {r["target"] for r in summary.rows} == {"ret_60m", "ret_120m", "peak_60m", "valley_60m"}
        assert summary.window["n_sessions"] == 20 and len(summary.rows) == 6
        from dagster_project.commands.replay import ReplayEngine

        bars = [k.strftime("%Y-%m-%dT%H:%MZ") for k in get_calendar().session_bars("2025-06-03")]
        assert len(bars) == 7
        out = ReplayEngine(record=False).run(bars)
        assert out.bars == bars
    reset_config()
