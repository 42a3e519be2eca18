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

from assets.blended_alpha.logic import Params, blend, horizon_weights_rows, temperature_for
from assets.history import PRED_HISTORY_COLUMNS, PredictionGrid, stack_frames
from assets.predictions.models import ModelSet
from TRAINING.registry import meta_number, return_target

WEIGHT_COLUMNS = ["horizon", "family", "weight", "mu", "reason", "temperature", "calibration_slope", "std_scale",
                  "scale"]


def compute_blended_alpha_batch(predictions: list[pd.DataFrame], skill: list[pd.DataFrame],
                                sigma: list[pd.DataFrame], models: ModelSet,
                                params: Params | None = None) -> list[dict[str, pd.DataFrame]]:
    """Weights per horizon and α per symbol × horizon of B bars (issue 12: one code path for one bar and a
    batch; a bar reads only its own frames). At each horizon the bars' Σ + λI systems are solved as one stack
    (:func:`~assets.blended_alpha.logic.horizon_weights_rows`) and α of every bar and symbol is one ``blend``
    call over (symbols, bars, families)."""
    params = params or Params.from_cfg()
    b_n = len(predictions)
    if not b_n:
        return []
    bars = [str(b) for b in range(b_n)]
    rows = stack_frames(predictions, bars, [*PRED_HISTORY_COLUMNS[1:], "std_scale"])
    grid = PredictionGrid.from_frame(rows, bars)
    scales = _std_scales(rows)
    has_row = np.zeros((b_n, len(grid.symbols)), dtype=bool)   # each bar's own symbols
    has_row[np.repeat(np.arange(b_n), [len(p) for p in predictions]),
            np.searchsorted(grid.symbols, rows["symbol"].to_numpy(dtype=object))] = True
    corr = {(b, int(h), a, f): float(c) for b, frame in enumerate(sigma)
            for h, a, f, c in zip(*(frame[k].tolist() for k in ("horizon", "family_a", "family_b", "corr")),
                                  strict=True)}
    fam_mu = []
    for frame in skill:  # per bar: horizon → [(family, μ)] sorted (tiny)
        by_h: dict[int, list[tuple[str, float]]] = {}
        for h, f, m in zip(frame["horizon"].tolist(), frame["family"].tolist(), frame["mu"].tolist(), strict=True):
            by_h.setdefault(int(h), []).append((str(f), float(m)))
        fam_mu.append({h: sorted(v) for h, v in by_h.items()})
    alpha: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in range(b_n)]
    weight_parts: list[list[tuple]] = [[] for _ in range(b_n)]
    for h in sorted({h for by_h in fam_mu for h in by_h}):
        same: dict[tuple[str, ...], list[int]] = {}
        for b, by_h in enumerate(fam_mu):  # bars with the same families at h share one solve and blend call
            if h in by_h:
                same.setdefault(tuple(f for f, _ in by_h[h]), []).append(b)
        for fams_t, idx in same.items():
            fams = list(fams_t)
            slope = np.array([meta_number(models.get(return_target(h), f).meta, "calibration_slope")
                              for f in fams])  # null (not measured) → NaN: that family's z maps to no return
            t = temperature_for(h, params)
            mu = np.array([[m for _, m in fam_mu[b][h]] for b in idx], dtype=float).reshape(len(idx), len(fams))
            sg = np.array([[[corr.get((b, h, a, c), np.nan) for c in fams] for a in fams] for b in idx],
                          dtype=float).reshape(len(idx), len(fams), len(fams))
            w, reason = horizon_weights_rows(mu, sg, h, params)
            std_scale = np.array([[scales.get((b, h, f), np.nan) for f in fams] for b in idx],
                                 dtype=float).reshape(len(idx), len(fams))
            scale = slope[None, :] * std_scale
            z, _ = grid.select(h, fams, "std")          # (F, B, S)
            z = z[:, idx].transpose(2, 1, 0)             # (S, bars, F)
            a = blend(z, w, scale)                        # (S, bars)
            n = np.isfinite(z).sum(axis=2)
            for j, b in enumerate(idx):
                alpha[b][h] = (a[:, j], n[:, j])
                weight_parts[b].append((h, fams, w[j], mu[j], reason[j], t, slope, std_scale[j], scale[j]))
    parts: list[dict[str, np.ndarray] | None] = []
    for b in range(b_n):  # per bar its rows' arrays; the frames are built once for the batch below
        if not alpha[b]:
            parts.append(None)
            continue
        mine = np.flatnonzero(has_row[b])  # the bar's own symbols, sorted
        horizons = np.array(sorted(alpha[b]), dtype=np.int64)
        a = np.column_stack([alpha[b][h][0][mine] for h in horizons]).ravel()  # (symbol, horizon) order
        n = np.column_stack([alpha[b][h][1][mine] for h in horizons]).ravel()
        parts.append({"symbol": np.repeat(np.asarray(grid.symbols[mine], dtype=object), len(horizons)),
                      "horizon": np.tile(horizons, len(mine)), "alpha": a, "alpha_bps": a * 1e4,
                      "n_families": n.astype(np.int64)})
    alphas = _split_frames(parts, lambda: pd.DataFrame(columns=["symbol", "horizon", "alpha", "alpha_bps",
                                                                 "n_families"]))
    weights = _split_frames([_weights_columns(w) for w in weight_parts], lambda: pd.DataFrame([], columns=WEIGHT_COLUMNS))
    return [{"blended_alpha": a, "blended_alpha_weights": w} for a, w in zip(alphas, weights, strict=True)]


