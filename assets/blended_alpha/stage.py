"""The ``blended_alpha`` stage for one bar, pure: family weights per horizon and α per symbol × horizon.

scale_f maps a standardized score back to an expected return: the family's calibration slope from the
registry (realised return on raw prediction) × the robust scale the standardization used, so
α_f ≈ slope_f · (raw_f − centre_f). Both are recorded with the weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.blended_alpha.logic import Params, blend, horizon_weights, temperature_for
from assets.predictions.models import ModelSet
from TRAINING.registry import return_target

WEIGHT_COLUMNS = ["horizon", "family", "weight", "mu", "reason", "temperature", "calibration_slope", "std_scale",
                  "scale"]


def compute_blended_alpha(predictions: pd.DataFrame, skill: pd.DataFrame, sigma: pd.DataFrame, models: ModelSet,
                          params: Params | None = None) -> dict[str, pd.DataFrame]:
    params = params or Params.from_cfg()
    symbols = np.array(sorted(predictions["symbol"].unique()), dtype=object)
    alpha_parts, weight_rows = [], []
    for h in sorted(skill["horizon"].unique()):
        sk = skill[skill["horizon"] == h].sort_values("family")
        fams = sk["family"].tolist()
        mu = sk["mu"].to_numpy(dtype=float)
        sg = sigma[sigma["horizon"] == h].pivot(index="family_a", columns="family_b", values="corr")
        sg = sg.reindex(index=fams, columns=fams).to_numpy(dtype=float)
        w, reason = horizon_weights(mu, sg, int(h), params)
        ph = predictions[predictions["horizon"] == h]
        z = ph.pivot(index="symbol", columns="family", values="std").reindex(index=symbols, columns=fams)
        std_scale = ph.groupby("family")["std_scale"].first().reindex(fams).to_numpy(dtype=float)
        slope = np.array([float(models.get(return_target(int(h)), f).meta.get("calibration_slope", np.nan))
                          for f in fams])
        scale = slope * std_scale
        a = blend(z.to_numpy(dtype=float)[:, None, :], w[None, :], scale[None, :])[:, 0]
        n_fam = np.isfinite(z.to_numpy(dtype=float)).sum(axis=1)
        alpha_parts.append(pd.DataFrame({"symbol": symbols, "horizon": int(h), "alpha": a, "alpha_bps": a * 1e4,
                                         "n_families": n_fam.astype(np.int64)}))
        t = temperature_for(int(h), params)
        weight_rows += [{"horizon": int(h), "family": f, "weight": float(w[i]), "mu": float(mu[i]), "reason": reason,
                         "temperature": t, "calibration_slope": float(slope[i]), "std_scale": float(std_scale[i]),
                         "scale": float(scale[i])} for i, f in enumerate(fams)]
    alpha = (pd.concat(alpha_parts, ignore_index=True) if alpha_parts else
             pd.DataFrame(columns=["symbol", "horizon", "alpha", "alpha_bps", "n_families"]))
    alpha = alpha.sort_values(["symbol", "horizon"], kind="mergesort").reset_index(drop=True)
    weights = pd.DataFrame(weight_rows, columns=WEIGHT_COLUMNS)
    return {"blended_alpha": alpha, "blended_alpha_weights": weights}
