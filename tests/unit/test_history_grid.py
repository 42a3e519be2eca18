"""The array layouts the skill stage reads history through: they must equal the slow, obvious forms bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.history import MemoryHistory, PredictionGrid
from assets.model_skill.logic import spearman_ic
from assets.model_skill.stage import spearman_rows

FAMILIES = ("lightgbm", "sequential")


def bar_predictions(rng: np.random.Generator, symbols: list[str], horizons=(5, 10)) -> pd.DataFrame:
    rows = [{"symbol": s, "horizon": h, "family": f, "raw": rng.normal(), "std": rng.normal()}
            for s in symbols for h in horizons for f in FAMILIES]
    frame = pd.DataFrame(rows)
    frame.loc[rng.random(len(frame)) < 0.1, "raw"] = np.nan  # some symbols had no prediction
    return frame


def assert_same_grid(a: PredictionGrid, b: PredictionGrid) -> None:
    assert a.keys == b.keys and a.symbols.tolist() == b.symbols.tolist() and sorted(a.groups) == sorted(b.groups)
    for h, f in sorted(a.groups) + [(99, "absent")]:
        for column in ("raw", "std"):
            va, ra = a.select(h, [f], column)
            vb, rb = b.select(h, [f], column)
            np.testing.assert_array_equal(va, vb)  # NaN positions equal too
            np.testing.assert_array_equal(ra, rb)


@pytest.mark.parametrize("same_symbols", [True, False])
def test_memory_grid_equals_the_grid_of_its_rows(same_symbols: bool) -> None:
    rng = np.random.default_rng(7)
    mem = MemoryHistory(keep_bars=10)
    keys = [f"2025-06-02T14:{m:02d}Z" for m in range(0, 30, 5)]
    for i, key in enumerate(keys[:-1]):  # the last key was never added: an all-NaN bar
        symbols = ["A", "B", "C", "D"] if same_symbols or i != 2 else ["A", "C", "E"]
        preds = bar_predictions(rng, symbols).sample(frac=1.0, random_state=i)
        if not same_symbols and i == 3:  # a model missing on one bar: that group has no rows there
            preds = preds[(preds.horizon != 10) | (preds.family != "sequential")]
        mem.add(key, preds, pd.DataFrame({"symbol": symbols, "raw": 0.0}))
    fast = mem.prediction_grid(keys)
    slow = PredictionGrid.from_frame(mem.predictions(keys), keys)
    assert_same_grid(fast, slow)
    assert not fast.has_rows[:, -1].any()
    a_row = mem.predictions(keys[:1]).query("symbol == 'B' and horizon == 10 and family == 'sequential'")
    assert fast.select(10, ["sequential"], "std")[0][0, 0, 1] == a_row["std"].item()


def test_spearman_rows_is_spearman_ic_bit_for_bit_with_and_without_ties() -> None:
    rng = np.random.default_rng(3)
    pred = rng.normal(size=(40, 30))
    real = rng.normal(size=(40, 30))
    pred[::3] = np.round(pred[::3], 1)  # every third row has ties
    real[1::4] = np.round(real[1::4], 1)
    pred[rng.random(pred.shape) < 0.1] = np.nan
    real[5, :28] = np.nan  # a row with fewer than three pairs
    got = spearman_rows(pred, real)
    want = np.array([spearman_ic(p, r) for p, r in zip(pred, real, strict=True)])
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[5]) and np.isfinite(got[0])


@pytest.mark.parametrize("same_symbols", [True, False])
def test_a_bar_with_no_rows_at_all_keeps_the_next_bars_grid_working(same_symbols: bool) -> None:
    """Issue 10: a bar where no symbol had a row (no predictions, no sizing) made the next bar's prediction
    history fail with an IndexError."""
    rng = np.random.default_rng(11)
    mem = MemoryHistory(keep_bars=10)
    keys = ["2025-06-02T14:00Z", "2025-06-02T14:05Z", "2025-06-02T14:10Z"]
    empty = bar_predictions(rng, ["A"]).iloc[0:0]
    mem.add(keys[0], bar_predictions(rng, ["A", "B", "C"]), pd.DataFrame({"symbol": ["A", "B", "C"], "raw": 0.0}))
    mem.add(keys[1], empty, pd.DataFrame({"symbol": pd.Series(dtype=object), "raw": pd.Series(dtype=float)}))
    mem.add(keys[2], bar_predictions(rng, ["A", "B", "C"] if same_symbols else ["A", "D"]),
            pd.DataFrame({"symbol": ["A"], "raw": 0.0}))
    fast = mem.prediction_grid(keys)
    assert_same_grid(fast, PredictionGrid.from_frame(mem.predictions(keys), keys))
    assert not fast.has_rows[:, 1].any() and fast.has_rows[:-1, 0].all()
