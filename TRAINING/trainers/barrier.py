"""Barrier family: LightGBM binary classifiers for P(peak) and P(valley) on (N, F) rows.

Labels come from :func:`TRAINING.labels.barrier_labels` (0/1, NaN rows dropped). Metrics on validation:
AUC, the base rate, the cross-sectional IC of the probability vs the label, and the calibration slope of
the label on the probability (1 = well calibrated). Deterministic like the tabular family: byte-identical
``model.txt`` for the same data and configuration.
"""

from __future__ import annotations

import numpy as np

from TRAINING.trainers.common import (
    Split,
    TrainedModel,
    auc,
    calibration_slope,
    finite_or_none,
    ic_metrics,
)
from TRAINING.trainers.tabular import fit_lightgbm


def train_barrier_classifier(X: np.ndarray, label: np.ndarray, split: Split,
                             feature_names: list[str]) -> TrainedModel:
    """Classifier for one barrier label (peak or valley); predictions are probabilities."""
    blob, facts, prob = fit_lightgbm(X, label, split, "barrier_lightgbm", "binary", feature_names)
    valid_label = np.where(split.valid[:, None], label, np.nan)
    metrics = {**ic_metrics(prob, valid_label),
               "calibration_slope": finite_or_none(calibration_slope(prob, valid_label)),
               "validation_auc": finite_or_none(auc(prob, valid_label)),
               "base_rate": finite_or_none(float(np.nanmean(label[split.train]))), **facts}
    return TrainedModel(blob, "model.txt", "tabular", 1, metrics, {}, prob)
