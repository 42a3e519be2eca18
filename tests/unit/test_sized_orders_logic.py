"""SPEC §4.5 sizing: z, target weight, risk / participation / gross caps, band, lots, order ids."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.sized_orders.logic import MAD_TO_SIGMA, Params, client_order_id, robust_scale, size_orders

SP = Params(z_window_bars=20, z_max=3.0, max_weight=0.05, max_position_pct=0.20, name_risk_budget=0.002,
            participation_beta=0.08, no_trade_band=0.008, gross_target=0.5, gross_mode="cap", lot_size=1,
            strategy_id="test-strat")
HIST = np.ones(1000)  # median |raw| = 1 → robust scale 1.4826 while the current bar has < 1000 names
BAR = "2025-06-02T14:35:00+00:00"


def size(s, sigma=5.0, mult=1.0, is_exit=False, hold=False, qty=0.0, price=100.0, sigma_d=100.0,
         adv_bar=1e9, pv=1e6, hist=HIST, params: Params = SP, n: int | None = None):
    """size_orders on broadcast inputs; defaults: σ 5 bps, σ_daily 1% (risk cap 0.2), huge ADV."""
    s = np.atleast_1d(np.asarray(s, dtype=float))
    n = s.size if n is None else n

    def b(x, dtype=float):
        return np.broadcast_to(np.asarray(x, dtype=dtype), (n,)).copy()
    return size_orders(b(s), b(sigma), b(mult), b(is_exit, bool), b(hold, bool), b(qty), b(price), b(sigma_d),
                       b(adv_bar), pv, hist, np.array([f"S{i:03d}" for i in range(n)]), BAR, params)


def test_params_from_cfg() -> None:
    assert dataclasses.replace(Params.from_cfg(), strategy_id="test-strat") == SP


def test_worked_example_z_weight_shares() -> None:
    # raw = 10/5 = 2; z = 2/1.4826 = 1.348982; w = z/3 · .05 · .8 = .0179864; 17986.4 $ / 100 = 179.86 → 179
    o = size(10.0, mult=0.8)
    assert o.scale == pytest.approx(MAD_TO_SIGMA)
    assert o.z[0] == pytest.approx(2 / 1.4826)
    assert o.w_target[0] == pytest.approx(2 / 1.4826 / 3 * 0.05 * 0.8)
    assert o.shares[0] == 179 and o.side[0] == "BUY" and o.status[0] == "order" and o.caps[0] == ""
    assert o.has_order[0] and len(o.client_order_id[0]) == 32


def test_z_clipped_at_z_max() -> None:
    o = size(np.array([100.0, -100.0]))  # raw ±20 → z ±3 → w ±.05 → ±500 shares
    assert o.z.tolist() == [3.0, -3.0] and o.shares.tolist() == [500.0, -500.0]
    assert o.side.tolist() == ["BUY", "SELL"]


def test_risk_cap_binds_alone() -> None:
    # σ_daily 500 bps = 5%: .002 · PV / .05 = .04 PV < .2 PV → |target| .04 → 400 shares
    o = size(100.0, sigma_d=500.0)
    assert o.w_target[0] == pytest.approx(0.04) and o.shares[0] == 400 and o.caps[0] == "risk_cap"


def test_participation_cap_binds_alone() -> None:
    # target .05 · 1e6 = 50 000 $; β · ADV_bar = .08 · 10 000 = 800 $ → 8 shares
    o = size(100.0, adv_bar=10_000.0)
    assert o.shares[0] == 8 and o.caps[0] == "participation" and o.w_target[0] == pytest.approx(0.05)
    assert o.w_post[0] == pytest.approx(800 / 1e6)


def test_gross_cap_binds_alone() -> None:
    # 20 names × .05 = 1.0 > .5 → all × .5 → .025 → 250 shares each
    o = size(np.full(20, 100.0))
    assert o.gross_before == pytest.approx(1.0) and o.gross_after == pytest.approx(0.5)
    assert o.gross_scale == pytest.approx(0.5) and set(o.caps.tolist()) == {"gross_cap"}
    assert np.all(o.shares == 250)


def test_gross_cap_counts_held_positions() -> None:
    # 2 held names at w .1 each (fixed .2); 18 active × .05 = .9; room .3 → × 1/3 → .016667 → 166 shares
    hold = np.zeros(20, dtype=bool)
    hold[:2] = True
    qty = np.where(hold, 1000.0, 0.0)
    o = size_orders(np.full(20, 100.0), np.full(20, 5.0), np.ones(20), np.zeros(20, bool), hold, qty,
                    np.full(20, 100.0), np.full(20, 100.0), np.full(20, 1e9), 1e6, HIST,
                    np.array([f"S{i}" for i in range(20)]), BAR, SP)
    assert o.status[:2].tolist() == ["held", "held"] and not o.has_order[:2].any()
    assert o.gross_after == pytest.approx(0.5) and np.all(o.shares[2:] == 166)


def test_target_mode_scales_up_but_never_past_name_caps() -> None:
    p = dataclasses.replace(SP, gross_mode="target")
    # 4 × .025 = .1 → × 5 = .125 each > name cap min(.05, .2) → .05 each
    o = size(np.full(4, 100.0), mult=0.5, params=p)
    np.testing.assert_allclose(o.w_target, 0.05)
    assert set(o.caps.tolist()) == {"gross_target|name_cap"}
    # water-filling: w .01, .02; target .08 → × 8/3 = .02667, .05333 → the 2nd capped at .05,
    # the remaining .03 goes to the 1st → .03, .05 → 300, 500 shares
    o = size(np.array([100.0, 100.0]), mult=np.array([0.2, 0.4]), params=dataclasses.replace(p, gross_target=0.08))
    np.testing.assert_allclose(o.w_target, [0.03, 0.05])
    assert o.shares.tolist() == [300.0, 500.0] and o.gross_after == pytest.approx(0.08)
    assert o.caps.tolist() == ["gross_target", "gross_target|name_cap"]


def test_no_trade_band_edge_dyadic() -> None:
    # z_max 1, max_weight .5 → target .5; PV 1024, price 1; band .25
    p = dataclasses.replace(SP, z_max=1.0, max_weight=0.5, no_trade_band=0.25, gross_target=10.0,
                            max_position_pct=1.0)
    qty = np.array([256.0, 257.0, 255.0])  # w_cur .25 (Δ = .25 exactly), .2490 (Δ .2510), ...
    o = size(np.full(3, 100.0), sigma=1.0, sigma_d=1.0, qty=qty, price=1.0, pv=1024.0, params=p)
    assert o.w_target.tolist() == [0.5, 0.5, 0.5]
    # Δ = .25 is not < .25 → order; .5 − 257/1024 = .24902 → banded; .5 − 255/1024 = .25098 → order
    assert o.status.tolist() == ["order", "banded", "order"] and o.shares.tolist() == [256.0, 0.0, 257.0]


def test_default_band() -> None:
    # target .05 → 500 shares; current 425 → w .0425, Δ .0075 < .008 → banded; current 415 → Δ .0085 → order
    o = size(np.full(2, 100.0), qty=np.array([425.0, 415.0]))
    assert o.status.tolist() == ["banded", "order"] and o.shares.tolist() == [0.0, 85.0]


def test_exit_trades_to_exactly_zero_never_banded_nor_capped() -> None:
    o = size(np.zeros(3), is_exit=True, qty=np.array([137.0, 1.0, -50.0]), adv_bar=1.0,
             params=dataclasses.replace(SP, lot_size=100))
    assert o.shares.tolist() == [-137.0, -1.0, 50.0] and o.status.tolist() == ["exit"] * 3
    assert o.side.tolist() == ["SELL", "SELL", "BUY"] and np.all(o.w_post == 0.0) and np.all(o.w_target == 0.0)


def test_zero_signal_unwinds_through_band_and_flat_is_no_change() -> None:
    o = size(np.zeros(2), qty=np.array([1000.0, 0.0]))  # w .1 → target 0 → sell 1000
    assert o.shares.tolist() == [-1000.0, 0.0] and o.status.tolist() == ["order", "no_change"]


def test_lots_round_toward_zero_and_zero_share_orders_are_dropped() -> None:
    p = dataclasses.replace(SP, lot_size=100, no_trade_band=0.0)
    # w ±.025 → ±250 shares → ±200; w .005 → 50 shares → 0 lots → dropped
    o = size(np.array([100.0, -100.0, 100.0]), mult=np.array([0.5, 0.5, 0.1]), params=p)
    assert o.shares.tolist() == [200.0, -200.0, 0.0]
    assert o.status[2] == "zero_shares" and not o.has_order[2] and o.client_order_id[2] == "" and o.side[2] == ""


def test_bad_inputs_make_no_order_the_rest_trade() -> None:
    s = np.full(7, 100.0)
    sigma = np.array([5.0, 0.0, np.nan, 5.0, 5.0, 5.0, 5.0])
    adv = np.array([1e9, 1e9, 1e9, 0.0, np.nan, 1e9, 1e9])
    price = np.array([100.0, 100.0, 100.0, 100.0, 100.0, np.nan, 100.0])
    sig_d = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0, np.nan])
    o = size_orders(s, sigma, np.ones(7), np.zeros(7, bool), np.zeros(7, bool), np.zeros(7), price, sig_d,
                    adv, 1e6, HIST, np.array(list("ABCDEFG")), BAR, SP)
    assert o.has_order.tolist() == [True] + [False] * 6
    assert o.status.tolist() == ["order", "bad_input:bad_sigma", "bad_input:bad_sigma", "bad_input:bad_adv",
                                 "bad_input:bad_adv", "bad_input:bad_price", "bad_input:bad_sigma_daily"]
    assert o.shares[0] == 500


def test_non_finite_signal_and_bad_pv() -> None:
    o = size(np.array([np.inf, np.nan, 100.0]))
    assert o.status.tolist()[:2] == ["bad_input:bad_signal", "bad_input:bad_signal"] and o.shares[2] == 500
    o = size(np.array([100.0]), pv=float("nan"))
    assert not o.has_order[0] and o.status[0] == "bad_input:bad_portfolio_value"


def test_robust_scale_window_and_zeros() -> None:
    # (B, N) history: only the last z_window_bars rows count; zeros are not signals
    hist = np.vstack([np.full((5, 3), 100.0), np.full((2, 3), 2.0), np.zeros((1, 3))])
    assert robust_scale(np.array([2.0, 0.0]), hist, 3) == pytest.approx(MAD_TO_SIGMA * 2.0)
    assert np.isnan(robust_scale(np.zeros(3), np.zeros(0), 20))
    o = size(np.zeros(2), hist=np.zeros(0))
    assert o.z.tolist() == [0.0, 0.0]


def test_client_order_id_deterministic() -> None:
    expect = hashlib.sha256(b"strat|2025-06-02T14:35:00Z|AAPL|BUY|100").hexdigest()[:32]
    assert client_order_id("strat", "2025-06-02T14:35:00Z", "AAPL", "BUY", 100) == expect
    assert client_order_id("strat", "2025-06-02T14:35:00Z", "AAPL", "BUY", 100.0) == expect
    assert client_order_id("strat", "2025-06-02T14:35:00Z", "AAPL", "BUY", 101) != expect
    a, b = size(np.array([100.0, -100.0])), size(np.array([100.0, -100.0]))
    np.testing.assert_array_equal(a.client_order_id, b.client_order_id)
    assert a.client_order_id[0] == client_order_id("test-strat", BAR, "S000", "BUY", 500)


def _random_book(seed: int, n: int):
    rng = np.random.default_rng(seed)
    s = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(-50, 50, n))
    return dict(s=s, sigma=rng.uniform(1, 30, n), mult=rng.uniform(0, 1, n), is_exit=rng.random(n) < 0.1,
                hold=rng.random(n) < 0.1, qty=np.round(rng.uniform(-3000, 3000, n)), price=rng.uniform(10, 500, n),
                sigma_d=rng.uniform(50, 500, n), adv_bar=rng.uniform(1e4, 1e8, n),
                hist=rng.normal(0, 3, (30, n)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), mode=st.sampled_from(["cap", "target"]),
       lot=st.sampled_from([1, 100]))
def test_properties_gross_symmetry_permutation(seed: int, n: int, mode: str, lot: int) -> None:
    p = dataclasses.replace(SP, gross_mode=mode, lot_size=lot)
    book = _random_book(seed, n)
    o = size(book["s"], params=p, n=n, **{k: v for k, v in book.items() if k != "s"})
    fixed = o.status == "held"
    fixed_gross = float(np.abs(o.w_current[fixed]).sum())
    if mode == "cap":
        assert o.gross_after <= max(p.gross_target, fixed_gross) + 1e-12
        flat = size(book["s"], params=p, n=n, **{k: v for k, v in book.items() if k not in ("s", "qty", "hold")})
        assert np.abs(flat.w_post).sum() <= p.gross_target + 1e-9
    active = o.status != "held"
    name_cap = np.minimum(p.max_weight, np.minimum(p.max_position_pct, p.name_risk_budget / (book["sigma_d"] / 1e4)))
    assert np.all(np.abs(o.w_target[active]) <= name_cap[active] + 1e-12)
    assert np.all(np.abs(o.shares[o.status == "order"]) % lot == 0)
    m = size(-book["s"], params=p, n=n, qty=-book["qty"], hist=-book["hist"],
             **{k: v for k, v in book.items() if k not in ("s", "qty", "hist")})
    np.testing.assert_array_equal(m.shares, -o.shares)
    np.testing.assert_array_equal(m.w_target, -o.w_target)
    np.testing.assert_array_equal(m.status, o.status)
    perm = np.random.default_rng(seed + 1).permutation(n)
    syms = np.array([f"S{i:03d}" for i in range(n)])
    q = size_orders(book["s"][perm], book["sigma"][perm], book["mult"][perm], book["is_exit"][perm],
                    book["hold"][perm], book["qty"][perm], book["price"][perm], book["sigma_d"][perm],
                    book["adv_bar"][perm], 1e6, book["hist"][:, perm], syms[perm], BAR, p)
    for f in ("shares", "w_target", "w_post", "z", "caps", "status", "client_order_id", "side"):
        np.testing.assert_array_equal(getattr(q, f), getattr(o, f)[perm])
    assert q.gross_after == o.gross_after and q.scale == o.scale


@pytest.mark.parametrize(("adv_bar", "shares", "caps"), [
    (625_000.0, 500.0, ""),                 # the trade (50 000 $) is exactly β · ADV_bar: not capped
    (312_500.0, 250.0, "participation"),    # the trade is twice the cap: capped to it, 25 000 $ → 250 shares
])
def test_participation_cap_at_its_edge(adv_bar, shares, caps) -> None:
    o = size(100.0, adv_bar=adv_bar)
    assert o.w_target[0] == pytest.approx(0.05)
    assert o.shares[0] == shares and o.caps[0] == caps
