"""The decision chain as Dagster assets (bars → sized_orders), checked on what it recorded.

Why here and not in the unit tests: those prove each formula on crafted arrays; these prove that the assets
wire the formulas together on real partitions of the embedded market with a small real registry, and that
the lineage tables say exactly what was decided. Six consecutive live bars are materialized once per module
(each later bar sees the earlier ones as history), then the last bar is materialized again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.model_skill.logic import family_correlation, spearman_ic
from assets.sized_orders.logic import client_order_id
from CONFIG.config_loader import get_cfg, reset_config, resolve_path
from resources.launch_proof import signed_tags
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.store import LineageStore
from tests.graph_helpers import session_keys

CHAIN = ["bars", "features", "predictions", "model_skill", "blended_alpha", "positions", "arbitrated_scores",
         "gated_signals", "sized_orders"]
CHECKS = {"weights_on_simplex", "no_nan_alpha_reaches_sizing", "multiplier_in_unit_interval",
          "gross_within_target", "orders_within_caps"}
SESSION, N_BARS = "2025-06-03", 6


def materialize_chain(key: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The chain assets of the real ``Definitions`` for one partition, in process, live mode."""
    from dagster_project.definitions import ALL_ASSETS, RESOURCES

    return dg.materialize(ALL_ASSETS, selection=CHAIN, partition_key=key, resources=RESOURCES,
                          instance=instance, tags={MODE_TAG: "live", **signed_tags(key)})


@dataclass
class ChainRun:
    keys: list[str]
    results: list[dg.ExecuteInProcessResult]
    rerun: dg.ExecuteInProcessResult
    sized_before_rerun: pd.DataFrame
    store: LineageStore

    def table(self, name: str) -> pd.DataFrame:
        return self.store.read_sql(f"SELECT * EXCLUDE (_row) FROM {name} ORDER BY bar, _row")


@pytest.fixture(scope="module")
def chain(small_registry_root, tmp_path_factory) -> ChainRun:
    home = tmp_path_factory.mktemp("chain_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADEGRAPH_HOME", str(home))
        mp.setenv("TRADEGRAPH__PATHS__REGISTRY", str(small_registry_root))
        reset_config()
        store = LineageStore(resolve_path("paths.lineage_db"))
        keys = session_keys(SESSION, N_BARS)
        with dg.DagsterInstance.ephemeral() as instance:  # in-memory event log: ~5× faster than sqlite
            results = [materialize_chain(key, instance) for key in keys]
            before = store.read_partition("sized_orders", keys[-1])
            rerun = materialize_chain(keys[-1], instance)
    reset_config()
    return ChainRun(keys, results, rerun, before, store)


def test_every_bar_succeeds_and_every_asset_check_passes(chain: ChainRun) -> None:
    for result in [*chain.results, chain.rerun]:
        assert result.success
        evals = result.get_asset_check_evaluations()
        assert {e.check_name for e in evals} == CHECKS
        assert all(e.passed for e in evals), [(e.check_name, e.metadata) for e in evals if not e.passed]
        meta = result.asset_materializations_for_node("predictions")[0].metadata
        assert meta["models_ok"].value == 12 and meta["models_skipped"].value == 0


def test_predictions_one_row_per_symbol_horizon_family_of_loaded_models(chain: ChainRun) -> None:
    preds, models, feats = chain.table("predictions"), chain.table("predictions_models"), chain.table("features")
    barrier = chain.table("predictions_barrier")
    clip = get_cfg("standardization.clip")
    for bar in chain.keys:
        p, m, f = preds[preds.bar == bar], models[models.bar == bar], feats[feats.bar == bar]
        ok = m[(m.status == "ok") & m.target.str.startswith("ret_")]
        loaded = {(int(t[4:-1]), fam) for t, fam in zip(ok.target, ok.family, strict=True)}
        assert len(loaded) == 10
        assert not p.duplicated(["symbol", "horizon", "family"]).any()
        assert set(zip(p.horizon, p.family, strict=True)) == loaded
        assert len(p) == len(f) * len(loaded) and set(p.symbol) == set(f.symbol)
        finite = np.isfinite(p["std"])
        assert (p.loc[finite, "std"].abs() <= clip).all()
        assert (finite == np.isfinite(p["raw"])).all() and (finite == (p["status"] == "")).all()
        assert finite.mean() > 0.9  # the bar really predicts (a gap or halt may void a few sequences)
        b = barrier[barrier.bar == bar]
        assert sorted(b.symbol) == sorted(f.symbol) and (b.source == "model").all()
        assert b[["p_peak", "p_valley"]].stack().between(0, 1).all()


