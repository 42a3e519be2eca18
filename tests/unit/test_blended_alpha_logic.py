"""SPEC §4.2 blending: ridge risk parity, temperature, blend with missing families."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from assets.blended_alpha.logic import (
    Params,
    apply_temperature,
    blend,
    horizon_weights,
    ridge_weights,
    temperature_for,
)

SIGMA_PAIR = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_ridge_correlated_pair_by_hand() -> None:
    # A = Σ + 0.15 I. Equal μ: the pair block [[1.15,.8],[.8,1.15]]·x = 1 → x = 1/1.95 = 20/39 each;
    # the lone family 1/1.15 = 20/23. w ∝ (1/39, 1/39, 1/23) → (23, 23, 39)/85 = .270588, .270588, .458824
    w, reason = ridge_weights(np.full(3, 0.05), SIGMA_PAIR, 0.15)
    assert reason == "ridge"
    np.testing.assert_allclose(w, [23 / 85, 23 / 85, 39 / 85], atol=1e-12)


def test_ridge_negative_weight_clipped() -> None:
    # Σ pair ρ = .9, μ = (.1, .01, .05), λ = .15: det = 1.15² − .81 = .5125
    # x1 = (1.15·.1 − .9·.01)/.5125 = .106/.5125; x2 = (.0115 − .09)/.5125 < 0 → 0; x3 = .05/1.15
    s = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w, reason = ridge_weights(np.array([0.1, 0.01, 0.05]), s, 0.15)
    x1, x3 = 0.106 / 0.5125, 0.05 / 1.15
    assert reason == "ridge"
    np.testing.assert_allclose(w, [x1 / (x1 + x3), 0.0, x3 / (x1 + x3)], atol=1e-12)  # .826302, 0, .173698


def test_ridge_fallbacks() -> None:
    assert ridge_weights(np.array([0.3]), np.ones((1, 1)), 0.15) == (pytest.approx([1.0]), "single")
    w, reason = ridge_weights(np.array([0.05, 0.02]), np.ones((2, 2)), 0.0)  # singular, λ = 0
    assert reason == "equal:singular" and w.tolist() == [0.5, 0.5]
    w, reason = ridge_weights(np.array([0.05, 0.02]), np.array([[1.0, np.nan], [np.nan, 1.0]]), 0.15)
    assert reason == "equal:nonfinite" and w.tolist() == [0.5, 0.5]
    w, reason = ridge_weights(np.array([np.nan, 0.02]), np.eye(2), 0.15)
    assert reason == "equal:nonfinite"
    w, reason = ridge_weights(np.zeros(3), np.eye(3), 0.15)
    assert reason == "equal:all_zero" and np.allclose(w, 1 / 3)
    assert ridge_weights(np.zeros(0), np.zeros((0, 0)), 0.15)[1] == "empty"
    with pytest.raises(ValueError):
        ridge_weights(np.ones(2), np.eye(3), 0.15)


def test_all_mu_at_floor_gives_valid_weights() -> None:
    w, reason = ridge_weights(np.full(3, 0.01), np.eye(3), 0.15)
    assert reason == "ridge" and np.allclose(w, 1 / 3)
    w, _ = ridge_weights(np.full(3, 0.01), SIGMA_PAIR, 0.15)  # same as equal μ: floor is just a scale
    np.testing.assert_allclose(w, [23 / 85, 23 / 85, 39 / 85], atol=1e-12)


def test_temperature_worked_example() -> None:
    # .8^(4/3) = .742654, .2^(4/3) = .116961, sum .859615 → .864, .136
    np.testing.assert_allclose(apply_temperature(np.array([0.8, 0.2]), 0.75), [0.864, 0.136], atol=5e-4)
    np.testing.assert_array_equal(apply_temperature(np.array([0.8, 0.2]), 1.0), [0.8, 0.2])
    with pytest.raises(ValueError):
        apply_temperature(np.array([1.0]), 0.0)


def test_temperature_for_config_and_params() -> None:
    assert [temperature_for(h) for h in (5, 10, 15, 30, 60)] == [0.75, 0.85, 0.90, 1.0, 1.0]
    p = Params(ridge_lambda=0.15, temperature=((20, 0.5),))
    assert temperature_for(20, p) == 0.5 and temperature_for(5, p) == 1.0


def test_horizon_weights_ridge_then_temperature() -> None:
    p = Params(ridge_lambda=0.15, temperature=((5, 0.75),))
    w, reason = horizon_weights(np.full(3, 0.05), SIGMA_PAIR, 5, p)
    np.testing.assert_allclose(w, apply_temperature(np.array([23, 23, 39]) / 85, 0.75))
    assert reason == "ridge"


def test_blend_by_hand_with_missing_families() -> None:
    # w = (.75, .25), scale = (.001, .002)
    z = np.array([[[2.0, -1.0]], [[np.nan, 1.0]], [[np.nan, np.nan]], [[1.0, np.nan]]])
    w = np.array([[0.75, 0.25]])
    scale = np.array([[0.001, 0.002]])
    a = blend(z, w, scale)
    # s0: .75·2·.001 + .25·(−1)·.002 = .0015 − .0005 = .001
    # s1: family 1 missing → weights renormalised over family 2 → 1·1·.002
    # s2: none present → NaN; s3: .75/.75 · 1 · .001
    np.testing.assert_allclose(a[:, 0], [0.001, 0.002, np.nan, 0.001], atol=1e-15)
    a0 = blend(np.array([[[np.nan, 1.0]]]), np.array([[1.0, 0.0]]), scale)  # only a zero-weight family
    assert np.isnan(a0[0, 0])
    inf_scale = blend(z[:1], w, np.array([[0.001, np.inf]]))  # bad scale → family left out
    assert inf_scale[0, 0] == pytest.approx(0.002)
    with pytest.raises(ValueError):
        blend(z[:, :, :1], w, scale)


def _psd(a: np.ndarray) -> np.ndarray:
    c = a @ a.T
    d = np.sqrt(np.clip(np.diag(c), 1e-12, None))
    return c / np.outer(d, d)


@settings(max_examples=80, deadline=None)
@given(m=arrays(float, st.integers(1, 5), elements=st.floats(0.0, 0.5)),
       seed=st.integers(0, 2**16), lam=st.floats(0.0, 1.0), t=st.floats(0.3, 1.0))
def test_weights_on_simplex(m: np.ndarray, seed: int, lam: float, t: float) -> None:
    f = m.size
    sigma = _psd(np.random.default_rng(seed).normal(size=(f, f)))
    w, _ = ridge_weights(m, sigma, lam)
    for ww in (w, apply_temperature(w, t)):
        assert np.all(ww >= 0) and ww.sum() == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(z=arrays(float, (6, 2, 3), elements=st.one_of(st.floats(-3, 3), st.just(np.nan))))
def test_blend_permutes_with_symbols(z: np.ndarray) -> None:
    w = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    scale = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    perm = np.array([5, 3, 1, 0, 2, 4])
    np.testing.assert_array_equal(blend(z[perm], w, scale), blend(z, w, scale)[perm])
    np.testing.assert_array_equal(blend(-z, w, scale), -blend(z, w, scale))
