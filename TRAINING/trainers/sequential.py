"""Sequential family: a small PyTorch GRU per horizon on windows (N, T, F) of the same features.

Why a GRU (not a TCN): with T = ``training.sequential.window`` bars of 16 features a one-layer GRU is a few
thousand parameters, trains in seconds on two CPU threads and reads the whole window through its state;
a TCN would need dilations sized to T to see as far. The model carries its own input standardization
(training means/scales, clipped to ±``input_clip``) and target scale as buffers, so ``model.pt`` plus the
architecture in the metadata is all a prediction needs.

Rows: a (bar, symbol) whose window (the T bars ending at it, crossing sessions as the live buffer does)
holds any non-finite feature is skipped in training and gets NaN at prediction. Training rows are a seeded
subsample of at most ``max_train_rows`` (the time budget); early stopping watches the validation MSE on at
most ``max_valid_rows`` rows and keeps the best epoch. Target: the demeaned forward return (as the tabular
family), divided by its training standard deviation for the loss.

Determinism: ``torch.manual_seed``, a seeded generator for shuffling, ``use_deterministic_algorithms(True)``
and a fixed thread count; training twice gives byte-identical ``model.pt`` (tested).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from CONFIG.config_loader import get_cfg
from TRAINING.trainers.common import (
    Split,
    TrainedModel,
    calibration_slope,
    finite_or_none,
    ic_metrics,
    row_masks,
    threads,
)


class GRURegressor(nn.Module):
    """Standardize → GRU → linear head on the last state; ``forward`` is in target-scale units."""

    def __init__(self, n_features: int, hidden: int, input_clip: float):
        super().__init__()
        self.input_clip = float(input_clip)
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_scale", torch.ones(n_features))
        self.register_buffer("y_scale", torch.ones(()))
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.x_mean) / self.x_scale).clamp(-self.input_clip, self.input_clip)
        out, _ = self.gru(z)
        return self.head(out[:, -1]).squeeze(-1)


def build_model(architecture: dict[str, Any]) -> GRURegressor:
    """The module described by a registry ``architecture`` record."""
    if architecture.get("type") != "gru":
        raise ValueError(f"unknown sequential architecture type {architecture.get('type')!r}")
    return GRURegressor(int(architecture["n_features"]), int(architecture["hidden"]),
                        float(architecture["input_clip"]))


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """A fixed intra-op thread count for the duration (reductions may split differently with another)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextmanager
def torch_determinism(seed: int, n_threads: int) -> Iterator[None]:
    """Seeded, deterministic, fixed-thread torch for the duration; process settings restored after."""
    saved = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        with torch_threads(n_threads):
            yield
    finally:
        torch.use_deterministic_algorithms(saved)


def window_ok(X: np.ndarray, T: int) -> np.ndarray:
    """(B, N) bool: the T bars ending at b exist and all their features are finite."""
    bad = (~np.isfinite(X).all(axis=2)).astype(np.int64)
    csum = np.concatenate([np.zeros((1, bad.shape[1]), dtype=np.int64), np.cumsum(bad, axis=0)])
    ok = np.zeros(bad.shape, dtype=bool)
    if len(bad) >= T:
        ok[T - 1:] = (csum[T:] - csum[:-T]) == 0
    return ok


def gather_windows(X: np.ndarray, bars: np.ndarray, syms: np.ndarray, T: int) -> np.ndarray:
    """(R, T, F) float32 windows ending at the given (bar, symbol) rows."""
    offsets = np.arange(-T + 1, 1)
    return X[bars[:, None] + offsets[None, :], syms[:, None]].astype(np.float32)


