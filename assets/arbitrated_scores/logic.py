"""SPEC §4.3: per symbol, weigh each horizon's alpha against its trading cost and pick what to trade.

Vectorised over symbols (N) and horizons (H). Decisions where the spec is silent:
- the volatility term is k₂·σ·√(h/5) with h in minutes and the literal 5 of the spec's formula
  (with 5-minute bars this is σ scaled to the horizon; ``bar_minutes`` is only used to check that
  every horizon is a whole multiple of the bar);
- bad input makes the symbol HOLD with reason code(s), its cost terms, final score and reserve NaN and
  its direction 0, so nothing downstream (not even a "preferred" gate) can trade on garbage:
  ``bad_alpha`` (±inf alpha at any horizon), ``no_alpha`` (NaN at every horizon), ``bad_spread``
  (NaN or ≤ 0: crossed/locked quote), ``bad_sigma``, ``bad_sigma_daily``, ``bad_adv``, ``bad_price``
  (NaN or ≤ 0), ``bad_portfolio_value``;
- a NaN alpha at only some horizons is a missing model there: those horizons are skipped, the others
  are arbitrated (SPEC §3: the rest of the graph runs on what is left);
- ``winner``: ties in net go to the shorter horizon (stable order);
- ``softmax``: weights w_h = softmax(β·net_h / (σ√(h/5))) over the horizons present;
  S = Σ w_h·sign(α_h)·net_h, final = min(Σ w_h·net_h, |S|), direction = sign(S) when final > 0.
  When all horizons agree in sign this is exactly Σ w·net "taken with sign"; when they disagree the
  final score is never more than the signed consensus, so opposite views cannot add up to a trade.
  When final ≤ 0 (nothing can trade) S mostly counts the costs, so the direction recorded is that of
  the weighted alpha Σ w_h·α_h instead (informational: a HOLD whose alphas are all long reads long).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assets.flags import join_flags, positive
from CONFIG.config_loader import get_cfg

VOL_FORMULA_MINUTES = 5.0  # the literal 5 in the spec's σ·√(h/5) (part of the formula, not a tunable)
TRADE = "TRADE"
HOLD = "HOLD"


@dataclass(frozen=True)
class Params:
    """Arbitration settings (``arbitration.*``); a null impact_ref_weight means ``sizing.max_weight``."""

    mode: str
    k1_spread: float
    k2_vol: float
    k3_impact: float
    impact_y: float
    impact_ref_weight: float
    winner_share: float
    runner_up_share: float
    softmax_beta: float
    reserve_base_bps: float
    reserve_spread_mult: float

    @classmethod
    def from_cfg(cls) -> Params:
        ref = get_cfg("arbitration.impact_ref_weight")
        return cls(
            mode=str(get_cfg("arbitration.mode")),
            k1_spread=float(get_cfg("arbitration.k1_spread")),
            k2_vol=float(get_cfg("arbitration.k2_vol")),
            k3_impact=float(get_cfg("arbitration.k3_impact")),
            impact_y=float(get_cfg("arbitration.impact_y")),
            impact_ref_weight=float(get_cfg("sizing.max_weight") if ref is None else ref),
            winner_share=float(get_cfg("arbitration.winner_share")),
            runner_up_share=float(get_cfg("arbitration.runner_up_share")),
            softmax_beta=float(get_cfg("arbitration.softmax_beta")),
            reserve_base_bps=float(get_cfg("arbitration.reserve_base_bps")),
            reserve_spread_mult=float(get_cfg("arbitration.reserve_spread_mult")),
        )


@dataclass(frozen=True)
class Arbitration:
    """Every term of the decision. (N, H) arrays per symbol × horizon; (N,) per symbol."""

    horizons_min: np.ndarray
    spread_cost_bps: np.ndarray
    vol_cost_bps: np.ndarray
    impact_cost_bps: np.ndarray
    cost_bps: np.ndarray
    net_bps: np.ndarray
    horizon_weight: np.ndarray
    impact_bps: np.ndarray
    selected_h_min: np.ndarray
    runner_up_h_min: np.ndarray
    final_score_bps: np.ndarray
    direction: np.ndarray
    reserve_bps: np.ndarray
    decision: np.ndarray
    reason: np.ndarray


def _bad_input_flags(alpha: np.ndarray, spread: np.ndarray, sigma: np.ndarray, sigma_daily: np.ndarray,
                     adv: np.ndarray, price: np.ndarray, pv: float) -> list[tuple[str, np.ndarray]]:
    n = alpha.shape[0]
    return [
        ("bad_alpha", np.isinf(alpha).any(axis=1)),
        ("no_alpha", ~np.isfinite(alpha).any(axis=1) & ~np.isinf(alpha).any(axis=1)),
        ("bad_spread", ~positive(spread)),
        ("bad_sigma", ~positive(sigma)),
        ("bad_sigma_daily", ~positive(sigma_daily)),
        ("bad_adv", ~positive(adv)),
        ("bad_price", ~positive(price)),
        ("bad_portfolio_value", np.full(n, not (np.isfinite(pv) and pv > 0.0))),
    ]


def cost_terms(horizons_min: np.ndarray, spread_bps: np.ndarray, sigma_bps: np.ndarray,
               sigma_daily_bps: np.ndarray, adv_shares: np.ndarray, price: np.ndarray,
               portfolio_value: float, params: Params) -> dict[str, np.ndarray]:
    """The weighted cost terms in bps: spread (N, H), vol (N, H), impact (N, H) and raw impact (N,)."""
    n, h = spread_bps.shape[0], horizons_min.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        q_shares = params.impact_ref_weight * portfolio_value / price
        impact = params.impact_y * sigma_daily_bps * np.sqrt(q_shares / adv_shares)
        vol = params.k2_vol * sigma_bps[:, None] * np.sqrt(horizons_min / VOL_FORMULA_MINUTES)[None, :]
    return {
        "spread": np.broadcast_to((params.k1_spread * spread_bps)[:, None], (n, h)).copy(),
        "vol": vol,
        "impact": np.broadcast_to((params.k3_impact * impact)[:, None], (n, h)).copy(),
        "impact_bps": impact,
    }


def _select_winner(alpha: np.ndarray, net: np.ndarray, params: Params) -> tuple[np.ndarray, ...]:
    """Winner-takes-most: (weights (N, H), final, direction, winner idx, runner-up idx or -1)."""
    n, h = net.shape
    rows = np.arange(n)
    net_sel = np.where(np.isfinite(net), net, -np.inf)
    order = np.argsort(-net_sel, axis=1, kind="stable")
    win = order[:, 0]
    sign_w = np.sign(alpha[rows, win])
    weights = np.zeros((n, h))
    if h >= 2:
        run = order[:, 1]
        net_r = net_sel[rows, run]
        run_ok = np.isfinite(net_r) & (net_r > 0.0) & (np.sign(alpha[rows, run]) == sign_w)
    else:
        run = np.zeros(n, dtype=int)
        run_ok = np.zeros(n, dtype=bool)
    weights[rows, win] = np.where(run_ok, params.winner_share, 1.0)
    weights[rows, run] += np.where(run_ok, params.runner_up_share, 0.0)
    final = (weights * np.where(np.isfinite(net), net, 0.0)).sum(axis=1)
    return weights, final, sign_w, win, np.where(run_ok, run, -1)


def _select_softmax(alpha: np.ndarray, net: np.ndarray, sigma: np.ndarray, horizons_min: np.ndarray,
                    params: Params) -> tuple[np.ndarray, ...]:
    """Softmax over horizons of β·net/(σ√(h/5)): (weights, final, direction, argmax idx, -1s)."""
    n = net.shape[0]
    ok = np.isfinite(net)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = params.softmax_beta * net / (sigma[:, None] * np.sqrt(horizons_min / VOL_FORMULA_MINUTES)[None, :])
    ok &= np.isfinite(x)
    x = np.where(ok, x, -np.inf)
    xmax = np.max(x, axis=1, keepdims=True)
    xmax = np.where(np.isfinite(xmax), xmax, 0.0)
    e = np.where(ok, np.exp(x - xmax), 0.0)
    tot = e.sum(axis=1, keepdims=True)
    weights = np.where(tot > 0.0, e / np.where(tot > 0.0, tot, 1.0), 0.0)
    net0 = np.where(ok, net, 0.0)
    alpha0 = np.where(ok, alpha, 0.0)
    signed = (weights * np.sign(alpha0) * net0).sum(axis=1)
    final = np.minimum((weights * net0).sum(axis=1), np.abs(signed))
    direction = np.where(final > 0.0, np.sign(signed), np.sign((weights * alpha0).sum(axis=1)))
    return weights, final, direction, np.argmax(weights, axis=1), np.full(n, -1)


def arbitrate(alpha_bps: np.ndarray, horizons_min: np.ndarray, bar_minutes: int, spread_bps: np.ndarray,
              sigma_bps: np.ndarray, sigma_daily_bps: np.ndarray, adv_shares: np.ndarray, price: np.ndarray,
              portfolio_value: float, params: Params | None = None) -> Arbitration:
    """Cost terms, net scores, horizon selection, reserve and TRADE/HOLD for every symbol."""
    params = params or Params.from_cfg()
    alpha = np.asarray(alpha_bps, dtype=float)
    hz = np.asarray(horizons_min, dtype=float).ravel()
    vecs = [np.asarray(v, dtype=float).ravel() for v in (spread_bps, sigma_bps, sigma_daily_bps, adv_shares, price)]
    spread, sigma, sigma_d, adv, px = vecs
    _check_shapes(alpha, hz, vecs, bar_minutes, params)
    n = alpha.shape[0]
    flags = _bad_input_flags(alpha, spread, sigma, sigma_d, adv, px, float(portfolio_value))
    valid = ~np.any(np.stack([m for _, m in flags]), axis=0) if n else np.zeros(0, dtype=bool)
    terms = cost_terms(hz, spread, sigma, sigma_d, adv, px, float(portfolio_value), params)
    bad2 = ~valid[:, None]
    spread_c, vol_c, impact_c = (np.where(bad2, np.nan, terms[k]) for k in ("spread", "vol", "impact"))
    cost = spread_c + vol_c + impact_c
    with np.errstate(invalid="ignore"):
        net = np.where(np.isfinite(alpha), np.abs(alpha) - cost, np.nan)
    if params.mode == "winner":
        weights, final, direction, sel, run = _select_winner(alpha, net, params)
    elif params.mode == "softmax":
        weights, final, direction, sel, run = _select_softmax(alpha, net, sigma, hz, params)
    else:
        raise ValueError(f"arbitration.mode must be winner or softmax, got {params.mode!r}")
    final = np.where(valid, final, np.nan)
    direction = np.where(valid, direction, 0.0).astype(int)
    reserve = np.where(valid, params.reserve_base_bps + params.reserve_spread_mult * spread, np.nan)
    with np.errstate(invalid="ignore"):
        trade = valid & (direction != 0) & (final >= reserve)
    reason = np.where(valid, np.where(trade, "trade", np.where(direction == 0, "no_direction", "below_reserve")),
                      join_flags(n, flags))
    return Arbitration(
        horizons_min=hz, spread_cost_bps=spread_c, vol_cost_bps=vol_c, impact_cost_bps=impact_c,
        cost_bps=cost, net_bps=net, horizon_weight=np.where(bad2, np.nan, weights),
        impact_bps=np.where(valid, terms["impact_bps"], np.nan),
        selected_h_min=np.where(valid, hz[sel] if hz.size else np.nan, np.nan),
        runner_up_h_min=np.where(valid & (run >= 0), hz[np.maximum(run, 0)] if hz.size else np.nan, np.nan),
        final_score_bps=final, direction=direction, reserve_bps=reserve,
        decision=np.where(trade, TRADE, HOLD).astype(str), reason=reason.astype(str),
    )


def _check_shapes(alpha: np.ndarray, hz: np.ndarray, vecs: list[np.ndarray], bar_minutes: int,
                  params: Params) -> None:
    """Shape and horizon errors are programming/config errors: raise, never guess."""
    if alpha.ndim != 2 or alpha.shape[1] != hz.size or hz.size == 0:
        raise ValueError(f"alpha_bps must be (N, H) with H = {hz.size} > 0, got {alpha.shape}")
    if any(v.shape != (alpha.shape[0],) for v in vecs):
        raise ValueError("spread, sigma, sigma_daily, adv, price must all be (N,)")
    if not (bar_minutes > 0 and np.all(hz > 0) and np.all(np.mod(hz, bar_minutes) == 0)):
        raise ValueError(f"horizons {hz.tolist()} must be positive multiples of bar_minutes={bar_minutes}")
    if params.mode not in ("winner", "softmax"):
        raise ValueError(f"arbitration.mode must be winner or softmax, got {params.mode!r}")
