"""SPEC §4.3 cost arbitration: cost terms, net, winner / softmax selection, reserve, bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from assets.arbitrated_scores.logic import Params, arbitrate

H = np.array([5.0, 10.0, 15.0, 30.0, 60.0])
DEFAULT = Params(mode="winner", k1_spread=1.0, k2_vol=0.15, k3_impact=1.0, impact_y=1.0,
                 impact_ref_weight=0.05, winner_share=0.7, runner_up_share=0.3, softmax_beta=2.0,
                 reserve_base_bps=2.0, reserve_spread_mult=0.5)
# σ√(h/5)·k2 with σ = 10: 1.5·(1, √2, √3, √6, √12) = 1.5, 2.12132, 2.59808, 3.67423, 5.19615
VOL = 1.5 * np.sqrt(H / 5.0)
# impact: q = .05·1e6/100 = 500 shares; √(500/1e6) = .0223607; × σ_daily 150 = 3.35410
IMPACT = 150.0 * math.sqrt(500.0 / 1e6)


def run(alpha: np.ndarray, params: Params = DEFAULT, horizons: np.ndarray = H, **kw):
    """arbitrate() with the worked-example market (spread 2, σ 10, σ_daily 150, ADV 1e6, price 100)."""
    alpha = np.atleast_2d(np.asarray(alpha, dtype=float))
    n = alpha.shape[0]
    base = dict(spread_bps=np.full(n, 2.0), sigma_bps=np.full(n, 10.0), sigma_daily_bps=np.full(n, 150.0),
                adv_shares=np.full(n, 1e6), price=np.full(n, 100.0), portfolio_value=1e6)
    base.update(kw)
    return arbitrate(alpha, horizons, 5, params=params, **base)


def test_params_from_cfg_null_ref_weight_means_max_weight() -> None:
    assert Params.from_cfg() == DEFAULT


def test_cost_terms_and_net_by_hand() -> None:
    a = run([20.0, 15.0, 10.0, 5.0, 3.0])
    np.testing.assert_allclose(a.spread_cost_bps[0], 2.0)
    np.testing.assert_allclose(a.vol_cost_bps[0], VOL)
    np.testing.assert_allclose(a.impact_cost_bps[0], IMPACT)
    assert IMPACT == pytest.approx(3.354102, abs=1e-6)
    # net = |α| − 2 − vol − 3.35410 = 13.14590, 7.52458, 2.04782, −4.02834, −7.55025
    np.testing.assert_allclose(a.net_bps[0], [13.145898, 7.524578, 2.047822, -4.028337, -7.550254], atol=1e-6)
    np.testing.assert_allclose(a.cost_bps[0], a.spread_cost_bps[0] + a.vol_cost_bps[0] + a.impact_cost_bps[0])


def test_winner_with_agreeing_positive_runner_up() -> None:
    # final = .7·13.14590 + .3·7.52458 = 9.20213 + 2.25737 = 11.45950; reserve = 2 + .5·2 = 3 → TRADE
    a = run([20.0, 15.0, 10.0, 5.0, 3.0])
    assert a.final_score_bps[0] == pytest.approx(11.459502, abs=1e-6)
    assert a.selected_h_min[0] == 5 and a.runner_up_h_min[0] == 10
    np.testing.assert_allclose(a.horizon_weight[0], [0.7, 0.3, 0, 0, 0])
    assert a.direction[0] == 1 and a.reserve_bps[0] == 3.0
    assert a.decision[0] == "TRADE" and a.reason[0] == "trade"


def test_winner_takes_all_when_runner_up_disagrees_or_is_negative() -> None:
    a = run(np.array([[20.0, -15.0, 10.0, 5.0, 3.0], [20.0, 7.0, 3.0, 1.0, 1.0]]))
    # row 0: runner-up 10m has net 7.52 but the opposite sign; row 1: 10m net 7 − 7.47542 < 0
    np.testing.assert_allclose(a.final_score_bps, [13.145898, 13.145898], atol=1e-6)
    assert np.isnan(a.runner_up_h_min).all()
    np.testing.assert_allclose(a.horizon_weight[:, 0], 1.0)


def test_reserve_edge_is_inclusive() -> None:
    # only the spread costs: net = |α| − 2; reserve = 2 + .5·2 = 3
    p = dataclasses.replace(DEFAULT, k2_vol=0.0, k3_impact=0.0)
    a = run(np.array([[5.0], [4.99], [-5.0]]), p, horizons=np.array([5.0]))
    assert a.final_score_bps.tolist() == [3.0, pytest.approx(2.99), 3.0]
    assert a.decision.tolist() == ["TRADE", "HOLD", "TRADE"]
    assert a.reason[1] == "below_reserve" and a.direction.tolist() == [1, 1, -1]


def test_softmax_by_hand() -> None:
    # k2 = k3 = 0, spread 2: net = |α| − 2. h = 5, 20 → σ√(h/5) = 10, 20; β = 2
    p = dataclasses.replace(DEFAULT, mode="softmax", k2_vol=0.0, k3_impact=0.0)
    alpha = np.array([[12.0, 22.0], [22.0, 12.0], [12.0, -22.0]])
    a = run(alpha, p, horizons=np.array([5.0, 20.0]))
    # row 0: net 10, 20 → x = 2·10/10, 2·20/20 = 2, 2 → w = .5, .5 → final 15, long
    # row 1: net 20, 10 → x = 4, 1 → w = 1/(1+e^−3) = .952574 → final 20·.952574 + 10·.047426 = 19.525741
    # row 2: net 10, 20 (short) → S = .5·10 − .5·20 = −5 → short; final = min(15, |S|) = 5
    w1 = 1.0 / (1.0 + math.exp(-3.0))
    np.testing.assert_allclose(a.horizon_weight[1], [w1, 1 - w1])
    np.testing.assert_allclose(a.final_score_bps, [15.0, 20 * w1 + 10 * (1 - w1), 5.0])
    assert a.direction.tolist() == [1, 1, -1] and a.decision.tolist() == ["TRADE"] * 3
    assert a.selected_h_min.tolist() == [5.0, 5.0, 5.0]  # ties → the shorter horizon


def test_softmax_all_costs_dominate_holds() -> None:
    p = dataclasses.replace(DEFAULT, mode="softmax")
    a = run(np.array([[1.0, 1.0, 1.0, 1.0, 1.0]]), p)
    assert a.final_score_bps[0] < 0 and a.decision[0] == "HOLD" and a.direction[0] == 1


def test_bad_alpha_symbols_hold_rest_trade() -> None:
    good = [20.0, 15.0, 10.0, 5.0, 3.0]
    alpha = np.array([good, [np.nan] * 5, [np.inf, 1, 1, 1, 1], good, [np.nan, 15.0, np.nan, np.nan, np.nan],
                      [-np.inf] * 5])
    for mode in ("winner", "softmax"):
        a = run(alpha, dataclasses.replace(DEFAULT, mode=mode))
        assert a.decision.tolist() == ["TRADE", "HOLD", "HOLD", "TRADE", "TRADE", "HOLD"]
        assert a.reason[1] == "no_alpha" and a.reason[2] == "bad_alpha" and a.reason[5] == "bad_alpha"
        for i in (1, 2, 5):
            assert np.isnan(a.final_score_bps[i]) and a.direction[i] == 0 and np.isnan(a.net_bps[i]).all()
        # row 4: only the 10m horizon is present: net 7.52458, winner takes all
        assert a.final_score_bps[4] == pytest.approx(7.524578, abs=1e-6) and a.selected_h_min[4] == 10


@pytest.mark.parametrize(("field", "value", "code"), [
    ("sigma_bps", 0.0, "bad_sigma"), ("sigma_bps", np.nan, "bad_sigma"),
    ("adv_shares", 0.0, "bad_adv"), ("adv_shares", np.nan, "bad_adv"),
    ("spread_bps", 0.0, "bad_spread"), ("spread_bps", -1.0, "bad_spread"), ("spread_bps", np.nan, "bad_spread"),
    ("sigma_daily_bps", 0.0, "bad_sigma_daily"), ("price", -5.0, "bad_price"),
])
def test_bad_market_inputs_hold_only_that_symbol(field: str, value: float, code: str) -> None:
    alpha = np.tile([20.0, 15.0, 10.0, 5.0, 3.0], (3, 1))
    vec = {"spread_bps": 2.0, "sigma_bps": 10.0, "adv_shares": 1e6, "sigma_daily_bps": 150.0, "price": 100.0}[field]
    arr = np.full(3, vec)
    arr[1] = value
    a = run(alpha, **{field: arr})
    assert a.decision.tolist() == ["TRADE", "HOLD", "TRADE"]
    assert a.reason[1] == code and np.isnan(a.final_score_bps[1]) and np.isnan(a.reserve_bps[1])
    assert np.isnan(a.cost_bps[1]).all() and a.direction[1] == 0


def test_several_bad_inputs_are_all_named_and_bad_pv_holds_all() -> None:
    a = run(np.array([[np.nan] * 5]), sigma_bps=np.array([0.0]), adv_shares=np.array([np.nan]))
    assert a.reason[0] == "no_alpha|bad_sigma|bad_adv"
    a = run(np.tile([20.0, 15.0, 10.0, 5.0, 3.0], (2, 1)), portfolio_value=float("nan"))
    assert a.decision.tolist() == ["HOLD", "HOLD"] and a.reason[0] == "bad_portfolio_value"


def test_shape_and_horizon_errors_raise() -> None:
    with pytest.raises(ValueError):
        arbitrate(np.ones((2, 3)), H, 5, np.ones(2), np.ones(2), np.ones(2), np.ones(2), np.ones(2), 1.0, DEFAULT)
    with pytest.raises(ValueError):
        arbitrate(np.ones((1, 1)), np.array([7.0]), 5, np.ones(1), np.ones(1), np.ones(1), np.ones(1),
                  np.ones(1), 1.0, DEFAULT)
    with pytest.raises(ValueError):
        run([1.0] * 5, dataclasses.replace(DEFAULT, mode="vote"))


alpha_rows = arrays(float, st.tuples(st.integers(1, 8), st.just(5)),
                    elements=st.one_of(st.floats(-60, 60), st.just(np.nan)))


@settings(max_examples=60, deadline=None)
@given(alpha=alpha_rows, mode=st.sampled_from(["winner", "softmax"]), seed=st.integers(0, 1000))
def test_symmetry_and_permutation(alpha: np.ndarray, mode: str, seed: int) -> None:
    p = dataclasses.replace(DEFAULT, mode=mode)
    n = alpha.shape[0]
    rng = np.random.default_rng(seed)
    kw = dict(spread_bps=rng.uniform(0.5, 10, n), sigma_bps=rng.uniform(2, 30, n),
              sigma_daily_bps=rng.uniform(50, 400, n), adv_shares=rng.uniform(1e5, 1e7, n),
              price=rng.uniform(10, 500, n))
    a = run(alpha, p, **kw)
    b = run(-alpha, p, **kw)
    np.testing.assert_array_equal(a.final_score_bps, b.final_score_bps)
    np.testing.assert_array_equal(a.direction, -b.direction)
    np.testing.assert_array_equal(a.decision, b.decision)
    perm = rng.permutation(n)
    c = run(alpha[perm], p, **{k: v[perm] for k, v in kw.items()})
    for f in ("final_score_bps", "direction", "decision", "reason", "net_bps", "horizon_weight", "reserve_bps"):
        np.testing.assert_array_equal(getattr(c, f), getattr(a, f)[perm])
    trade = a.decision == "TRADE"
    assert np.all(a.final_score_bps[trade] >= a.reserve_bps[trade]) and np.all(a.direction[trade] != 0)
