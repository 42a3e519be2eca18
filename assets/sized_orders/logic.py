"""SPEC §4.5: turn gated signals into target weights, capped trades, whole-lot orders with stable ids.

Pipeline per bar (vectorised over symbols): raw = s/σ → z = raw / robust scale, clipped ±z_max →
w = z/z_max · max_weight · gate multiplier → risk cap on |target| → gross targeting → no-trade band →
participation cap on |trade| → shares rounded toward zero to the lot → client_order_id.

Decisions where the spec is silent:
- robust scale = 1.4826 · median(|raw|) over the non-zero finite raw values of the current universe and
  the history passed in (the last ``z_window_bars`` rows of a (B, N) array, or a flat array as is).
  It is taken about 0, not the median, because z = raw / scale is not centred: a one-sided book must not
  shrink the scale; zeros (no signal) are left out so a quiet bar cannot make every signal max size.
  No non-zero value at all → z = 0 everywhere;
- three kinds of symbol: ``exit`` (target exactly 0: shares = −current quantity, never banded, not
  participation-capped, not lot-rounded), ``fixed`` (gate ``hold`` or bad input: no order, the position
  counts at its current weight in the gross), ``active`` (everything else, including zero signals whose
  target 0 reduces a position through the band);
- bad input for an active symbol (no order, status ``bad_input:<flags>``): non-finite signal or
  multiplier, price ≤ 0/NaN, current quantity NaN, ADV ≤ 0/NaN, portfolio value ≤ 0/NaN, and — only
  when the signal is non-zero — σ or σ_daily ≤ 0/NaN;
- gross targeting scales only the active targets so that Σ|fixed current| + Σ|active target| meets
  ``gross_target`` (``cap``: only down; ``target``: up or down, never past the per-name cap
  min(max_weight, risk_cap/PV), with the excess given to the uncapped names — water-filling);
- the no-trade band compares the final target weight (after gross) with the current weight;
- sums use math.fsum so that permuting symbols cannot change a bit of any output.
Caps that bit are recorded per symbol: ``risk_cap``, ``gross_cap`` (cap-mode scale-down),
``gross_target`` (target-mode rescale), ``name_cap`` (target-mode clip), ``participation``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from assets.flags import join_flags, positive
from CONFIG.config_loader import get_cfg

MAD_TO_SIGMA = 1.4826  # normal consistency constant of median(|x|) (a definition, not a tunable)
BPS = 1e4  # basis points per unit (σ_daily arrives in bps)
ID_HEX_CHARS = 32  # client_order_id length: a 128-bit sha256 prefix (an id format, not a tunable)
ROUND_TOL = 1e-9  # relative float tolerance so 499.9999999 shares is 500 (numerics, not a tunable)
BUY, SELL = "BUY", "SELL"


@dataclass(frozen=True)
class Params:
    """Sizing settings (``sizing.*``) and the strategy id that goes into every client_order_id."""

    z_window_bars: int
    z_max: float
    max_weight: float
    max_position_pct: float
    name_risk_budget: float
    participation_beta: float
    no_trade_band: float
    gross_target: float
    gross_mode: str
    lot_size: int
    strategy_id: str

    @classmethod
    def from_cfg(cls) -> Params:
        return cls(
            z_window_bars=int(get_cfg("sizing.z_window_bars")),
            z_max=float(get_cfg("sizing.z_max")),
            max_weight=float(get_cfg("sizing.max_weight")),
            max_position_pct=float(get_cfg("sizing.max_position_pct")),
            name_risk_budget=float(get_cfg("sizing.name_risk_budget")),
            participation_beta=float(get_cfg("sizing.participation_beta")),
            no_trade_band=float(get_cfg("sizing.no_trade_band")),
            gross_target=float(get_cfg("sizing.gross_target")),
            gross_mode=str(get_cfg("sizing.gross_mode")),
            lot_size=int(get_cfg("sizing.lot_size")),
            strategy_id=str(get_cfg("engine.strategy_id")),
        )


@dataclass(frozen=True)
class SizedOrders:
    """Per symbol (N,) arrays, plus the bar's robust scale and gross figures.

    ``gross_before`` / ``gross_after``: Σ|w| of the targets (held names at their current weight) before and
    after gross targeting, i.e. before the participation cap; ``w_post`` is the weight after the order.
    ``shares`` is float: whole lots, except an exit which is exactly −current quantity.
    """

    raw: np.ndarray
    z: np.ndarray
    w_signal: np.ndarray
    w_target: np.ndarray
    w_current: np.ndarray
    w_post: np.ndarray
    trade_notional: np.ndarray
    shares: np.ndarray
    side: np.ndarray
    caps: np.ndarray
    status: np.ndarray
    has_order: np.ndarray
    client_order_id: np.ndarray
    scale: float
    gross_scale: float
    gross_before: float
    gross_after: float


def _fsum_abs(x: np.ndarray, mask: np.ndarray) -> float:
    return math.fsum(np.abs(x[mask]).tolist())


def client_order_id(strategy_id: str, bar_key: str, symbol: str, side: str, shares: float) -> str:
    """Deterministic id: the same (strategy, bar, symbol, side, shares) always gives the same id."""
    q = float(shares)
    qty = str(int(q)) if q.is_integer() else repr(q)
    payload = "|".join((str(strategy_id), str(bar_key), str(symbol), str(side), qty))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ID_HEX_CHARS]


def robust_scale(raw: np.ndarray, raw_history: np.ndarray, z_window_bars: int) -> float:
    """1.4826 · median(|x|) over the non-zero finite values of this bar and the recent history."""
    hist = np.asarray(raw_history, dtype=float)
    if hist.ndim == 2:
        hist = hist[-z_window_bars:] if z_window_bars > 0 else hist[:0]
    pool = np.concatenate([hist.ravel(), np.asarray(raw, dtype=float).ravel()])
    pool = np.abs(pool[np.isfinite(pool) & (pool != 0.0)])
    if pool.size == 0:
        return float("nan")
    return MAD_TO_SIGMA * float(np.median(pool))


def _z_scores(signal: np.ndarray, sigma: np.ndarray, raw_history: np.ndarray,
              params: Params) -> tuple[np.ndarray, np.ndarray, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(signal == 0.0, 0.0, signal / np.where(positive(sigma), sigma, np.nan))
    scale = robust_scale(raw, raw_history, params.z_window_bars)
    if not (np.isfinite(scale) and scale > 0.0):
        return raw, np.where(np.isfinite(raw), 0.0, np.nan), scale
    return raw, np.clip(raw / scale, -params.z_max, params.z_max), scale


def _bad_flags(signal: np.ndarray, mult: np.ndarray, sigma: np.ndarray, sigma_d: np.ndarray,
               price: np.ndarray, qty: np.ndarray, adv_bar: np.ndarray, pv: float) -> list[tuple[str, np.ndarray]]:
    active_sig = np.isfinite(signal) & (signal != 0.0)
    return [
        ("bad_signal", ~np.isfinite(signal)),
        ("bad_multiplier", ~np.isfinite(mult)),
        ("bad_sigma", active_sig & ~positive(sigma)),
        ("bad_sigma_daily", active_sig & ~positive(sigma_d)),
        ("bad_price", ~positive(price)),
        ("bad_position", ~np.isfinite(qty)),
        ("bad_adv", ~positive(adv_bar)),
        ("bad_portfolio_value", np.full(signal.shape, not (np.isfinite(pv) and pv > 0.0))),
    ]


def _gross_scale(w: np.ndarray, active: np.ndarray, fixed_gross: float, cap_w: np.ndarray,
                 params: Params) -> tuple[np.ndarray, float, np.ndarray]:
    """Scale the active targets toward gross_target; returns (weights, factor, name-capped mask)."""
    g_act = _fsum_abs(w, active)
    room = max(0.0, params.gross_target - fixed_gross)
    if g_act <= 0.0 or (params.gross_mode == "cap" and fixed_gross + g_act <= params.gross_target):
        return w, 1.0, np.zeros(w.shape, dtype=bool)
    if params.gross_mode == "cap":
        f = room / g_act
        return np.where(active, w * f, w), f, np.zeros(w.shape, dtype=bool)
    if params.gross_mode != "target":
        raise ValueError(f"sizing.gross_mode must be cap or target, got {params.gross_mode!r}")
    out, free = w.copy(), active & (w != 0.0)
    capped = np.zeros(w.shape, dtype=bool)
    f = 1.0
    for _ in range(int(free.sum()) + 1):  # water-filling rounds (each caps ≥ 1 name), not per symbol
        g_free = _fsum_abs(w, free)
        if g_free <= 0.0:
            break
        f = max(0.0, room - _fsum_abs(out, active & ~free & (w != 0.0))) / g_free
        out = np.where(free, w * f, out)
        over = free & (np.abs(out) > cap_w)
        if not over.any():
            break
        out = np.where(over, np.sign(w) * np.where(over, cap_w, 0.0), out)
        capped |= over
        free &= ~over
    return out, f, capped


def _round_shares(trade_shares: np.ndarray, lot: int) -> np.ndarray:
    """Round toward zero to whole lots, forgiving float noise of ROUND_TOL (relative)."""
    lots = trade_shares / lot
    near = np.round(lots)
    snap = np.abs(lots - near) <= ROUND_TOL * np.maximum(1.0, np.abs(lots))
    return np.where(snap, near, np.trunc(lots)) * lot


def size_orders(signal_bps: np.ndarray, sigma_bps: np.ndarray, size_mult: np.ndarray, is_exit: np.ndarray,
                hold: np.ndarray, current_qty: np.ndarray, price: np.ndarray, sigma_daily_bps: np.ndarray,
                adv_bar_dollars: np.ndarray, portfolio_value: float, raw_history: np.ndarray,
                symbols: np.ndarray, bar_key: str, params: Params | None = None) -> SizedOrders:
    """Target weights, caps, band, shares, sides and client_order_ids for every symbol of one bar."""
    params = params or Params.from_cfg()
    s, sig, mult, qty, px, sig_d, adv = (np.asarray(v, dtype=float).ravel() for v in (
        signal_bps, sigma_bps, size_mult, current_qty, price, sigma_daily_bps, adv_bar_dollars))
    exit_ = np.asarray(is_exit, dtype=bool).ravel()
    n, pv = s.size, float(portfolio_value)
    bad_flags = _bad_flags(s, mult, sig, sig_d, px, qty, adv, pv)
    bad = np.any(np.stack([m for _, m in bad_flags]), axis=0) if n else np.zeros(0, dtype=bool)
    exit_ok = exit_ & np.isfinite(qty)
    fixed = ~exit_ok & (np.asarray(hold, dtype=bool).ravel() | bad)
    active = ~exit_ok & ~fixed
    with np.errstate(invalid="ignore", divide="ignore"):
        w_cur = qty * px / pv
        raw, z, scale = _z_scores(np.where(active, s, 0.0), sig, raw_history, params)
        w_sig = np.where(active, z / params.z_max * params.max_weight * np.clip(mult, 0.0, 1.0), 0.0)
        risk_cap = np.minimum(params.max_position_pct * pv, params.name_risk_budget * pv / (sig_d / BPS))
        cap_w = np.where(np.isfinite(risk_cap), risk_cap / pv, np.inf)
    w_sig = np.where(np.isfinite(w_sig), w_sig, 0.0)
    risk_bit = active & (np.abs(w_sig) > cap_w)
    w1 = np.where(risk_bit, np.sign(w_sig) * np.where(risk_bit, cap_w, 0.0), w_sig)
    fixed_gross = _fsum_abs(np.nan_to_num(w_cur), fixed)
    gross_before = fixed_gross + _fsum_abs(w1, active)
    name_cap = np.minimum(cap_w, params.max_weight)
    w2, f, name_bit = _gross_scale(w1, active, fixed_gross, name_cap, params)
    w_target = np.select([exit_ok, fixed], [0.0, w_cur], default=w2)
    delta = w_target - w_cur
    banded = active & (np.abs(np.nan_to_num(delta)) < params.no_trade_band)
    with np.errstate(invalid="ignore"):
        trade = np.where(active & ~banded, delta * pv, 0.0)
        max_trade = params.participation_beta * adv
        part_bit = active & ~banded & (np.abs(trade) > max_trade)
        trade = np.where(part_bit, np.sign(trade) * max_trade, trade)
        shares = np.where(active & ~banded, _round_shares(trade / px, params.lot_size), 0.0)
    shares = np.where(exit_ok, -qty, np.where(np.isfinite(shares), shares, 0.0)) + 0.0
    has_order = shares != 0.0
    side = np.where(shares > 0, BUY, np.where(shares < 0, SELL, "")).astype(str)
    gross_bits = active & (w1 != 0.0) & (f != 1.0)
    caps = join_flags(n, [("risk_cap", risk_bit),
                          ("gross_cap" if params.gross_mode == "cap" else "gross_target", gross_bits),
                          ("name_cap", name_bit), ("participation", part_bit)])
    status = _status(n, exit_ok, fixed, bad, bad_flags, banded, delta, has_order)
    with np.errstate(invalid="ignore"):
        w_post = np.where(fixed, w_cur, (np.nan_to_num(qty) + shares) * px / pv)
    sym = np.asarray(symbols).astype(str).ravel()
    ids = np.full(n, "", dtype=object)
    for i in np.flatnonzero(has_order):  # hashing is per order by nature; only rows with an order
        ids[i] = client_order_id(params.strategy_id, bar_key, sym[i], side[i], shares[i])
    return SizedOrders(
        raw=raw, z=z, w_signal=w_sig, w_target=w_target, w_current=w_cur, w_post=w_post,
        trade_notional=np.where(exit_ok, -qty * px, trade), shares=shares, side=side, caps=caps,
        status=status, has_order=has_order, client_order_id=ids.astype(str), scale=scale,
        gross_scale=f, gross_before=gross_before,
        gross_after=fixed_gross + _fsum_abs(w_target, active),
    )


def _status(n: int, exit_ok: np.ndarray, fixed: np.ndarray, bad: np.ndarray,
            bad_flags: list[tuple[str, np.ndarray]], banded: np.ndarray, delta: np.ndarray,
            has_order: np.ndarray) -> np.ndarray:
    """One status per symbol: order, exit, held, bad_input:<flags>, no_change, banded, zero_shares."""
    bad_text = np.char.add("bad_input:", join_flags(n, bad_flags))
    return np.select(
        [exit_ok & has_order, exit_ok, fixed & bad, fixed, banded & (delta == 0.0), banded, ~has_order],
        ["exit", "no_change", bad_text, "held", "no_change", "banded", "zero_shares"],
        default="order",
    ).astype(str)
