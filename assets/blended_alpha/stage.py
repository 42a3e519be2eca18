"""The ``blended_alpha`` stage for one bar, pure: family weights per horizon and α per symbol × horizon.

scale_f maps a standardized score back to an expected return: the family's calibration slope from the
registry (realised return on raw prediction) × the robust scale the standardization used, so
α_f ≈ slope_f · (raw_f − centre_f). Both are recorded with the weights. A slope the trainer could not measure
(``null`` in the metadata: too few names with a label) is NaN: that family's score cannot be mapped to a return,
so it is left out of α (the other families are renormalised; alone, α is NaN: no trade), never a crash.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.blended_alpha.logic import Params, blend, horizon_weights, temperature_for
from assets.predictions.models import ModelSet
from TRAINING.registry import meta_number, return_target

WEIGHT_COLUMNS = ["horizon", "family", "weight", "mu", "reason", "temperature", "calibration_slope", "std_scale",
                  "scale"]


def _first_finite(values: np.ndarray) -> float:
    """The first non-NaN value (what ``groupby().first()`` takes), NaN when there is none."""
    ok = values[~np.isnan(values)]
    return float(ok[0]) if len(ok) else float("nan")


def compute_blended_alpha(predictions: pd.DataFrame, skill: pd.DataFrame, sigma: pd.DataFrame, models: ModelSet,
                          params: Params | None = None) -> dict[str, pd.DataFrame]:
    """Weights per horizon and α per symbol × horizon. Arrays, not pivots: the loop runs over horizons and
    families only, and α of each horizon is the same ``blend`` call on the same (N, F) scores."""
    params = params or Params.from_cfg()
    sym_code, symbols = pd.factorize(predictions["symbol"], sort=True)
    symbols = np.asarray(symbols, dtype=object)
    fam_code, fam_names = pd.factorize(predictions["family"])
    hz = predictions["horizon"].to_numpy()
    std = predictions["std"].to_numpy(dtype=float)
    std_scale_all = predictions["std_scale"].to_numpy(dtype=float)
    corr = {(int(h), a, b): float(c) for h, a, b, c in zip(sigma["horizon"], sigma["family_a"], sigma["family_b"],
                                                            sigma["corr"], strict=True)}
    by_h: dict[int, list[tuple[str, float]]] = {}
    for h, f, m in zip(skill["horizon"], skill["family"], skill["mu"], strict=True):
        by_h.setdefault(int(h), []).append((str(f), float(m)))
    alpha_cols, nfam_cols, weight_rows = [], [], []
    for h in sorted(by_h):
        fams = [f for f, _ in sorted(by_h[h])]
        mu = np.array([m for _, m in sorted(by_h[h])], dtype=float)
        sg = np.array([[corr.get((h, a, b), np.nan) for b in fams] for a in fams], dtype=float).reshape(
            len(fams), len(fams))
        w, reason = horizon_weights(mu, sg, h, params)
        col = np.array([fams.index(f) if f in fams else -1 for f in fam_names], dtype=np.int64)  # family → column
        sel = (hz == h) & (col[fam_code] >= 0)
        z = np.full((len(symbols), len(fams)), np.nan)
        z[sym_code[sel], col[fam_code[sel]]] = std[sel]
        std_scale = np.array([_first_finite(std_scale_all[sel & (col[fam_code] == i)]) for i in range(len(fams))])
        slope = np.array([meta_number(models.get(return_target(h), f).meta, "calibration_slope")
                          for f in fams])  # null (not measured) → NaN: that family's z maps to no return
        scale = slope * std_scale
        alpha_cols.append(blend(z[:, None, :], w[None, :], scale[None, :])[:, 0])
        nfam_cols.append(np.isfinite(z).sum(axis=1))
        t = temperature_for(h, params)
        weight_rows += [{"horizon": h, "family": f, "weight": float(w[i]), "mu": float(mu[i]), "reason": reason,
                         "temperature": t, "calibration_slope": float(slope[i]), "std_scale": float(std_scale[i]),
                         "scale": float(scale[i])} for i, f in enumerate(fams)]
    if alpha_cols:
        horizons = np.array(sorted(by_h), dtype=np.int64)
        a = np.column_stack(alpha_cols).ravel()  # (symbol, horizon) order: symbols sorted, horizons ascending
        alpha = pd.DataFrame({"symbol": np.repeat(symbols, len(horizons)),
                              "horizon": np.tile(horizons, len(symbols)), "alpha": a, "alpha_bps": a * 1e4,
                              "n_families": np.column_stack(nfam_cols).ravel().astype(np.int64)})
    else:
        alpha = pd.DataFrame(columns=["symbol", "horizon", "alpha", "alpha_bps", "n_families"])
    weights = pd.DataFrame(weight_rows, columns=WEIGHT_COLUMNS)
    return {"blended_alpha": alpha, "blended_alpha_weights": weights}
