"""SPEC §4.2 as now written, worked by hand on a 4-symbol window across a session boundary: the live IC never
scores a prediction whose horizon crosses the close, and Σ uses exactly the IC's window (the same bars)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import BarWindow
from assets.history import PRED_HISTORY_COLUMNS, PredictionGrid
from assets.model_skill.stage import compute_model_skill
from CONFIG.config_loader import use_config
from resources.market.calendar import bar_keys, get_calendar, parse_bar_key

SYMBOLS = ["A", "B", "C", "D"]
BAR = "2025-06-03T13:45Z"  # 09:45 New York: the session's third bar
STEP = np.array([0.001, 0.002, 0.003, 0.004])  # per-symbol one-bar move, ranked A < B < C < D


@dataclass
class Stub:
    meta: dict


class Models:
    def get(self, target: str, family: str):
        return Stub({"validation_ic": 0.1})


class History:
    def __init__(self, rows: pd.DataFrame):
        self.rows = rows

    def predictions(self, bars):
        return self.rows[self.rows["bar"].isin(bars)].reset_index(drop=True)

    def prediction_grid(self, bars):
        return PredictionGrid.from_frame(self.predictions(bars), bars)

    def sizing_raw(self, bars):
        return pd.DataFrame({"bar": [], "symbol": [], "raw": []})


def window_and_history():
    """Bars y1…y4 (15:45 … 16:00 of 2025-06-02) then t1…t3 (09:35 … 09:45): inside a session every symbol moves
    +STEP per bar (returns rank A < B < C < D, as the predictions do); overnight (y4 → t1) it moves −5·STEP."""
    times = get_calendar().previous_bars(parse_bar_key(BAR), 7)
    mult = np.array([0, 1, 1, 1, -5, 1, 1])  # the move into each bar
    close = 100 * np.cumprod(1 + mult[:, None] * STEP[None, :], axis=0)
    hist = pd.DataFrame({"ts": np.repeat(times, 4), "symbol": np.tile(SYMBOLS, 7), "close": close.ravel()})
    for col in ("open", "high", "low"):
        hist[col] = hist["close"]
    hist = hist.assign(volume=1e5, bid=hist["close"] * 0.9999, ask=hist["close"] * 1.0001)
    snap = pd.DataFrame({"symbol": SYMBOLS, "status": "ok", "close": close[-1]})
    window = BarWindow(BAR, times, snap, hist)
    keys = bar_keys(times[:-1])  # every earlier bar predicted A < B < C < D at both horizons
    seq_std = {k: np.array([1.0, 2.0, 3.0, 4.0]) for k in keys}
    seq_std[keys[-1]] = np.array([4.0, 3.0, 2.0, 1.0])  # t2: the sequential family disagrees
    rows = [{"bar": k, "symbol": s, "horizon": h, "family": f, "raw": float(i + 1),
             "std": float(i + 1) if f == "lightgbm" else float(seq_std[k][i])}
            for k in keys for i, s in enumerate(SYMBOLS) for h in (5, 10) for f in ("lightgbm", "sequential")]
    return window, History(pd.DataFrame(rows)[PRED_HISTORY_COLUMNS]), keys


def test_ic_never_scores_across_the_close_and_sigma_uses_the_ics_bars():
    with use_config({"horizons": {"minutes": [5, 10]}, "blending": {"ic_window_bars": 3, "ic_prior_bars": 0}}):
        window, history, keys = window_and_history()
        now = pd.DataFrame({"symbol": SYMBOLS * 4, "horizon": [5] * 8 + [10] * 8,
                            "family": (["lightgbm"] * 4 + ["sequential"] * 4) * 2, "raw": 0.001})
        features = pd.DataFrame({"symbol": SYMBOLS, "spread_bps": 0.0})
        out = compute_model_skill(window, features, now, Models(), history)
    skill = out["model_skill"].set_index(["horizon", "family"])
    # 5m (one bar): scoreable past bars y2, y3, t1, t2 (y4 → t1 crosses the close); the window is the last 3:
    # y3, t1, t2, each a perfect rank match: IC = 1. Scoring y4 (rank reversed overnight) would give 1/3.
    assert skill.loc[(5, "lightgbm"), "ic_live"] == 1.0 and skill.loc[(5, "lightgbm"), "n_live"] == 3.0
    # 10m (two bars): y2 → y4 and t1 → t3 stay in their sessions; y3 and y4 cross: IC = 1 over 2 bars
    # (the old window, the last 3 finite, took y3 and y4 at −1 each: −1/3)
    assert skill.loc[(10, "lightgbm"), "ic_live"] == 1.0 and skill.loc[(10, "lightgbm"), "n_live"] == 2.0
    sigma = out["model_skill_sigma"].set_index(["horizon", "family_a", "family_b"])["corr"]
    # Σ at 5m over exactly y3, t1, t2: identical ranks on two bars, reversed on t2 → cov 10 − 5 = 5 of var 15:
    # 1/3 (the old window, one bar older: y2, y3, y4, would have read 1)
    assert sigma.loc[(5, "lightgbm", "sequential")] == pytest.approx(1 / 3, abs=1e-15)
    # Σ at 10m over y2 and t1: both agree → 1
    assert sigma.loc[(10, "lightgbm", "sequential")] == pytest.approx(1.0, abs=1e-15)
    assert keys[-1] == "2025-06-03T13:40Z"
