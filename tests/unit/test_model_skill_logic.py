"""SPEC §4.2 inputs: Spearman IC, rolling/shrunk IC, μ and the family correlation Σ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr

from assets.model_skill.logic import (
    Params,
    average_rank,
    family_correlation,
    family_mu,
    mu,
    rolling_ic,
    shrunk_ic,
    spearman_ic,
)

P = Params(ic_window_bars=3, ic_prior_bars=20, cost_penalty=0.5, mu_floor=0.01)


def test_params_from_cfg() -> None:
    p = Params.from_cfg()
    assert (p.ic_window_bars, p.ic_prior_bars, p.cost_penalty, p.mu_floor) == (50, 20, 0.5, 0.01)


def test_average_rank_ties() -> None:
    np.testing.assert_array_equal(average_rank(np.array([10.0, 20.0, 20.0, 5.0])), [2.0, 3.5, 3.5, 1.0])


def test_spearman_with_ties_by_hand() -> None:
    # ranks p = 1, 2.5, 2.5, 4 (centred −1.5, 0, 0, 1.5); r = 1..4 (centred −1.5, −.5, .5, 1.5)
    # dot 4.5, |p|² 4.5, |r|² 5 → 4.5 / √22.5 = 0.948683
    assert spearman_ic(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
        4.5 / math.sqrt(22.5), abs=1e-12)
    assert spearman_ic(np.arange(5.0), -np.arange(5.0) ** 3) == pytest.approx(-1.0)


def test_spearman_ignores_nan_pairs_and_needs_three() -> None:
    p = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    r = np.array([1.0, np.nan, 5.0, 2.0, 3.0])
    assert spearman_ic(p, r) == pytest.approx(1.0)  # valid pairs (1,1), (3,2), (4,3)
    assert math.isnan(spearman_ic(p[:4], r[:4]))  # only 2 valid pairs
    assert math.isnan(spearman_ic(np.ones(5), np.arange(5.0)))  # zero variance
    assert math.isnan(spearman_ic(np.array([1.0, np.inf, 2.0]), np.array([1.0, 2.0, 3.0])))


def test_rolling_ic_last_window_of_finite_values() -> None:
    # finite ICs: .1 .2 .3 .4 → last 3 = .2 .3 .4 → mean .3, n 3
    mean, n = rolling_ic(np.array([0.1, np.nan, 0.2, 0.3, np.nan, 0.4]), P)
    assert mean == pytest.approx(0.3) and n == 3
    mean, n = rolling_ic(np.array([np.nan, np.nan]), P)
    assert math.isnan(mean) and n == 0


def test_shrunk_ic() -> None:
    # (30·0.05 + 20·0.10) / 50 = 3.5 / 50 = 0.07
    assert shrunk_ic(0.05, 30, 0.10, 20) == pytest.approx(0.07)
    assert shrunk_ic(float("nan"), 0, 0.10, 20) == 0.10  # prior only when no live bars
    assert shrunk_ic(0.05, 30, float("nan"), 20) == 0.05  # no prior → live
    assert math.isnan(shrunk_ic(float("nan"), 0, float("nan"), 20))


def test_mu_floor_and_penalty() -> None:
    assert mu(0.07, 0.04, 0.5, 0.01) == pytest.approx(0.05)  # 0.07 − 0.5·0.04
    assert mu(0.02, 0.04, 0.5, 0.01) == 0.01  # 0.0 → floor
    assert mu(float("nan"), 0.0, 0.5, 0.01) == 0.01
    assert mu(0.05, float("nan"), 0.5, 0.01) == 0.01
    np.testing.assert_allclose(mu(np.array([0.07, -0.2]), np.array([0.04, 0.0]), 0.5, 0.01), [0.05, 0.01])


def test_family_mu_composes() -> None:
    # live mean .3 over 3 bars, prior .1 over 20 → (0.9 + 2)/23; minus 0.5·0.1
    out = family_mu(np.array([0.2, 0.3, 0.4]), 0.1, 0.1, P)
    assert out["ic_shrunk"] == pytest.approx(2.9 / 23) and out["mu"] == pytest.approx(2.9 / 23 - 0.05)


def test_family_correlation() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x = np.column_stack([a, 2 * a + 1, -a, np.ones(5)])
    x[0, 1] = np.nan  # pairwise complete: still perfectly correlated on the rest
    c = family_correlation(x)
    np.testing.assert_allclose(np.diag(c), 1.0)
    assert c[0, 1] == pytest.approx(1.0) and c[0, 2] == pytest.approx(-1.0)
    assert c[0, 3] == 0.0 and c[3, 1] == 0.0  # constant column → NaN → 0
    np.testing.assert_array_equal(c, c.T)
    assert family_correlation(np.full((3, 2), np.nan)).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError):
        family_correlation(np.ones(3))


@settings(max_examples=60, deadline=None)
@given(arrays(float, st.integers(3, 25), elements=st.integers(-5, 5).map(float)),
       st.randoms(use_true_random=False))
def test_spearman_matches_scipy_and_is_permutation_invariant(p: np.ndarray, rnd) -> None:
    r = np.array([rnd.choice([-1.0, 0.0, 1.0, 2.0, 3.0]) for _ in p])
    ic = spearman_ic(p, r)
    ref = spearmanr(p, r).statistic if np.std(p) > 0 and np.std(r) > 0 else float("nan")
    if math.isnan(ref):
        assert math.isnan(ic)
    else:
        assert ic == pytest.approx(ref, abs=1e-12)
        perm = np.array(rnd.sample(range(p.size), p.size))
        assert spearman_ic(p[perm], r[perm]) == ic  # bit-identical
