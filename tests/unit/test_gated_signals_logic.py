"""SPEC §4.4 barrier gating: strict thresholds, mirrors for shorts, exits, spread gate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.gated_signals.logic import GATES, Gates, Params, gate_signals

P = Params(block_threshold=0.60, prefer_threshold=0.55, exit_threshold=0.65, spread_max_bps=12.0,
           quote_age_max_bars=1.0)


def gate(direction=1, final=10.0, decision="TRADE", reserve=3.0, p_peak=0.3, p_valley=0.3, qty=0.0,
         spread=2.0, age=0.0, params: Params = P) -> Gates:
    """One-symbol gate with a neutral default (allowed long, final 10 bps)."""
    def a(x):
        return np.atleast_1d(np.asarray(x))
    return gate_signals(a(direction), a(final), a(decision), a(reserve), a(p_peak), a(p_valley), a(qty),
                        a(spread), a(age), params)


def one(g: Gates) -> tuple[str, str, float, float, bool]:
    return str(g.gate[0]), str(g.reason[0]), float(g.size_mult[0]), float(g.signal_bps[0]), bool(g.is_exit[0])


def test_params_from_cfg() -> None:
    assert Params.from_cfg() == dataclasses.replace(P, quote_age_max_bars=3.0)


def test_allowed_long_and_short_size_reduction() -> None:
    # long: size × (1 − P(peak)) = 1 − .3 = .7; s = +1 · 10
    assert one(gate(p_peak=0.3)) == ("allowed", "allowed", pytest.approx(0.7), 10.0, False)
    # short: size × (1 − P(valley)) = 1 − .2 = .8; s = −1 · 10
    assert one(gate(direction=-1, p_valley=0.2, p_peak=0.1)) == ("allowed", "allowed", pytest.approx(0.8),
                                                                   -10.0, False)


def test_block_threshold_strict_long_and_short() -> None:
    assert gate(p_peak=0.60).gate[0] == "allowed"  # not > .60
    assert one(gate(p_peak=0.6001)) == ("blocked", "block_long:p_peak", 0.0, 0.0, False)
    assert gate(direction=-1, p_valley=0.60).gate[0] == "allowed"
    assert one(gate(direction=-1, p_valley=0.6001)) == ("blocked", "block_short:p_valley", 0.0, 0.0, False)


def test_prefer_threshold_strict_passes_below_reserve() -> None:
    # arbitration HOLD (final 2 < reserve 3), P(valley) just above .55 → preferred long, size 1 − .3
    g = one(gate(decision="HOLD", final=2.0, p_valley=0.5501))
    assert g == ("preferred", "prefer_long:p_valley|below_reserve", pytest.approx(0.7), 2.0, False)
    assert one(gate(decision="HOLD", final=2.0, p_valley=0.55))[:2] == ("blocked", "arbitration_hold")
    # mirror: short prefers on P(peak)
    g = one(gate(direction=-1, decision="HOLD", final=2.0, p_peak=0.5501, p_valley=0.1))
    assert g == ("preferred", "prefer_short:p_peak|below_reserve", pytest.approx(0.9), -2.0, False)
    # a TRADE that also meets the prefer condition is recorded as preferred
    assert one(gate(p_valley=0.7))[:2] == ("preferred", "prefer_long:p_valley")


def test_prefer_needs_a_positive_finite_final_score() -> None:
    assert gate(decision="HOLD", final=0.0, p_valley=0.9).gate[0] == "blocked"
    assert gate(decision="HOLD", final=-1.0, p_valley=0.9).gate[0] == "blocked"
    assert one(gate(decision="HOLD", final=np.nan, direction=0, p_valley=0.9))[:2] == ("blocked", "no_signal")


def test_block_wins_over_prefer() -> None:
    assert gate(p_peak=0.61, p_valley=0.58).gate[0] == "blocked"


def test_exit_threshold_strict_and_mirror() -> None:
    # an open long with no signal: P(peak) .65 → not an exit; .6501 → exit
    assert gate(direction=0, decision="HOLD", final=np.nan, qty=100, p_peak=0.65).gate[0] == "blocked"
    assert one(gate(direction=0, decision="HOLD", final=np.nan, qty=100, p_peak=0.6501)) == (
        "exit", "exit_long:p_peak", 0.0, 0.0, True)
    assert one(gate(direction=0, decision="HOLD", final=np.nan, qty=-100, p_valley=0.6501)) == (
        "exit", "exit_short:p_valley", 0.0, 0.0, True)
    # P(valley) does not exit a long, P(peak) does not exit a short, nothing exits a flat book
    assert not gate(qty=100, p_valley=0.9).is_exit[0]
    assert not gate(qty=-100, p_peak=0.9, direction=-1).is_exit[0]
    assert not gate(qty=0, p_peak=0.9).is_exit[0]


def test_exit_wins_over_an_entry_and_is_never_held_by_spread() -> None:
    assert one(gate(qty=100, p_peak=0.7, spread=50.0, age=9.0))[0] == "exit"
    assert one(gate(qty=100, direction=-1, p_peak=0.7, p_valley=0.1))[0] == "exit"  # no flip the same bar


def test_spread_gate_edges() -> None:
    assert gate(spread=12.0).gate[0] == "allowed"
    assert one(gate(spread=12.01))[:2] == ("hold", "spread")
    assert gate(age=1.0).gate[0] == "allowed"
    assert one(gate(age=2.0))[:2] == ("hold", "stale_quote")
    assert one(gate(age=2.0, spread=20.0))[1] == "spread|stale_quote"
    for bad in (0.0, -1.0, np.nan):
        assert gate(spread=bad).gate[0] == "hold"
    assert gate(age=np.nan).gate[0] == "hold"
    h = gate(spread=20.0)
    assert h.signal_bps[0] == 0.0 and h.size_mult[0] == 0.0 and h.hold[0]


def test_spread_gate_does_not_hold_a_blocked_symbol() -> None:
    assert gate(spread=50.0, decision="HOLD", final=1.0).gate[0] == "blocked"


def test_bad_probabilities_and_position() -> None:
    assert one(gate(p_peak=np.nan))[:2] == ("blocked", "bad_barrier_prob")
    assert one(gate(p_valley=1.5))[:2] == ("blocked", "bad_barrier_prob")
    assert not gate(qty=100, p_peak=np.nan).is_exit[0]
    assert one(gate(qty=np.nan))[:2] == ("hold", "bad_position")


def test_vectorised_mixed_book() -> None:
    g = gate_signals(np.array([1, -1, 1, 0]), np.array([10.0, 8.0, 2.0, np.nan]),
                     np.array(["TRADE", "TRADE", "HOLD", "HOLD"]), np.array([3.0, 3.0, 3.0, np.nan]),
                     np.array([0.2, 0.3, 0.3, 0.9]), np.array([0.3, 0.62, 0.56, 0.1]),
                     np.array([0.0, 0.0, 0.0, 50.0]), np.full(4, 2.0), np.zeros(4), P)
    assert g.gate.tolist() == ["allowed", "blocked", "preferred", "exit"]
    np.testing.assert_allclose(g.signal_bps, [10.0, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(g.size_mult, [0.8, 0.0, 0.7, 0.0])


prob = st.one_of(st.floats(0, 1), st.just(np.nan))
row = st.tuples(st.sampled_from([-1, 0, 1]), st.one_of(st.floats(-20, 40), st.just(np.nan)),
                st.sampled_from(["TRADE", "HOLD"]), st.floats(1, 10), prob, prob,
                st.sampled_from([-100.0, 0.0, 100.0]), st.floats(0, 20), st.sampled_from([0.0, 1.0, 2.0]))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=12), seed=st.integers(0, 1000))
def test_properties_range_mirror_permutation(rows: list, seed: int) -> None:
    cols = [np.array(c) for c in zip(*rows, strict=True)]
    d, f, dec, res, pk, pv, q, sp, age = cols
    g = gate_signals(d, f, dec, res, pk, pv, q, sp, age, P)
    assert set(g.gate.tolist()) <= set(GATES)
    assert np.all((g.size_mult >= 0) & (g.size_mult <= 1))
    live = np.isin(g.gate, ["allowed", "preferred"])
    assert np.all(g.signal_bps[~live] == 0) and np.all(np.isfinite(g.signal_bps))
    assert np.all(g.is_exit == (g.gate == "exit"))
    m = gate_signals(-d, f, dec, res, pv, pk, -q, sp, age, P)  # mirror: short ↔ long, peak ↔ valley
    np.testing.assert_array_equal(m.gate, g.gate)
    np.testing.assert_array_equal(m.signal_bps, -g.signal_bps)
    np.testing.assert_array_equal(m.size_mult, g.size_mult)
    perm = np.random.default_rng(seed).permutation(d.size)
    p = gate_signals(*(c[perm] for c in cols), P)
    for field in ("gate", "reason", "size_mult", "signal_bps", "is_exit"):
        np.testing.assert_array_equal(getattr(p, field), getattr(g, field)[perm])


def test_a_quote_older_than_the_limit_holds_an_entry_and_never_an_exit() -> None:
    assert gate(age=1.0).gate[0] == "allowed" and one(gate(age=1.01))[:2] == ("hold", "stale_quote")
    assert one(gate(age=np.nan))[:2] == ("hold", "stale_quote")  # unknown age: stale
    assert gate(age=50.0, qty=100.0, p_peak=0.7).gate[0] == "exit"


def test_an_estimated_spread_is_gated_like_a_quote_or_held_by_choice() -> None:
    def g(spread=2.0, age=0.0, allow=True):
        return gate_signals(*(np.atleast_1d(x) for x in (1, 10.0, "TRADE", 3.0, 0.3, 0.3, 0.0, spread, age)),
                            dataclasses.replace(P, allow_estimated_spread=allow), spread_estimated=np.array([True]))
    assert one(g())[:2] == ("allowed", "allowed")
    assert one(g(spread=20.0))[:2] == ("hold", "spread(estimated)")
    assert one(g(allow=False))[:2] == ("hold", "estimated_spread")


def test_a_data_hold_stops_every_order_exits_included() -> None:
    # an exit of a held name fills at the next open on the suspected new basis (a 1:4 reverse split: ×4 the
    # price for the pre-split quantity): the position is kept as is, no exit, no zero-signal target
    def g(qty=0.0, p_peak=0.3, decision="TRADE", hold=True):
        return gate_signals(*(np.atleast_1d(x) for x in (1, 10.0, decision, 3.0, p_peak, 0.3, qty, 2.0, 0.0)), P,
                            data_hold=np.array([hold]))
    assert one(g())[:2] == ("hold", "data_hold")
    assert one(g(qty=50.0, p_peak=0.7))[:2] == ("hold", "data_hold")
    assert not g(qty=50.0, p_peak=0.7).is_exit[0]
    assert one(g(qty=50.0, decision="HOLD"))[:2] == ("hold", "data_hold")  # not blocked (target 0 = an exit)
    assert one(g(qty=50.0, p_peak=0.7, hold=False))[:2] == ("exit", "exit_long:p_peak")
