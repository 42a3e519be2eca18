"""The compact per-bar prediction state the live path reads equals the state rebuilt from the lineage rows,
bit for bit, across a restart of the process, and is never used once the recorded rows changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.history import LineageHistory, PredictionGrid, state_dir, write_prediction_state
from assets.predictions.stage import previous_bar_keys
from assets.predictions.standardize import reference_center_scale
from resources.lineage.io_manager import record_output
from resources.lineage.store import LineageStore
from tests.unit.test_history_grid import assert_same_grid, bar_predictions

KEYS = [f"2025-06-02T14:{m:02d}Z" for m in range(0, 35, 5)]


def _record(store: LineageStore, bar: str, frame: pd.DataFrame, run_id: str = "r1", keep_state: bool = True) -> None:
    """What the IO manager does for a ``predictions`` output: rows, materialization, then the state file."""
    frame = frame.assign(std_scale=1.0, status="")
    with store.connect() as con:
        hashes, _ = record_output(store, con, run_id, "predictions", bar, {"predictions": frame}, [])
    if keep_state:
        write_prediction_state(store.path, bar, frame, hashes["predictions"])


def std_history(history, bar: str) -> dict[tuple[int, str], np.ndarray]:
    """Each family's raw predictions of the ``standardization.window_bars`` bars before ``bar`` read through the
    prediction grid, as the standardization reads them (``assets.predictions.stage.std_reference``)."""
    from CONFIG.config_loader import get_cfg

    grid = history.prediction_grid(previous_bar_keys(bar, get_cfg("standardization.window_bars")))
    return {g: grid.raw[i][grid.has_rows[i]].ravel() for g, i in sorted(grid.groups.items()) if grid.has_rows[i].any()}


def _from_rows(store: LineageStore, keys: list[str]) -> PredictionGrid:
    return PredictionGrid.from_frame(LineageHistory(store).predictions(keys), keys)


@pytest.fixture
def recorded(tmp_path):
    """Six bars recorded (the symbol set changes on one, a model is missing on another), the 7th never."""
    rng = np.random.default_rng(5)
    store = LineageStore(tmp_path / "lineage.duckdb")
    for i, key in enumerate(KEYS[:-1]):
        symbols = ["A", "B", "C", "D"] if i != 2 else ["A", "C", "E"]
        preds = bar_predictions(rng, symbols).sample(frac=1.0, random_state=i)  # the asset's row order varies
        if i == 3:
            preds = preds[(preds.horizon != 10) | (preds.family != "sequential")]
        _record(store, key, preds, keep_state=i != 1)  # bar 1 has no state file (a run before this code)
    return store


def test_state_equals_rows_and_survives_a_restart(recorded):
    first = LineageHistory(recorded).prediction_grid(KEYS)        # bar 1 rebuilt from rows, then kept
    assert_same_grid(first, _from_rows(recorded, KEYS))
    files = sorted(p.name for p in (state_dir(recorded.path) / "predictions").iterdir())
    assert files == sorted(f"{k}.npz" for k in KEYS[:-1])
    restarted = LineageHistory(LineageStore(recorded.path)).prediction_grid(KEYS)  # a new process: files only
    assert_same_grid(restarted, _from_rows(recorded, KEYS))
    assert not restarted.has_rows[:, -1].any()


def test_state_of_a_rewritten_bar_is_not_used(recorded):
    LineageHistory(recorded).prediction_grid(KEYS)
    rewritten = bar_predictions(np.random.default_rng(99), ["A", "B"])
    _record(recorded, KEYS[2], rewritten, run_id="r2", keep_state=False)  # rows changed, old file left behind
    grid = LineageHistory(recorded).prediction_grid(KEYS)
    assert_same_grid(grid, _from_rows(recorded, KEYS))
    assert "E" not in grid.symbols.tolist()  # E had a row only in the replaced rows (and in the stale file)


def test_standardization_reference_from_the_grid_equals_the_one_from_rows(recorded):
    history = LineageHistory(recorded)
    bar = "2025-06-02T14:30Z"  # its window is every recorded bar before it
    from_grid = std_history(history, bar)
    rows = history.predictions(KEYS[:-1])
    from_rows = {(int(h), str(f)): g["raw"].to_numpy(dtype=float)
                 for (h, f), g in rows.groupby(["horizon", "family"], sort=True)}
    assert sorted(from_grid) == sorted(from_rows)
    now = np.random.default_rng(1).normal(size=9)
    for g in from_rows:
        for min_history in (3, 10_000):  # the history's reference, and the cross-section fallback
            assert reference_center_scale(now, from_grid[g], min_history) == \
                reference_center_scale(now, from_rows[g], min_history)
        np.testing.assert_array_equal(np.sort(from_grid[g][np.isfinite(from_grid[g])]),
                                      np.sort(from_rows[g][np.isfinite(from_rows[g])]))
