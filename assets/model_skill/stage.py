"""The ``model_skill`` stage for one bar, pure: point-in-time rolling IC (μ input) and Σ per horizon.

Only predictions whose horizon has fully elapsed at this bar count: a prediction made at bar s for h bars
is scored once bar s+h has closed, against log(close[s+h]/close[s]). While live history is short the IC is
shrunk toward the family's validation IC from the registry (``blending.ic_prior_bars``).
cost_share (the spec leaves it open), in IC units so that μ = max(IC − cost_penalty·cost_share, μ_floor)
stays comparable across families: |IC_f| × the share of valid symbols whose predicted move |raw·1e4| does not
cover the quoted spread at this bar — the part of the family's skill that costs eat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.history import ChainHistory
from assets.model_skill.logic import Params, family_correlation, family_mu, spearman_ic
from assets.predictions.models import RETURN_FAMILIES, ModelSet
from assets.predictions.stage import previous_bar_keys
from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_key
from TRAINING.registry import return_target

SKILL_COLUMNS = ["horizon", "family", "ic_live", "n_live", "ic_prior", "ic_shrunk", "cost_share", "mu"]


def _ic_by_bar(past: pd.DataFrame, close: pd.DataFrame, keys: list[str], hb: int) -> np.ndarray:
    """Per past bar s (oldest first): Spearman IC of its raw predictions vs the realised h-bar return."""
    pos = {k: i for i, k in enumerate(close.index)}
    out = []
    by_bar = dict(tuple(past.groupby("bar", sort=True)))
    for s in keys:  # a loop over past bars (≤ ic_window_bars), never over symbols
        i = pos.get(s)
        if i is None or i + hb >= len(close) or s not in by_bar:
            continue
        g = by_bar[s]
        real = np.log(close.iloc[i + hb] / close.iloc[i]).reindex(g["symbol"]).to_numpy(dtype=float)
        out.append(spearman_ic(g["raw"].to_numpy(dtype=float), real))
    return np.asarray(out, dtype=float)


def uncovered_share(preds: pd.DataFrame, spread: pd.Series) -> float:
    """Share of valid symbols whose predicted move does not cover the quoted spread (NaN if none valid)."""
    raw = preds["raw"].to_numpy(dtype=float)
    sp = spread.reindex(preds["symbol"]).to_numpy(dtype=float)
    ok = np.isfinite(raw) & np.isfinite(sp)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(raw[ok]) * 1e4 < sp[ok]))


def compute_model_skill(window: BarWindow, features: pd.DataFrame, predictions: pd.DataFrame, models: ModelSet,
                        history: ChainHistory, params: Params | None = None) -> dict[str, pd.DataFrame]:
    params = params or Params.from_cfg()
    bar_minutes = get_cfg("market.bar_minutes")
    horizons = sorted(get_cfg("horizons.minutes"))
    max_hb = max(horizons) // bar_minutes
    keys = previous_bar_keys(window.bar, params.ic_window_bars + max_hb)
    past = history.predictions(keys)
    panel = window.panel()
    close = pd.DataFrame(panel["close"], index=[bar_key(t) for t in window.times], columns=panel.symbols)
    spread = features.set_index("symbol")["spread_bps"]
    rows, sigma_rows = [], []
    for h in horizons:
        hb = h // bar_minutes
        fams = [f for f in RETURN_FAMILIES if models.get(return_target(h), f) is not None]
        for f in fams:
            mine = past[(past["horizon"] == h) & (past["family"] == f)]
            ics = _ic_by_bar(mine, close, keys, hb)
            now = predictions[(predictions["horizon"] == h) & (predictions["family"] == f)]
            prior = float(models.get(return_target(h), f).meta.get("validation_ic", np.nan))
            uncovered = uncovered_share(now, spread)
            first = family_mu(ics, prior, 0.0, params)  # the IC before costs
            share = abs(first["ic_shrunk"]) * uncovered if np.isfinite(uncovered * first["ic_shrunk"]) else 0.0
            got = family_mu(ics, prior, share, params)
            rows.append({"horizon": h, "family": f, **got, "ic_prior": prior, "cost_share": share})
        sigma_rows += _sigma_rows(past, keys, h, hb, fams, params.ic_window_bars)
    skill = pd.DataFrame(rows, columns=SKILL_COLUMNS)
    skill["horizon"] = skill["horizon"].astype(np.int64)
    sigma = pd.DataFrame(sigma_rows, columns=["horizon", "family_a", "family_b", "corr"])
    sigma["horizon"] = sigma["horizon"].astype(np.int64)
    return {"model_skill": skill, "model_skill_sigma": sigma}


def _sigma_rows(past: pd.DataFrame, keys: list[str], h: int, hb: int, fams: list[str], window: int) -> list[dict]:
    """Σ: correlation of the families' standardized predictions over the IC window (bars ≥ h old)."""
    if not fams:
        return []
    usable = keys[: len(keys) - hb][-window:] if len(keys) > hb else []
    mine = past[(past["horizon"] == h) & past["bar"].isin(usable) & past["family"].isin(fams)]
    wide = mine.pivot_table(index=["bar", "symbol"], columns="family", values="std", aggfunc="first",
                            dropna=False).reindex(columns=fams)
    corr = family_correlation(wide.to_numpy(dtype=float)) if len(wide) else np.eye(len(fams))
    return [{"horizon": h, "family_a": a, "family_b": b, "corr": float(corr[i, j])}
            for i, a in enumerate(fams) for j, b in enumerate(fams)]