def _split_frames(parts: list[dict[str, np.ndarray] | None], empty) -> list[pd.DataFrame]:
    """Per bar the frame of its columns ``parts[b]`` (``empty()`` where None): one frame built for the batch
    and split by slicing (issue 12); a bar with no row gets its own (empty) frame as built alone."""
    sizes = [len(next(iter(p.values()))) if p is not None else 0 for p in parts]
    full = [p for p, n in zip(parts, sizes, strict=True) if p is not None and n]
    whole = pd.DataFrame({k: np.concatenate([p[k] for p in full]) for k in full[0]}) if full else None
    ends = np.cumsum(sizes)
    out = []
    for b, p in enumerate(parts):
        if p is None:
            out.append(empty())
        elif sizes[b]:
            out.append(whole.iloc[ends[b] - sizes[b]:ends[b]].reset_index(drop=True))
        else:
            out.append(pd.DataFrame(p))
    return out


def _weights_columns(parts: list[tuple]) -> dict[str, np.ndarray] | None:
    """The columns of one bar's ``blended_alpha_weights`` (a row per horizon × family, horizons ascending);
    None for a bar with no part."""
    if not parts:
        return None
    sizes = [len(p[1]) for p in parts]
    cat = [np.concatenate([np.asarray(p[i], dtype=float) for p in parts]) for i in (2, 3, 6, 7, 8)]
    return {
        "horizon": np.repeat(np.array([p[0] for p in parts], dtype=np.int64), sizes),
        "family": np.array([f for p in parts for f in p[1]], dtype=object),
        "weight": cat[0], "mu": cat[1],
        "reason": np.repeat(np.array([p[4] for p in parts], dtype=object), sizes),
        "temperature": np.repeat(np.array([p[5] for p in parts], dtype=float), sizes),
        "calibration_slope": cat[2], "std_scale": cat[3], "scale": cat[4]}


def _std_scales(rows: pd.DataFrame) -> dict[tuple[int, int, str], float]:
    """(bar, horizon, family) → the first non-NaN ``std_scale`` of its rows (what ``groupby().first()`` takes)."""
    frame = rows[rows["std_scale"].notna().to_numpy()].drop_duplicates(["bar", "horizon", "family"], keep="first")
    return {(int(b), int(h), str(f)): float(v) for b, h, f, v in zip(
        frame["bar"], frame["horizon"], frame["family"], frame["std_scale"], strict=True)}


def compute_blended_alpha(predictions: pd.DataFrame, skill: pd.DataFrame, sigma: pd.DataFrame, models: ModelSet,
                          params: Params | None = None) -> dict[str, pd.DataFrame]:
    """Weights per horizon and α per symbol × horizon of one bar: :func:`compute_blended_alpha_batch` of one."""
    return compute_blended_alpha_batch([predictions], [skill], [sigma], models, params)[0]