def test_skill_is_point_in_time_and_weights_on_simplex_recorded_with_mu(chain: ChainRun) -> None:
    skill, sigma, weights = chain.table("model_skill"), chain.table("model_skill_sigma"), chain.table(
        "blended_alpha_weights")
    bar_min, floor = get_cfg("market.bar_minutes"), get_cfg("blending.mu_floor")
    temps = {int(k): v for k, v in get_cfg("blending.temperature").items()}
    for i, bar in enumerate(chain.keys):
        s, w, sg = skill[skill.bar == bar], weights[weights.bar == bar], sigma[sigma.bar == bar]
        elapsed = np.maximum(0, i - s["horizon"].to_numpy() // bar_min + 1)  # earlier bars whose h has passed
        assert (s["n_live"].to_numpy() <= elapsed).all()
        assert (np.isnan(s.ic_live) == (s.n_live == 0)).all()
        assert (s.loc[s.n_live == 0, "ic_shrunk"] == s.loc[s.n_live == 0, "ic_prior"]).all()
        assert (s["mu"] >= floor).all()
        merged = w.merge(s, on=["horizon", "family"], suffixes=("", "_skill"), validate="one_to_one")
        assert len(merged) == len(s) == 10 and (merged["mu"] == merged["mu_skill"]).all()
        for h, g in w.groupby("horizon"):
            assert (g.weight >= 0).all() and math.isclose(g.weight.sum(), 1.0, abs_tol=1e-12)
            assert (g.temperature == temps.get(int(h), 1.0)).all() and g.reason.nunique() == 1
            c = sg[sg.horizon == h].pivot(index="family_a", columns="family_b", values="corr")
            assert np.allclose(np.diag(c), 1.0) and np.allclose(c, c.T) and (c.abs() <= 1).all().all()
    assert (skill[skill.bar == chain.keys[-1]].query("horizon == 5")["n_live"] == N_BARS - 1).all()


def test_recorded_skill_is_the_rank_ic_and_correlation_of_elapsed_predictions(chain: ChainRun) -> None:
    """An independent oracle from the recorded tables: per earlier bar the plain ``spearman_ic`` against the
    recorded closes, averaged; Σ from the recorded standardized predictions. Both exactly as recorded."""
    preds, bars, last = chain.table("predictions"), chain.table("bars"), chain.keys[-1]
    skill = chain.table("model_skill")
    skill = skill[skill.bar == last].set_index(["horizon", "family"])
    sigma = chain.table("model_skill_sigma")
    sigma = sigma[sigma.bar == last]
    close = bars.pivot(index="bar", columns="symbol", values="close")
    bar_min, n = get_cfg("market.bar_minutes"), len(chain.keys) - 1
    for (h, fam), row in skill.iterrows():
        hb = h // bar_min
        ics = []
        for i, s in enumerate(chain.keys[: n - hb + 1]):  # s + h has closed by the last bar
            p = preds[(preds.bar == s) & (preds.horizon == h) & (preds.family == fam)]
            real = np.log(close.loc[chain.keys[i + hb]] / close.loc[s]).reindex(p.symbol).to_numpy()
            ics.append(spearman_ic(p.raw.to_numpy(), real))
        finite = [x for x in ics if math.isfinite(x)]
        assert row.n_live == len(finite) and len(finite) == max(0, n - hb + 1)
        assert (row.ic_live == np.mean(finite)) if finite else math.isnan(row.ic_live)
    for h in sorted(skill.index.get_level_values(0).unique()):
        usable = chain.keys[: max(0, n - h // bar_min + 1)]  # Σ: exactly the IC's bars (SPEC §4.2)
        p = preds[preds.bar.isin(usable) & (preds.horizon == h)]
        wide = p.pivot_table(index=["bar", "symbol"], columns="family", values="std", aggfunc="first")
        # the pivot's rows are in (bar, symbol) order, the stage's canonical layout: no sort on either side
        expect = (family_correlation(wide[["lightgbm", "sequential"]].to_numpy(), canonical=False)
                  if len(wide) else np.eye(2))
        got = sigma[(sigma.horizon == h) & (sigma.family_a == "lightgbm") & (sigma.family_b == "sequential")]
        assert got["corr"].item() == expect[0, 1]


def test_blended_alpha_is_the_recorded_weights_times_scores(chain: ChainRun) -> None:
    preds, weights, alpha = chain.table("predictions"), chain.table("blended_alpha_weights"), chain.table(
        "blended_alpha")
    for bar in chain.keys:
        p = preds[preds.bar == bar].merge(weights[weights.bar == bar], on=["horizon", "family"])
        p = p[np.isfinite(p["std"]) & (p.weight > 0)]
        num = (p.weight * p["std"] * p.scale).groupby([p.symbol, p.horizon]).sum()
        expect = (num / p.weight.groupby([p.symbol, p.horizon]).sum()).rename("expect")
        got = alpha[alpha.bar == bar].set_index(["symbol", "horizon"]).join(expect)
        assert np.isfinite(got.alpha).mean() > 0.9
        assert np.allclose(got.alpha, got.expect, rtol=1e-12, atol=0, equal_nan=True)
        assert (got.alpha_bps.to_numpy() == got.alpha.to_numpy() * 1e4)[np.isfinite(got.alpha)].all()


def test_every_trade_clears_the_reserve_and_net_is_alpha_minus_costs(chain: ChainRun) -> None:
    scores, terms = chain.table("arbitrated_scores"), chain.table("arbitrated_scores_terms")
    base, mult = get_cfg("arbitration.reserve_base_bps"), get_cfg("arbitration.reserve_spread_mult")
    trade = scores[scores.decision == "TRADE"]
    assert len(trade) >= 1, "no TRADE in six bars: the invariants below would be vacuous"
    assert (trade.final_score_bps >= trade.reserve_bps).all() and trade.direction.isin([-1, 1]).all()
    valid = scores[np.isfinite(scores.reserve_bps)]
    assert (valid.reserve_bps == base + mult * valid.spread_bps).all()
    hold = valid[valid.decision == "HOLD"]
    assert ((hold.final_score_bps < hold.reserve_bps) | (hold.direction == 0)).all()
    cost = terms.spread_cost_bps + terms.vol_cost_bps + terms.impact_cost_bps
    assert (terms.cost_bps == cost).all()
    has_alpha = np.isfinite(terms.alpha_bps)
    assert has_alpha.mean() > 0.9
    assert (terms.net_bps[has_alpha] == terms.alpha_bps[has_alpha].abs() - terms.cost_bps[has_alpha]).all()
    assert terms.net_bps[~has_alpha].isna().all()
    final = (terms.weight * terms.net_bps.fillna(0)).groupby([terms.bar, terms.symbol]).sum()
    s = scores.set_index(["bar", "symbol"])
    assert np.allclose(s.final_score_bps, final.reindex(s.index), rtol=1e-12, atol=1e-12)


def expected_gate(d: int, final: float, decision: str, pk: float, pv: float, qty: float, spread: float) -> str:
    """SPEC §4.4 row by row, written independently of the vectorised stage."""
    ex = get_cfg("gating.exit_threshold")
    if (qty > 0 and pk > ex) or (qty < 0 and pv > ex):
        return "exit"
    if not math.isfinite(qty):
        return "hold"
    p_against, p_for = (pk, pv) if d > 0 else (pv, pk)
    if d == 0 or not math.isfinite(final) or not (0 <= pk <= 1 and 0 <= pv <= 1):
        return "blocked"
    if p_against > get_cfg("gating.block_threshold"):
        return "blocked"
    prefer = final > 0 and p_for > get_cfg("gating.prefer_threshold")
    if not (decision == "TRADE" or prefer):
        return "blocked"
    if not (0 < spread <= get_cfg("gating.spread_max_bps")):
        return "hold"
    return "preferred" if prefer else "allowed"


def test_gates_follow_the_thresholds_given_recorded_barrier_probabilities(chain: ChainRun) -> None:
    gated, barrier = chain.table("gated_signals"), chain.table("predictions_barrier")
    scores = chain.table("arbitrated_scores")
    g = gated.merge(barrier, on=["bar", "symbol"], suffixes=("", "_pred"), validate="one_to_one").merge(
        scores[["bar", "symbol", "spread_bps"]], on=["bar", "symbol"], validate="one_to_one")
    assert len(g) == len(gated) == len(scores)
    assert (g.p_peak == g.p_peak_pred).all() and (g.p_valley == g.p_valley_pred).all()
    for r in g.itertuples():
        gate = expected_gate(r.direction, r.final_score_bps, r.decision, r.p_peak, r.p_valley, r.current_qty,
                             r.spread_bps)
        assert r.gate == gate, (r.bar, r.symbol, r.gate, gate, r.reason)
        live = gate in ("allowed", "preferred")
        p_against = r.p_peak if r.direction > 0 else r.p_valley
        assert r.size_mult == (1.0 - p_against if live else 0.0)
        assert r.signal_bps == (r.direction * r.final_score_bps if live else 0.0)
    assert (g.gate != "blocked").any(), "nothing passed the gates in six bars"


def test_sized_orders_within_gross_target_with_deterministic_ids(chain: ChainRun) -> None:
    sized = chain.table("sized_orders")
    assert (sized.gross_after <= get_cfg("sizing.gross_target") + 1e-12).all()
    assert (sized.w_target.abs() <= get_cfg("sizing.max_weight") + 1e-12).all()
    orders = sized[sized.has_order]
    assert len(orders) >= 1 and (sized.has_order == (sized.shares != 0)).all()
    assert (orders.shares == np.trunc(orders.shares)).all()
    assert ((orders.side == "BUY") == (orders.shares > 0)).all() and orders.side.isin(["BUY", "SELL"]).all()
    sid = get_cfg("engine.strategy_id")
    ids = [client_order_id(sid, r.bar, r.symbol, r.side, r.shares) for r in orders.itertuples()]
    assert orders.client_order_id.tolist() == ids and len(set(ids)) == len(ids)
    assert (sized.loc[~sized.has_order, "client_order_id"] == "").all()


def test_rerun_of_a_bar_gives_the_same_ids_and_one_copy_of_the_partition(chain: ChainRun) -> None:
    bar = chain.keys[-1]
    after = chain.store.read_partition("sized_orders", bar)
    pd.testing.assert_frame_equal(after, chain.sized_before_rerun)
    assert after.has_order.any()
    keys = {"bars": ["symbol"], "features": ["symbol"], "predictions": ["symbol", "horizon", "family"],
            "blended_alpha": ["symbol", "horizon"], "arbitrated_scores": ["symbol"], "gated_signals": ["symbol"],
            "sized_orders": ["symbol"]}
    for table, key in keys.items():
        part = chain.store.read_partition(table, bar)
        assert len(part) and not part.duplicated(key).any(), f"{table}: more than one copy of {bar}"
    mats = chain.store.read_sql("SELECT run_id, content_hash FROM materializations WHERE tbl = 'sized_orders' "
                                "AND bar = ?", [bar])
    assert mats.run_id.nunique() == 2 and mats.content_hash.nunique() == 1
