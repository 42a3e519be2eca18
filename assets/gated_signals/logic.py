"""SPEC §4.4: barrier gating of the arbitrated signals (block, prefer, size down, exit, spread gate).

Thresholds are strict (``>``) and every long rule has its short mirror (P(peak) ↔ P(valley)).
The gate set (one value per symbol):
- ``exit``: an open position whose barrier probability says it has turned (long: P(peak) > exit;
  short: P(valley) > exit): target exactly 0, never held by the spread gate, never banded by sizing.
  It wins over any entry signal that bar (a long that exits is not flipped short in the same bar);
- ``preferred``: an entry that passes with the prefer condition (long: P(valley) > prefer), also when
  arbitration said HOLD below the reserve, provided the final score is finite and > 0;
- ``allowed``: a TRADE entry that is not blocked;
- ``blocked``: no signal this bar (s = 0): blocked by the barrier rule (long: P(peak) > block),
  arbitration HOLD, no direction, or an unusable barrier probability (NaN or outside [0, 1]);
  sizing treats it like any zero signal (target 0 through the no-trade band);
- ``hold``: no order at all this bar, the position is kept as is: a would-be entry stopped by the
  spread gate (spread > spread_max_bps, or ≤ 0 / NaN: crossed or missing quote; quote_age_bars >
  quote_age_max_bars or NaN), or an unknown (non-finite) current position;
- a symbol held by the data (``data_hold``: a split-like jump without an adjustments entry, at or before the bar) is
  ``hold`` whatever its signal, exits included (decision): its prices may be on another share basis than the
  book (an unadjusted 1:4 reverse split prices ×4), so any order sized or filled on them books a fake P&L
  (an exit at the next open sold the pre-split quantity at 4× the price: +9.7 % of equity). The position
  keeps its last good mark (stale) until an adjustments entry explains the jump or it leaves the window.

The quote's age comes from the bar: the source's quote time where it has one, else the bars since the quote
last changed, so a real feed's last quote repeated bar after bar goes stale. An *estimated* spread (a file
without bid/ask; Abdi–Ranaldo from high/low/close, ``assets/bars/quality.py``) is not a quote (decision): it is
as fresh as the trades it was estimated from (its age is the bars since the symbol last traded) and passes
the same ``spread_max_bps`` test; ``gating.allow_estimated_spread: false`` holds every entry that has only an
estimate (reason ``estimated_spread``). Exits are never held by the spread gate.
Block wins over prefer when both hold (the conservative reading). The size multiplier is
1 − P(against) for allowed/preferred (long: 1 − P(peak)), 0 for every other gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from CONFIG.config_loader import get_cfg

ALLOWED, PREFERRED, BLOCKED, EXIT, HOLD = "allowed", "preferred", "blocked", "exit", "hold"
GATES = (ALLOWED, PREFERRED, BLOCKED, EXIT, HOLD)


@dataclass(frozen=True)
class Params:
    """Gating settings (``gating.*``)."""

    block_threshold: float
    prefer_threshold: float
    exit_threshold: float
    spread_max_bps: float
    quote_age_max_bars: float
    allow_estimated_spread: bool = True

    @classmethod
    def from_cfg(cls) -> Params:
        return cls(
            block_threshold=float(get_cfg("gating.block_threshold")),
            prefer_threshold=float(get_cfg("gating.prefer_threshold")),
            exit_threshold=float(get_cfg("gating.exit_threshold")),
            spread_max_bps=float(get_cfg("gating.spread_max_bps")),
            quote_age_max_bars=float(get_cfg("gating.quote_age_max_bars")),
            allow_estimated_spread=bool(get_cfg("gating.allow_estimated_spread")),
        )


@dataclass(frozen=True)
class Gates:
    """Per symbol (N,): gate, reason, size multiplier in [0, 1], signed signal (bps), exit flag."""

    gate: np.ndarray
    reason: np.ndarray
    size_mult: np.ndarray
    signal_bps: np.ndarray
    is_exit: np.ndarray

    @property
    def hold(self) -> np.ndarray:
        """Symbols that get no order this bar (the position is kept)."""
        return self.gate == HOLD


def _prob_ok(p: np.ndarray) -> np.ndarray:
    return np.isfinite(p) & (p >= 0.0) & (p <= 1.0)


def _side_text(d: np.ndarray, long_text: str, short_text: str) -> np.ndarray:
    return np.where(d > 0, long_text, short_text)


def gate_signals(direction: np.ndarray, final_score_bps: np.ndarray, decision: np.ndarray,
                 reserve_bps: np.ndarray, p_peak: np.ndarray, p_valley: np.ndarray, current_qty: np.ndarray,
                 spread_bps: np.ndarray, quote_age_bars: np.ndarray, params: Params | None = None, *,
                 spread_estimated: np.ndarray | None = None, data_hold: np.ndarray | None = None) -> Gates:
    """The gate of every symbol; ``decision`` holds the strings TRADE / HOLD of arbitration. ``spread_estimated``
    and ``data_hold`` (N,) bool, default all False."""
    params = params or Params.from_cfg()
    d = np.sign(np.nan_to_num(np.asarray(direction, dtype=float))).astype(int)
    f = np.asarray(final_score_bps, dtype=float)
    pk, pv = np.asarray(p_peak, dtype=float), np.asarray(p_valley, dtype=float)
    qty = np.asarray(current_qty, dtype=float)
    spread, age = np.asarray(spread_bps, dtype=float), np.asarray(quote_age_bars, dtype=float)
    trade = np.asarray(decision).astype(str) == "TRADE"
    with np.errstate(invalid="ignore"):
        exit_long = (qty > 0) & _prob_ok(pk) & (pk > params.exit_threshold)
        exit_short = (qty < 0) & _prob_ok(pv) & (pv > params.exit_threshold)
        p_against = np.where(d > 0, pk, pv)
        p_for = np.where(d > 0, pv, pk)
        probs_ok = _prob_ok(pk) & _prob_ok(pv)
        has_signal = (d != 0) & np.isfinite(f)
        prefer = has_signal & probs_ok & (f > 0.0) & (p_for > params.prefer_threshold)
        block = has_signal & probs_ok & (p_against > params.block_threshold)
        passes = has_signal & probs_ok & (trade | prefer) & ~block
        wide = ~(np.isfinite(spread) & (spread > 0.0)) | (spread > params.spread_max_bps)
        stale = ~np.isfinite(age) | (age > params.quote_age_max_bars)
        below = ~np.isfinite(np.asarray(reserve_bps, dtype=float)) | (f < np.asarray(reserve_bps, dtype=float))
    n = len(d)
    estimated = np.zeros(n, bool) if spread_estimated is None else np.asarray(spread_estimated, dtype=bool)
    no_estimate = estimated & (not params.allow_estimated_spread)
    data = np.zeros(n, bool) if data_hold is None else np.asarray(data_hold, dtype=bool)
    is_exit = (exit_long | exit_short) & ~data  # a data hold keeps the position as is: no exit either
    bad_qty = ~np.isfinite(qty)
    held = (passes & (wide | stale | no_estimate) & ~is_exit) | data
    conds = [is_exit, bad_qty & ~is_exit, held, passes & prefer, passes]
    gate = np.select(conds, [EXIT, HOLD, HOLD, PREFERRED, ALLOWED], default=BLOCKED).astype(str)
    reason = _reasons(d, has_signal, probs_ok, block, below, exit_long, wide, stale, conds,
                      estimated=estimated, no_estimate=no_estimate, data=data)
    live = (gate == ALLOWED) | (gate == PREFERRED)
    mult = np.where(live, np.clip(1.0 - np.where(live, p_against, 0.0), 0.0, 1.0), 0.0)
    signal = np.where(live, d * np.where(live, f, 0.0), 0.0)
    return Gates(gate=gate, reason=reason, size_mult=mult, signal_bps=signal, is_exit=is_exit)


def _reasons(d: np.ndarray, has_signal: np.ndarray, probs_ok: np.ndarray,
             block: np.ndarray, below: np.ndarray, exit_long: np.ndarray,
             wide: np.ndarray, stale: np.ndarray, conds: list[np.ndarray], *, estimated: np.ndarray,
             no_estimate: np.ndarray, data: np.ndarray) -> np.ndarray:
    """One readable reason per symbol, chosen in the same precedence as the gate (a held entry lists every
    cause, ``|``-joined: data_hold, estimated_spread, spread (or spread(estimated)), stale_quote)."""
    is_exit, bad_qty, held, preferred, allowed = conds
    parts = [(data, "data_hold"), (no_estimate, "estimated_spread"), (wide & ~estimated, "spread"),
             (wide & estimated, "spread(estimated)"), (stale, "stale_quote")]
    spread_reason = np.full(len(d), "", dtype=object)
    for mask, text in parts:
        spread_reason = np.where(mask, np.where(spread_reason == "", text, spread_reason + "|" + text), spread_reason)
    prefer_reason = np.where(below, _side_text(d, "prefer_long:p_valley|below_reserve",
                                               "prefer_short:p_peak|below_reserve"),
                             _side_text(d, "prefer_long:p_valley", "prefer_short:p_peak"))
    blocked_reason = np.select(
        [~has_signal, ~probs_ok, block],
        ["no_signal", "bad_barrier_prob", _side_text(d, "block_long:p_peak", "block_short:p_valley")],
        default="arbitration_hold",
    )
    return np.select(
        [is_exit, bad_qty, held, preferred, allowed],
        [np.where(exit_long, "exit_long:p_peak", "exit_short:p_valley"), "bad_position", spread_reason,
         prefer_reason, "allowed"],
        default=blocked_reason,
    ).astype(str)
