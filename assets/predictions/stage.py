"""The ``predictions`` stage for one bar, pure (no Dagster, DuckDB or broker): shared by the asset and replay."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.features.logic import FeatureParams, feature_history
from assets.history import ChainHistory, Timeline
from assets.predictions.cache import PredictionCache
from assets.predictions.logic import (
    PredictionInputs,
    RawBatch,
    model_outputs,
    predict_barriers,
    predict_returns,
    raw_batch,
)
from assets.predictions.models import ModelSet
from assets.predictions.seq_buffer import REASON_SHORT, SeqBufferManager
from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_keys, get_calendar, parse_bar_key


def previous_bar_keys(bar: str, n: int) -> list[str]:
    """The ``n`` bar keys strictly before ``bar`` (oldest first)."""
    return bar_keys(get_calendar().previous_bars(parse_bar_key(bar), n + 1)[:-1])


def seq_buffer_for(window: BarWindow, T: int) -> SeqBufferManager:
    """Rebuild the sequential buffers of the window's universe from its last T bars."""
    p = FeatureParams.from_cfg()
    panel = window.panel()
    tods = get_calendar().session_fraction(window.times[-T:])
    hist = feature_history(panel, tods, window.snapshot["adv_shares"].to_numpy(dtype=float), p, T)
    return seq_buffer_from(window, hist, p)


def seq_buffer_from(window: BarWindow, hist: np.ndarray, p: FeatureParams | None = None) -> SeqBufferManager:
    """The sequential buffers of the window's universe from the (T, N, F) model features of its last T bars
    (:func:`~assets.features.logic.feature_history`, or the same rows of a period's feature block)."""
    p = p or FeatureParams.from_cfg()
    T = len(hist)
    panel = window.panel()
    has_bar = np.isfinite(panel["close"])
    buf = SeqBufferManager.rebuild(panel.symbols, hist, has_bar[-T:], get_cfg("prediction.seq_gap_tolerance_bars"))
    # A row counts as filled only when the symbol had bars for the row's whole feature lookback: a symbol
    # that entered the window lately (new to the universe) is "buffer not full", not "NaN in buffer".
    first = np.argmax(has_bar, axis=0)
    rows_at = len(window.times) - T + np.arange(T)
    buf.filled = (rows_at[None, :] >= first[:, None] + p.lookback()).sum(axis=1)
    return buf


def std_reference(history: ChainHistory, timeline: Timeline, batch: RawBatch) -> tuple[np.ndarray, np.ndarray]:
    """Each batch bar's standardization reference per group, as (G, L + 1, S) raws on the timeline's axis
    and (B, n) the positions of each bar's ``n`` = ``standardization.window_bars`` previous bars: its
    family's raw predictions of those bars (only the finite values count, as a set: standardization sorts
    them). Earlier batch bars come from ``batch``, bars before the batch from ``history`` (read through
    the prediction grid once for the whole batch)."""
    past = history.prediction_grid(timeline.past)
    symbols = np.union1d(np.asarray(past.symbols, dtype=object), batch.symbols) if len(past.symbols) \
        else batch.symbols
    return timeline.rows(past, batch.grid, "raw", batch.groups, symbols, batch.symbols), timeline.window


def prediction_inputs(features: pd.DataFrame, models: ModelSet, buffer: SeqBufferManager | None) -> PredictionInputs:
    """Model inputs of the bar; a row is valid only if flagged so *and* finite (a stale flag cannot leak NaN)."""
    p = FeatureParams.from_cfg()
    symbols = features["symbol"].to_numpy()
    X = features[p.names].to_numpy(dtype=float)
    valid = features["valid"].to_numpy(bool) & np.isfinite(X).all(axis=1)
    seq_X = seq_ok = seq_reason = None
    if buffer is not None:
        x, ok, reason = buffer.windows()
        if len(buffer.symbols) == len(symbols) and (buffer.symbols == symbols).all():
            seq_X, seq_ok, seq_reason = x, ok, reason.astype(object)  # the same symbols in the same order
        else:  # by name, not position; -1 (a symbol the buffer never saw) picks the appended "not full" row
            pos = pd.Index(buffer.symbols).get_indexer(symbols)
            seq_X = np.concatenate([x, np.full((1,) + x.shape[1:], np.nan)])[pos]
            seq_ok = np.append(ok, False)[pos]
            seq_reason = np.append(reason.astype(object), REASON_SHORT)[pos]
    return PredictionInputs(symbols, X, valid, seq_X, seq_ok, seq_reason)


