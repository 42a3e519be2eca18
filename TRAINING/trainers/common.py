"""What every trainer shares: the time split with its embargo, the validation metrics, the trained result.

Split (SPEC §5): by session in time order — the last ``training.validation_share`` of the window's sessions
validate, the earlier ones train — and an embargo of the longest horizon in bars (over ``horizons.minutes``
and ``barrier.horizon_minutes``) removes the last training bars before the first validation bar, so no
training label's window can reach into the validation period even if labels were allowed to cross sessions.

Metrics (validation bars only):
- IC: mean over bars of the cross-sectional Spearman correlation of prediction vs realised forward return
  (bars with fewer than ``training.ic_min_symbols`` finite pairs are skipped);
- calibration slope: pooled OLS slope, with intercept, of the model's target (the cross-sectionally
  demeaned realised forward return; for barrier models the 0/1 label) on the raw prediction; 1 means the
  prediction is on the scale of the return it forecasts;
- AUC (barrier models): the Mann–Whitney probability that a positive outranks a negative.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from CONFIG.config_loader import get_cfg
from TRAINING.dataset import TrainingDataError
from TRAINING.labels import horizon_bars


@dataclass(frozen=True)
class Split:
    """Boolean (B,) masks of training and validation bars, and what separates them."""

    train: np.ndarray
    valid: np.ndarray
    embargo_bars: int
    train_sessions: tuple[dt.date, dt.date]
    valid_sessions: tuple[dt.date, dt.date]


@dataclass
class TrainedModel:
    """A fitted model as the bytes of its file, plus what the registry metadata needs."""

    model_bytes: bytes
    model_file: str
    kind: str                      # tabular | sequential
    T: int
    metrics: dict[str, Any]        # validation_ic, calibration_slope, … (finite or None)
    extra_meta: dict[str, Any] = field(default_factory=dict)
    valid_pred: np.ndarray | None = None  # (B, N) predictions on validation bars, NaN elsewhere


def longest_horizon_bars() -> int:
    """The embargo: the longest label horizon in bars (returns and barrier)."""
    minutes = list(get_cfg("horizons.minutes")) + [get_cfg("barrier.horizon_minutes")]
    return max(horizon_bars(m) for m in minutes)


def time_split(sessions: np.ndarray, validation_share: float | None = None,
               embargo_bars: int | None = None) -> Split:
    """Train on the earlier sessions, validate on the last share, with an embargo between them."""
    share = float(validation_share if validation_share is not None else get_cfg("training.validation_share"))
    embargo = int(embargo_bars if embargo_bars is not None else longest_horizon_bars())
    days = sorted(set(np.asarray(sessions).tolist()))
    n_valid = max(1, int(round(share * len(days))))
    if len(days) - n_valid < 1:
        raise TrainingDataError(f"{len(days)} session(s) cannot be split into training and validation "
                                f"(validation_share={share}); use more training.train_sessions")
    first_valid = days[-n_valid]
    valid = np.array([d >= first_valid for d in sessions], dtype=bool)
    start = int(np.argmax(valid))
    train = ~valid
    train[max(0, start - embargo):start] = False
    if not train.any():
        raise TrainingDataError(f"no training bar left before {first_valid} after an embargo of {embargo} bars")
    train_days = sorted({d for d, t in zip(sessions, train, strict=True) if t})
    return Split(train, valid, embargo, (train_days[0], train_days[-1]), (first_valid, days[-1]))


def finite_or_none(x: float) -> float | None:
    """Metadata is canonical JSON without NaN: a metric that could not be measured is ``None``."""
    return float(x) if x is not None and np.isfinite(x) else None


def cross_sectional_ic(pred: np.ndarray, realised: np.ndarray, min_symbols: int | None = None) -> float:
    """Mean over bars of the Spearman correlation across symbols (NaN when no bar qualifies)."""
    need = int(min_symbols if min_symbols is not None else get_cfg("training.ic_min_symbols"))
    ok = np.isfinite(pred) & np.isfinite(realised)
    keep = ok.sum(axis=1) >= need
    if not keep.any():
        return float("nan")
    p = np.where(ok, pred, np.nan)[keep]
    r = np.where(ok, realised, np.nan)[keep]
    rp = rankdata(p, axis=1, nan_policy="omit")
    rr = rankdata(r, axis=1, nan_policy="omit")
    rp = rp - np.nanmean(rp, axis=1, keepdims=True)
    rr = rr - np.nanmean(rr, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nansum(rp * rr, axis=1) / np.sqrt(np.nansum(rp**2, axis=1) * np.nansum(rr**2, axis=1))
    return float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")


def ic_undefined_reason(pred: np.ndarray, realised: np.ndarray, min_symbols: int | None = None) -> str:
    """Why :func:`cross_sectional_ic` is NaN on these arrays ("" when it is defined), in words a person can act
    on: no labelled validation bar, too few names per bar for ``training.ic_min_symbols``, or constant values."""
    need = int(min_symbols if min_symbols is not None else get_cfg("training.ic_min_symbols"))
    if np.isfinite(cross_sectional_ic(pred, realised, need)):
        return ""
    labelled = np.isfinite(realised)
    if not labelled.any():
        return "no validation bar has a label (the horizon reaches past every validation session's close)"
    pairs = (np.isfinite(pred) & labelled).sum(axis=1)
    if pairs.max(initial=0) < need:
        return (f"at most {int(pairs.max(initial=0))} names have both a label and a prediction on a validation bar, "
                f"fewer than training.ic_min_symbols={need} (a universe of {pred.shape[1]} names)")
    return "predictions or labels are constant across names on every validation bar with enough names"


def ic_metrics(pred: np.ndarray, realised: np.ndarray) -> dict[str, Any]:
    """``validation_ic`` (None when undefined) and ``validation_ic_note``: why it is undefined ("" otherwise)."""
    return {"validation_ic": finite_or_none(cross_sectional_ic(pred, realised)),
            "validation_ic_note": ic_undefined_reason(pred, realised)}


def calibration_slope(pred: np.ndarray, target: np.ndarray) -> float:
    """Pooled OLS slope (with intercept) of the target on the prediction over finite pairs."""
    ok = np.isfinite(pred) & np.isfinite(target)
    x, y = pred[ok], target[ok]
    if x.size < 2:
        return float("nan")
    xc = x - x.mean()
    var = float(np.dot(xc, xc))
    return float(np.dot(xc, y - y.mean()) / var) if var > 0 else float("nan")


def auc(prob: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve over finite pairs (ties count one half); NaN with one class only."""
    ok = np.isfinite(prob) & np.isfinite(label)
    p, y = prob[ok], label[ok] > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def row_masks(X: np.ndarray, y: np.ndarray, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(B, N) masks of usable training and validation rows: finite target and all features finite."""
    usable = np.isfinite(y) & np.isfinite(X).all(axis=2)
    train, valid = usable & split.train[:, None], usable & split.valid[:, None]
    if not train.any():
        raise TrainingDataError("no training row with a finite target and finite features "
                                "(empty or all-NaN training window)")
    if not valid.any():
        raise TrainingDataError("no validation row with a finite target and finite features "
                                "(empty or all-NaN validation window)")
    return train, valid


def threads() -> int:
    return int(get_cfg("training.threads"))
