"""TRAINING reads the same adjusted history as the engine: a 2:1 split with its adjustments entry leaves every
feature and label as they were without the split (issue 10: a −0.69 one-bar return and a σ ×45)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from CONFIG.config_loader import use_config
from resources.market.files import FilesSource
from resources.market.simulator import MarketSimulator
from TRAINING.dataset import build_dataset
from TRAINING.labels import forward_returns

SPLIT = "2025-05-27"


def write(d, frame):
    d.mkdir()
    for sym, g in frame.groupby("symbol"):
        g.drop(columns="symbol").assign(ts=g["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(d / f"{sym}.csv",
                                                                                              index=False)
    return d


def test_split_with_an_entry_changes_no_feature_and_no_label(tmp_path):
    sim = MarketSimulator()
    frame = pd.concat([sim.session_frame(d) for d in sim.cal.sessions("2025-05-15", "2025-05-29")])
    frame = frame[frame["symbol"].isin(sim.symbols[:6])].reset_index(drop=True)
    split = frame.copy()
    after = (split["symbol"] == "S001") & (split["ts"] >= pd.Timestamp(f"{SPLIT} 13:30", tz="UTC"))
    split.loc[after, ["open", "high", "low", "close", "bid", "ask"]] /= 2
    split.loc[after, "volume"] *= 2
    adj = tmp_path / "adj.csv"
    adj.write_text(f"symbol,effective_date,split_ratio,cash_dividend\nS001,{SPLIT},2,0\n")
    with use_config({"training": {"train_sessions": 3, "train_end": "2025-05-30"}}):
        plain = build_dataset(source=FilesSource(write(tmp_path / "plain", frame)))
        adjusted = build_dataset(source=FilesSource(write(tmp_path / "split", split), adjustments=str(adj)))
        raw = build_dataset(source=FilesSource(write(tmp_path / "raw", split), adjustments=""))
    np.testing.assert_allclose(adjusted.X, plain.X, rtol=1e-9, atol=1e-12, equal_nan=True)
    for h in (1, 12):
        np.testing.assert_allclose(forward_returns(adjusted.panel["close"], adjusted.session_id, h),
                                   forward_returns(plain.panel["close"], plain.session_id, h), atol=1e-12)
    # unadjusted, the split is no bar return (intraday returns only) but it is the session's overnight gap
    names = list(raw.feature_names)
    gap = raw.X[:, 0, names.index("overnight")]
    assert np.nanmin(gap) < -0.6 and np.nanmin(adjusted.X[:, 0, names.index("overnight")]) > -0.1
