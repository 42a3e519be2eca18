"""Issue 12, stages over a batch of bars: predictions (standardization), model_skill and blended_alpha computed
for B consecutive bars at once give the same frames, bit for bit, as one bar at a time, and as the per-bar
functions they replaced (``signals_reference``); no bar reads a later one.

The bars cross a session close and the next session's open (skill never scores across the close; the open's
windows reach back over the overnight gap) and the history before the batch comes from the bars stepped one by
one before it, as in a replay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import Panel
from assets.blended_alpha.stage import compute_blended_alpha_batch
from assets.features.logic import features_for_windows
from assets.history import MemoryHistory
from assets.model_skill.stage import compute_model_skill_batch
from assets.predictions.models import load_models
from assets.predictions.stage import (
    PreparedBar,
    compute_predictions_batch,
    needs_sequence,
    prepare_predictions,
)
from resources.market.resource import MarketDataResource
from tests.chain import signals_reference as R
from tests.graph_helpers import session_keys

KEYS = session_keys("2025-06-03")[-30:] + session_keys("2025-06-04", 14)   # 44 bars over the close and open
SPLIT = 22                                                                  # bars stepped one by one first
NO_SIZING = pd.DataFrame({"symbol": pd.Series(dtype=object), "raw": pd.Series(dtype=float)})
STAGES = ("predictions", "model_skill", "blended_alpha")


def _inputs(keys):
    models = load_models()
    windows = [w for w, _ in MarketDataResource().windows(keys)]
    feats = features_for_windows(windows, None, needs_sequence(models) or 0)
    frames = [f for f, _ in feats]
    prepared = prepare_predictions(windows, frames, models, None, None, [h for _, h in feats])
    return models, windows, frames, prepared


def _history() -> MemoryHistory:
    return MemoryHistory(200)


def _one_bar(models, window, frame, prepared, history, reference: bool) -> dict[str, dict]:
    if reference:
        p = R.compute_predictions(models, history, window.bar, prepared)
        s = R.compute_model_skill(window, frame, p["predictions"], models, history)
        b = R.compute_blended_alpha(p["predictions"], s["model_skill"], s["model_skill_sigma"], models)
    else:
        p = compute_predictions_batch([window], [frame], models, history, prepared=[prepared])[0]
        s = compute_model_skill_batch([window], [frame], [p["predictions"]], models, history)[0]
        b = compute_blended_alpha_batch([p["predictions"]], [s["model_skill"]], [s["model_skill_sigma"]], models)[0]
    history.add(window.bar, p["predictions"], NO_SIZING)
    return {"predictions": p, "model_skill": s, "blended_alpha": b}


def _batch(models, windows, frames, prepared, history) -> list[dict[str, dict]]:
    p = compute_predictions_batch(windows, frames, models, history, prepared=prepared)
    s = compute_model_skill_batch(windows, frames, [x["predictions"] for x in p], models, history)
    b = compute_blended_alpha_batch([x["predictions"] for x in p], [x["model_skill"] for x in s],
                                    [x["model_skill_sigma"] for x in s], models)
    return [{"predictions": x, "model_skill": y, "blended_alpha": z} for x, y, z in zip(p, s, b, strict=True)]


def _run(models, windows, frames, prepared, batch_from: int | None, reference: bool = False) -> list[dict]:
    """Every bar's signal outputs: bar by bar up to ``batch_from``, then the rest as one batch (None: all
    bar by bar)."""
    history = _history()
    stop = len(windows) if batch_from is None else batch_from
    out = [_one_bar(models, windows[b], frames[b], prepared[b], history, reference) for b in range(stop)]
    if batch_from is not None:
        out += _batch(models, windows[stop:], frames[stop:], prepared[stop:], history)
    return out


def assert_same_bits(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True, obj=what)
    for col in a.columns:
        if a[col].dtype.kind == "f":   # assert_frame_equal takes −0.0 for 0.0: compare the bits too
            assert a[col].to_numpy().tobytes() == b[col].to_numpy().tobytes(), f"{what}.{col}: bits differ"


def assert_same_outputs(x: list[dict], y: list[dict], bars: list[str]) -> None:
    assert len(x) == len(y) == len(bars)
    for bar, one, other in zip(bars, x, y, strict=True):
        for stage in STAGES:
            assert sorted(one[stage]) == sorted(other[stage])
            for table in one[stage]:
                assert_same_bits(one[stage][table], other[stage][table], f"{bar} {table}")


# a symbol missing bars: S003 has no row at one bar of the history and three bars inside the batch, S010 none at
# the next session's open (their features, predictions and returns are NaN there: they drop out of every reference)
MISSING = {"S003": [KEYS[5]] + KEYS[SPLIT + 1:SPLIT + 4], "S010": [session_keys("2025-06-04", 1)[0]]}


@pytest.fixture(scope="module")
def inputs(small_registry_root):
    from CONFIG.config_loader import reset_config
    from resources.market.calendar import parse_bar_key
    from resources.market.sources import SimulatorSource

    original = SimulatorSource.history

    def with_gaps(self, bar, n_bars):
        frame = original(self, bar, n_bars)
        drop = np.zeros(len(frame), dtype=bool)
        for sym, keys in MISSING.items():
            drop |= (frame["symbol"] == sym).to_numpy() & frame["ts"].isin([parse_bar_key(k) for k in keys]).to_numpy()
        return frame[~drop].reset_index(drop=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADEGRAPH__PATHS__REGISTRY", str(small_registry_root))
        mp.setattr(SimulatorSource, "history", with_gaps)
        reset_config()
        yield _inputs(KEYS)
        reset_config()


@pytest.fixture
def batch_inputs(inputs, trained):
    return inputs


HALF_DAY = session_keys("2025-07-03")[-12:] + session_keys("2025-07-07", 6)   # a half day's close (17:00Z), the open


def test_a_batch_over_a_half_days_close_equals_bar_by_bar(trained):
    models, windows, frames, prepared = _inputs(HALF_DAY)
    reference = _run(models, windows, frames, prepared, None, reference=True)
    assert_same_outputs(_run(models, windows, frames, prepared, None), reference, HALF_DAY)
    assert_same_outputs(_run(models, windows, frames, prepared, 4), reference, HALF_DAY)


def test_a_batch_equals_bar_by_bar_and_the_per_bar_functions_bit_for_bit(batch_inputs):
    models, windows, frames, prepared = batch_inputs
    reference = _run(models, windows, frames, prepared, None, reference=True)
    one_by_one = _run(models, windows, frames, prepared, None)
    batched = _run(models, windows, frames, prepared, SPLIT)
    assert_same_outputs(one_by_one, reference, KEYS)
    assert_same_outputs(batched, one_by_one, KEYS)
    for sym, keys in MISSING.items():   # the gaps are there: no bar, no prediction
        for key in keys:
            b = KEYS.index(key)
            assert windows[b].snapshot.set_index("symbol").loc[sym, "status"] == "missing"
            rows = batched[b]["predictions"]["predictions"].query("symbol == @sym")
            assert rows["raw"].isna().all()   # no row, or a row without a prediction
    # the bars say something: skill measured live at every horizon by the batch's end, Σ off the diagonal
    last = batched[-1]["model_skill"]["model_skill"]
    assert len(last) == 10 and (last["n_live"] > 0).all() and last["ic_live"].notna().all()
    assert (batched[-1]["blended_alpha"]["blended_alpha"]["alpha"].notna().mean()) > 0.9
    open_bar = KEYS.index(session_keys("2025-06-04", 1)[0])
    assert open_bar > SPLIT                                              # the session's open is inside the batch
    skill_open = batched[open_bar]["model_skill"]["model_skill"].set_index(["horizon", "family"])
    skill_before = batched[open_bar - 1]["model_skill"]["model_skill"].set_index(["horizon", "family"])
    # at the open no new prediction has been scored (the close's last ones would cross the overnight gap)
    assert (skill_open["n_live"] == skill_before["n_live"]).all()


def test_a_whole_batch_from_the_first_bar_equals_bar_by_bar(batch_inputs):
    models, windows, frames, prepared = batch_inputs
    assert_same_outputs(_run(models, windows, frames, prepared, 0), _run(models, windows, frames, prepared, None),
                        KEYS)


def _with_close(window, panel: Panel, row: int):
    """The window with its period's panel replaced (a later bar's close changed in it)."""
    import copy

    w = copy.copy(window)
    _, own = window.__dict__["_period"]
    lo = own - len(window.times) + 1
    object.__setattr__(w, "_period", (panel, own))
    object.__setattr__(w, "_panel", panel.slice(lo, own + 1))
    return w


def test_a_later_bar_never_moves_an_earlier_one(batch_inputs):
    """Change bar k's models' outputs and its close (in the period panel every window of the batch is a view
    of): bars before k keep every bit, bars after it move (so the change is seen)."""
    models, windows, frames, prepared = batch_inputs
    base = _run(models, windows, frames, prepared, SPLIT)
    k = SPLIT + 4                                                     # mid-session, 4 bars before the close
    panel, own_k = windows[k].__dict__["_period"]
    close = panel["close"].copy()
    close[own_k] *= np.linspace(0.9, 1.1, close.shape[1])          # a different close at bar k, per symbol
    changed = Panel(panel.times, panel.symbols, {**panel.fields, "close": close})
    windows2 = [_with_close(w, changed, 0) for w in windows]
    prepared2 = list(prepared)
    outputs = {key: -v[::-1].copy() for key, v in prepared[k].outputs.items()}   # other predictions at bar k
    prepared2[k] = PreparedBar(prepared[k].inputs, outputs)
    moved = _run(models, windows2, frames, prepared2, SPLIT)
    assert_same_outputs(moved[:k], base[:k], KEYS[:k])
    for stage, table in (("predictions", "predictions"), ("model_skill", "model_skill"),
                         ("blended_alpha", "blended_alpha")):
        assert not moved[k + 2][stage][table].equals(base[k + 2][stage][table]), (stage, table)