def needs_sequence(models: ModelSet) -> int | None:
    ts = {m.T for (_, fam), m in models.models.items() if fam == "sequential"}
    if len(ts) > 1:
        raise ValueError(f"sequential models disagree on the window length T: {sorted(ts)}")
    return ts.pop() if ts else None


@dataclass(frozen=True)
class PreparedBar:
    """One bar's model inputs and the models' outputs on them (:func:`prepare_predictions`)."""

    inputs: PredictionInputs
    outputs: dict[tuple[str, str], np.ndarray]


def prepare_predictions(windows: list[BarWindow], features: list[pd.DataFrame], models: ModelSet,
                        cache: PredictionCache | None = None, buffers: list[SeqBufferManager | None] | None = None,
                        histories: list[np.ndarray | None] | None = None) -> list[PreparedBar]:
    """The model inputs and outputs of B bars: every model runs once over all of them
    (:func:`~assets.predictions.logic.model_outputs`). Each bar's sequential windows come from ``buffers``,
    else from ``histories`` (its last T bars' model features, e.g. from
    :func:`~assets.features.logic.features_for_windows`), else are rebuilt from its window."""
    T = needs_sequence(models)
    inputs = []
    for b, (window, frame) in enumerate(zip(windows, features, strict=True)):  # a loop over bars
        buffer = None
        if T is not None:
            buffer = buffers[b] if buffers is not None and buffers[b] is not None else None
            if buffer is None:
                hist = histories[b] if histories is not None else None
                buffer = seq_buffer_from(window, hist) if hist is not None else seq_buffer_for(window, T)
        inputs.append(prediction_inputs(frame, models, buffer))
    return [PreparedBar(i, o) for i, o in zip(inputs, model_outputs(models, inputs, cache), strict=True)]


def compute_predictions_batch(windows: list[BarWindow], features: list[pd.DataFrame], models: ModelSet,
                              history: ChainHistory, cache: PredictionCache | None = None,
                              prepared: list[PreparedBar] | None = None) -> list[dict[str, pd.DataFrame]]:
    """Predictions, barrier probabilities and the models' status of B bars in time order (issue 12: one
    code path for one bar and a batch). ``prepared``: the bars' inputs and model outputs already computed
    (:func:`prepare_predictions`). Each bar is standardized against the raw predictions of the bars before
    it: earlier bars of the batch, else ``history``; never a later bar. Same frames, same bits, whatever
    the batch (``tests/chain/test_signal_batches.py``)."""
    if prepared is None:
        prepared = prepare_predictions(windows, features, models, cache)
    inputs = [p.inputs for p in prepared]
    outputs = [p.outputs for p in prepared]
    batch = raw_batch(models, inputs, outputs)
    timeline = Timeline.of([w.bar for w in windows], get_cfg("standardization.window_bars"))
    preds = predict_returns(models, batch, std_reference(history, timeline, batch))
    barriers = predict_barriers(models, inputs, outputs)
    return [{"predictions": frame, "predictions_barrier": barrier, "predictions_models": models.status.copy()}
            for frame, barrier in zip(preds, barriers, strict=True)]


def compute_predictions(window: BarWindow, features: pd.DataFrame, models: ModelSet, history: ChainHistory,
                        buffer: SeqBufferManager | None = None, cache: PredictionCache | None = None,
                        prepared: PreparedBar | None = None) -> dict[str, pd.DataFrame]:
    """Predictions, barrier probabilities and the models' status for the window's bar: the batch of one
    (:func:`compute_predictions_batch`). ``cache``: model calls served from the inference cache when their
    input was seen before (same output bits); ``buffer``: the bar's sequential buffers."""
    if prepared is None:
        prepared = prepare_predictions([window], [features], models, cache, buffers=[buffer])[0]
    return compute_predictions_batch([window], [features], models, history, prepared=[prepared])[0]
