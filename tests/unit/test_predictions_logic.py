"""SPEC §4.1 standardization: robust z-score against the family's own recent predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from assets.predictions.standardize import MAD_TO_SIGMA, Params, robust_center_scale, standardize


def test_params_from_cfg_reads_config() -> None:
    p = Params.from_cfg()
    assert p.clip == 3.0 and p.window_bars == 20 and p.min_history >= 2


def test_robust_z_and_clip_worked_by_hand() -> None:
    # history 0..4: median 2, |dev| = 2,1,0,1,2 → MAD 1 → scale 1.4826
    hist = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    raw = np.array([2.0, 2.0 + MAD_TO_SIGMA, 2.0 - 5 * MAD_TO_SIGMA, 2.0 + 2.5 * MAD_TO_SIGMA])
    z = standardize(raw, hist, clip=3.0, min_history=5)
    # → 0, +1, −5 clipped to −3, +2.5
    np.testing.assert_allclose(z, [0.0, 1.0, -3.0, 2.5], atol=1e-12)


def test_mad_zero_falls_back_to_std() -> None:
    # [1,1,1,1,5]: median 1, MAD 0 → std: mean 1.8, var (4·0.64 + 10.24)/5 = 2.56 → std 1.6
    hist = np.array([1.0, 1.0, 1.0, 1.0, 5.0])
    z = standardize(np.array([2.6, 1.0]), hist, clip=3.0, min_history=5)
    np.testing.assert_allclose(z, [1.0, 0.0], atol=1e-12)


def test_short_history_uses_cross_section() -> None:
    # one history value < min_history 5 → reference = raw [1,2,3]: median 2, MAD 1
    z = standardize(np.array([1.0, 2.0, 3.0]), np.array([100.0]), clip=3.0, min_history=5)
    np.testing.assert_allclose(z, [-1 / MAD_TO_SIGMA, 0.0, 1 / MAD_TO_SIGMA], atol=1e-12)


def test_nan_history_values_are_ignored_and_raw_nan_stays_nan() -> None:
    hist = np.array([0.0, 1.0, np.nan, 2.0, 3.0, np.inf, 4.0])
    z = standardize(np.array([np.nan, 2.0, np.inf, -np.inf]), hist, clip=3.0, min_history=5)
    assert np.isnan(z[0]) and z[1] == 0.0 and np.isnan(z[2]) and np.isnan(z[3])


def test_constant_reference_gives_zero_not_inf() -> None:
    z = standardize(np.array([5.0, 7.0]), np.full(10, 3.0), clip=3.0, min_history=5)
    np.testing.assert_array_equal(z, [0.0, 0.0])
    assert robust_center_scale(np.array([np.nan])) == (pytest.approx(np.nan, nan_ok=True), 0.0)


def test_default_min_history_from_config() -> None:
    z = standardize(np.array([1.0, 2.0, 3.0]), np.array([]), clip=3.0)
    np.testing.assert_allclose(z, [-1 / MAD_TO_SIGMA, 0.0, 1 / MAD_TO_SIGMA], atol=1e-12)


finite = st.floats(-1e3, 1e3, allow_nan=False)
maybe_nan = st.one_of(finite, st.just(np.nan))


@settings(max_examples=80, deadline=None)
@given(raw=arrays(float, st.integers(1, 30), elements=maybe_nan),
       hist=arrays(float, st.integers(0, 60), elements=maybe_nan),
       clip=st.floats(0.5, 5.0))
def test_properties_bounded_nan_preserving_monotone(raw: np.ndarray, hist: np.ndarray, clip: float) -> None:
    z = standardize(raw, hist, clip=clip, min_history=5)
    assert np.array_equal(np.isnan(z), np.isnan(raw))
    ok = ~np.isnan(z)
    assert np.all(np.abs(z[ok]) <= clip)
    order = np.argsort(raw[ok], kind="stable")
    assert np.all(np.diff(z[ok][order]) >= 0)  # rank preserving
    perm = np.random.default_rng(0).permutation(raw.size)
    np.testing.assert_array_equal(standardize(raw[perm], hist, clip=clip, min_history=5), z[perm])