def predict_windows(model: GRURegressor, windows: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Predicted returns for (R, T, F) windows; NaN for a window holding a non-finite value.

    Runs on ``training.threads`` threads in batches of ``batch_size``, so the same rows give the same bits
    in training, live prediction and audit."""
    bs = int(batch_size if batch_size is not None else get_cfg("training.sequential.batch_size"))
    w = np.asarray(windows, dtype=np.float32)
    out = np.full(len(w), np.nan)
    ok = np.isfinite(w).all(axis=(1, 2))
    rows = np.nonzero(ok)[0]
    model.eval()
    with torch.no_grad(), torch_threads(threads()):
        for i in range(0, len(rows), bs):
            idx = rows[i:i + bs]
            y = model(torch.from_numpy(w[idx])) * model.y_scale
            out[idx] = y.double().numpy()
    return out


def _subsample(mask: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    bars, syms = np.nonzero(mask)
    if len(bars) > cap:
        keep = np.sort(rng.choice(len(bars), cap, replace=False))
        bars, syms = bars[keep], syms[keep]
    return bars, syms


def train_sequential(X: np.ndarray, target: np.ndarray, realised: np.ndarray, split: Split,
                     feature_names: list[str]) -> TrainedModel:
    """Fit one GRU for one horizon; IC against the realised forward return on validation bars."""
    cfg = get_cfg("training.sequential")
    T, seed = int(cfg["window"]), int(get_cfg("training.seed"))
    ok = window_ok(X, T)
    train, valid = row_masks(X, np.where(ok, target, np.nan), split)
    rng = np.random.default_rng(seed)
    tb, ts = _subsample(train, int(cfg["max_train_rows"]), rng)
    vb, vs = _subsample(valid, int(cfg["max_valid_rows"]), rng)
    xt, xv = gather_windows(X, tb, ts, T), gather_windows(X, vb, vs, T)
    arch = {"type": "gru", "n_features": len(feature_names), "hidden": int(cfg["hidden"]),
            "input_clip": float(cfg["input_clip"])}
    with torch_determinism(seed, threads()):
        model = build_model(arch)
        last = xt[:, -1, :].astype(np.float64)
        scale = last.std(axis=0)
        y_scale = float(target[tb, ts].std()) or 1.0
        model.x_mean.copy_(torch.from_numpy(last.mean(axis=0)).float())
        model.x_scale.copy_(torch.from_numpy(np.where(scale > 0, scale, 1.0)).float())
        model.y_scale.fill_(y_scale)
        yt = torch.from_numpy((target[tb, ts] / y_scale).astype(np.float32))
        yv = torch.from_numpy((target[vb, vs] / y_scale).astype(np.float32))
        epochs_run = _fit(model, torch.from_numpy(xt), yt, torch.from_numpy(xv), yv, cfg, seed)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        rows = split.valid[:, None] & ok
        b_all, s_all = np.nonzero(rows)
        pred = np.full(target.shape, np.nan)
        pred[b_all, s_all] = predict_windows(model, gather_windows(X, b_all, s_all, T), int(cfg["batch_size"]))
    metrics = {**ic_metrics(pred, realised),
               "calibration_slope": finite_or_none(calibration_slope(pred, target)),
               "validation_pred_std": finite_or_none(float(np.nanstd(pred))),
               "epochs_run": epochs_run, "train_rows": int(len(tb)), "validation_rows": int(len(vb))}
    return TrainedModel(buf.getvalue(), "model.pt", "sequential", T, metrics, {"architecture": arch}, pred)


def _fit(model: GRURegressor, xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
         cfg: dict[str, Any], seed: int) -> int:
    """Adam on MSE with early stopping on the validation MSE; leaves the best epoch's weights loaded."""
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["learning_rate"]))
    gen = torch.Generator().manual_seed(seed)
    bs, patience = int(cfg["batch_size"]), int(cfg["patience"])
    best, best_state, stale, epoch = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(1, int(cfg["epochs"]) + 1):  # noqa: B007 (epoch is reported)
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), bs):
            idx = perm[i:i + bs]
            loss = nn.functional.mse_loss(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(nn.functional.mse_loss(model(xv), yv))
        if val < best:
            best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return epoch
