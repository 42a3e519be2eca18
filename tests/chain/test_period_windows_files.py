"""A period's windows from the ``files`` source equal each bar's window alone (issue 12) across what makes
windows differ: an adjustment taking effect inside the batch (a 2:1 split with an adjustments entry), a split
without one (a hold), and a bad row the source skipped."""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.features.logic import features_for_window, features_for_windows
from CONFIG.config_loader import reset_config
from resources.market.calendar import bar_keys, get_calendar
from resources.market.resource import MarketDataResource
from tests.chain.test_data_faults_replay import sim_bars, write_files  # noqa: F401 (fixture)
from tests.unit.test_period_batches import _same_window

SPLIT_DAY = "2025-06-03"


def _split(frame: pd.DataFrame, sym: str) -> pd.DataFrame:
    after = (frame["symbol"] == sym) & (frame["ts"] >= pd.Timestamp(f"{SPLIT_DAY} 13:30", tz="UTC"))
    for col in ("open", "high", "low", "close", "bid", "ask"):
        frame.loc[after, col] /= 2.0
    frame.loc[after, "volume"] *= 2.0
    return frame


def test_files_period_windows_equal_each_window_alone(sim_bars, tmp_path, monkeypatch):  # noqa: F811
    frame = _split(_split(sim_bars.copy(), "S002"), "S004")
    cal = get_calendar()
    bars = bar_keys(cal.session_bars("2025-06-02")[-10:].append(cal.session_bars(SPLIT_DAY)[:10]))
    bad = (frame["symbol"] == "S005") & (frame["ts"] == pd.Timestamp(bars[12].replace("Z", ""), tz="UTC"))
    frame.loc[bad, "low"] = frame.loc[bad, "high"] * 1.1  # high < low: skipped at load
    adj = tmp_path / "adjustments.csv"
    adj.write_text(f"symbol,effective_date,split_ratio,cash_dividend\nS002,{SPLIT_DAY},2,0\n")
    monkeypatch.setenv("TRADEGRAPH__MARKET__SOURCE", "files")
    monkeypatch.setenv("TRADEGRAPH__MARKET__FILES_DIR", str(write_files(tmp_path / "files", frame)))
    monkeypatch.setenv("TRADEGRAPH__MARKET__ADJUSTMENTS_FILE", str(adj))
    reset_config()
    market = MarketDataResource()
    batch = market.windows(bars)
    alone = [market.window(b) for b in bars]
    for (a, sa), (b, sb) in zip(batch, alone, strict=True):
        _same_window(a, b)
        pd.testing.assert_frame_equal(sa, sb, check_exact=True)
        assert (a.adjustments is None) == (b.adjustments is None)
        if a.adjustments is not None:
            pd.testing.assert_frame_equal(a.adjustments, b.adjustments, check_exact=True)
    feats = features_for_windows([w for w, _ in batch])
    for (frame_b, _), (w, _) in zip(feats, alone, strict=True):
        pd.testing.assert_frame_equal(frame_b, features_for_window(w), check_exact=True)
    # what made the windows differ was there: the entry in effect from the split day, the hold, the skip
    assert batch[9][0].adjustments is None and batch[10][0].adjustments["symbol"].tolist() == ["S002"]
    held = batch[10][0].snapshot.set_index("symbol")["hold_reason"]
    assert held["S004"].startswith("split-like jump") and held["S002"] == ""
    skipped = batch[12][0].skips
    assert "S005" in set(skipped["symbol"]) and np.isnan(batch[12][0].snapshot.set_index("symbol").loc["S005", "close"])
