"""SPEC §9 on the decision chain: every bad input becomes a recorded skip or HOLD, never a silent number or an
unintended order, and the rest of the universe keeps trading.

Why mostly at the stage level: the ``compute_*`` functions are exactly what the assets (and replay) call, and
they are pure, so a crafted input is one line. Each case starts from a clean bar of the embedded market on
which at least two symbols place orders (found once per module), so that "this symbol is skipped" and "the
rest still trade" are both real statements; the registry cases (a missing horizon, no model at all) also run
through the Dagster graph to show what lineage records.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.arbitrated_scores.stage import compute_arbitrated
from assets.bars.logic import BarWindow
from assets.blended_alpha.logic import Params as BlendParams
from assets.blended_alpha.stage import compute_blended_alpha
from assets.features.logic import FeatureParams, features_for_window
from assets.gated_signals.stage import compute_gated
from assets.history import PRED_HISTORY_COLUMNS, MemoryHistory, PredictionGrid
from assets.model_skill.stage import compute_model_skill
from assets.predictions.models import ModelSet, load_models
from assets.predictions.seq_buffer import REASON_SHORT, SeqBufferManager
from assets.predictions.stage import compute_predictions, previous_bar_keys, seq_buffer_for
from assets.sized_orders.stage import compute_sized
from CONFIG.config_loader import get_cfg, reset_config
from resources.launch_proof import signed_tags
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.store import LineageStore
from resources.market.calendar import bar_key, parse_bar_key
from resources.market.resource import MarketDataResource
from tests.graph_helpers import run_bar, session_keys

SESSION = "2025-06-03"
FLAT = pd.DataFrame({"symbol": pd.Series(dtype=object), "qty": pd.Series(dtype=float)})
CHAIN = ["bars", "features", "predictions", "model_skill", "blended_alpha", "positions", "arbitrated_scores",
         "gated_signals", "sized_orders"]


def downstream(alpha: pd.DataFrame, features: pd.DataFrame, barrier: pd.DataFrame, bar: str,
               history: MemoryHistory) -> dict[str, pd.DataFrame]:
    """arbitrated_scores → gated_signals → sized_orders on a flat book."""
    pv = float(get_cfg("broker.initial_cash"))
    a = compute_arbitrated(alpha, features, pv)
    g = compute_gated(a["arbitrated_scores"], barrier, FLAT)
    return {**a, "gated_signals": g, "sized_orders": compute_sized(bar, g, features, pv, history)}


def run_chain(window: BarWindow, features: pd.DataFrame, models: ModelSet,
              history: MemoryHistory) -> dict[str, pd.DataFrame]:
    """features → sized_orders for one bar, exactly as the assets compose it."""
    p = compute_predictions(window, features, models, history)
    s = compute_model_skill(window, features, p["predictions"], models, history)
    b = compute_blended_alpha(p["predictions"], s["model_skill"], s["model_skill_sigma"], models)
    return {**p, **s, **b, **downstream(b["blended_alpha"], features, p["predictions_barrier"], window.bar,
                                        history)}


@dataclass
class CleanBar:
    window: BarWindow
    features: pd.DataFrame
    models: ModelSet
    history: MemoryHistory
    out: dict[str, pd.DataFrame]

    @property
    def traders(self) -> list[str]:
        """Symbols with an order on the clean bar."""
        s = self.out["sized_orders"]
        return s.loc[s.has_order, "symbol"].tolist()

    @property
    def quiet(self) -> list[str]:
        """Symbols with valid features and a finite score but no order on the clean bar."""
        s = self.out["arbitrated_scores"]
        ok = s[s.final_score_bps.notna() & ~s.symbol.isin(self.traders)]
        return ok.symbol.tolist()

    def rows(self, table: str, symbols: list[str]) -> pd.DataFrame:
        t = self.out[table]
        return t[t.symbol.isin(symbols)]


@pytest.fixture(scope="module")
def clean(small_registry_root) -> CleanBar:
    """The first bar of the session (with earlier bars as history) on which ≥ 2 symbols place orders."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADEGRAPH__PATHS__REGISTRY", str(small_registry_root))
        reset_config()
        models, market = load_models(), MarketDataResource()
        history = MemoryHistory(len(session_keys(SESSION)))
        try:
            for key in session_keys(SESSION):
                window, _ = market.window(key)
                features = features_for_window(window)
                out = run_chain(window, features, models, history)
                if out["sized_orders"].has_order.sum() >= 2:
                    return CleanBar(window, features, models, history, out)
                history.add(key, out["predictions"], out["sized_orders"])
        finally:
            reset_config()
    pytest.fail(f"no bar of {SESSION} placed two orders: the clean baseline is missing")


def corrupt(features: pd.DataFrame, values: dict[tuple[str, str], float], revalidate: bool = True) -> pd.DataFrame:
    """A copy of ``features`` with (symbol, column) → value set; ``valid`` recomputed as the features stage does."""
    f = features.copy()
    for (symbol, column), value in values.items():
        f.loc[f.symbol == symbol, column] = value
    if revalidate:
        f["valid"] = np.isfinite(f[FeatureParams.from_cfg().names].to_numpy(dtype=float)).all(axis=1)
    return f


def assert_no_trade(out: dict[str, pd.DataFrame], symbols: list[str], reason: str) -> None:
    """Each symbol HOLDs with ``reason`` among its recorded reasons, no gate lets it through, no order."""
    s = out["arbitrated_scores"].set_index("symbol").loc[symbols]
    assert (s.decision == "HOLD").all() and (s.direction == 0).all() and s.final_score_bps.isna().all()
    assert s.reason.str.split("|").map(lambda r: reason in r).all(), s.reason.tolist()
    g = out["gated_signals"].set_index("symbol").loc[symbols]
    assert (g.gate == "blocked").all() and (g.signal_bps == 0).all()
    z = out["sized_orders"].set_index("symbol").loc[symbols]
    assert not z.has_order.any() and (z.client_order_id == "").all()


def assert_rest_trade(out: dict[str, pd.DataFrame], skipped: list[str]) -> None:
    z = out["sized_orders"]
    assert z[~z.symbol.isin(skipped)].has_order.any(), "the rest of the universe stopped trading"


# --------------------------------------------------------------------------------------------- features
@pytest.mark.parametrize("revalidate", [True, False], ids=["valid-flag-recomputed", "stale-valid-flag"])
def test_nan_and_inf_features_skip_those_symbols_and_the_rest_trade(trained, clean, revalidate) -> None:
    nan_sym = clean.traders[0]
    inf_sym = clean.quiet[0]
    f = corrupt(clean.features, {(nan_sym, "ret_1"): np.nan, (inf_sym, "vol_6"): np.inf}, revalidate)
    out = run_chain(clean.window, f, clean.models, clean.history)
    bad = [nan_sym, inf_sym]
    p = out["predictions"]
    assert len(p[p.symbol.isin(bad)]) == 2 * 10
    assert (p[p.symbol.isin(bad)].status == "invalid features").all()
    assert p[p.symbol.isin(bad)][["raw", "std"]].isna().all().all()
    b = out["predictions_barrier"].set_index("symbol").loc[bad]
    assert (b.source == "prior: invalid features").all() and (b.p_peak == get_cfg("barrier.neutral_prior")).all()
    assert out["blended_alpha"].query("symbol in @bad").alpha.isna().all()
    assert_no_trade(out, bad, "no_alpha")
    rest = p[~p.symbol.isin(bad)].reset_index(drop=True)
    clean_rest = clean.rows("predictions", list(rest.symbol.unique())).reset_index(drop=True)
    pd.testing.assert_series_equal(rest.raw, clean_rest.raw)  # the others' models saw the same inputs
    assert_rest_trade(out, bad)


# --------------------------------------------------------------------------------------------- new symbol
def test_symbol_new_to_the_window_gets_tabular_but_no_sequential_prediction(trained, clean) -> None:
    new = clean.traders[0]
    w = clean.window
    keep_from = w.times[-25]  # 25 bars: enough for every tabular feature, not for a full sequence buffer
    hist = w.history[(w.history.symbol != new) | (w.history.ts >= keep_from)].reset_index(drop=True)
    window = BarWindow(w.bar, w.times, w.snapshot, hist)
    f = features_for_window(window)
    assert f.set_index("symbol").loc[new, "valid"]
    out = run_chain(window, f, clean.models, clean.history)
    p = out["predictions"].set_index(["symbol", "family"]).sort_index()
    assert p.loc[(new, "lightgbm"), "raw"].notna().all() and (p.loc[(new, "lightgbm"), "status"] == "").all()
    assert p.loc[(new, "sequential"), "raw"].isna().all()
    assert (p.loc[(new, "sequential"), "status"] == REASON_SHORT).all()
    a = out["blended_alpha"].set_index("symbol").loc[new]
    assert a.alpha.notna().all() and (a.n_families == 1).all()
    others = p.drop(index=new, level="symbol")
    assert others.raw.notna().mean() > 0.9


def test_symbol_the_sequence_buffer_never_saw_is_not_given_a_neighbours_window(trained, clean) -> None:
    symbols = clean.features.symbol.to_numpy()
    new = symbols[len(symbols) // 2]
    T = clean.models.get("ret_5m", "sequential").T
    full = seq_buffer_for(clean.window, T)
    keep = full.symbols != new
    buf = SeqBufferManager(full.symbols[keep], T, full.F, full.gap_tolerance)
    buf.rows, buf.present, buf.filled = full.rows[keep], full.present[keep], full.filled[keep]
    out = compute_predictions(clean.window, clean.features, clean.models, clean.history, buffer=buf)
    p, c = out["predictions"], clean.out["predictions"]
    seq, clean_seq = p[p.family == "sequential"].set_index(["symbol", "horizon"]), c[
        c.family == "sequential"].set_index(["symbol", "horizon"])
    assert seq.loc[new, "raw"].isna().all() and (seq.loc[new, "status"] == REASON_SHORT).all()
    pd.testing.assert_series_equal(seq.drop(index=new, level="symbol").raw, clean_seq.drop(
        index=new, level="symbol").raw)
    tab = p[(p.family == "lightgbm") & (p.symbol == new)]
    assert tab.raw.notna().all()
    last = compute_predictions(clean.window, clean.features, clean.models, clean.history, buffer=SeqBufferManager(
        full.symbols[:-1], T, full.F, full.gap_tolerance))  # the last symbol unknown: no IndexError either
    assert (last["predictions"].query("family == 'sequential' and symbol == @symbols[-1]").status == REASON_SHORT).all()


# --------------------------------------------------------------------------------------------- models
def copy_registry(src: Path, dst: Path, drop_targets: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in drop_targets])
    return dst


def materialize_chain(key: str) -> dg.ExecuteInProcessResult:
    from dagster_project.definitions import ALL_ASSETS, RESOURCES

    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(ALL_ASSETS, selection=CHAIN, partition_key=key, resources=RESOURCES,
                              instance=instance, tags={MODE_TAG: "live", **signed_tags(key)})


def test_horizon_with_all_models_missing_is_skipped_and_recorded_the_rest_runs(small_registry_root, tmp_path,
                                                                                monkeypatch) -> None:
    root = copy_registry(small_registry_root, tmp_path / "registry", drop_targets=("ret_30m",))
    monkeypatch.setenv("TRADEGRAPH__PATHS__REGISTRY", str(root))
    reset_config()
    key = session_keys(SESSION, 3)[-1]
    result = materialize_chain(key)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    meta = result.asset_materializations_for_node("predictions")[0].metadata
    assert meta["models_skipped"].value == 2 and "ret_30m" in meta["skipped"].value
    store = LineageStore()
    status = store.read_partition("predictions_models", key)
    gone = status[status.target == "ret_30m"]
    assert len(gone) == 2 and (gone.status == "skipped").all()
    assert gone.reason.str.startswith("missing").all()
    assert (status[status.target != "ret_30m"].status == "ok").all()
    assert 30 not in set(store.read_partition("predictions", key).horizon)
    assert 30 not in set(store.read_partition("model_skill", key).horizon)
    alpha = store.read_partition("blended_alpha", key)
    assert set(alpha.horizon) == {5, 10, 15, 60} and alpha.alpha.notna().mean() > 0.9
    assert set(store.read_partition("blended_alpha_weights", key).horizon) == {5, 10, 15, 60}
    terms = store.read_partition("arbitrated_scores_terms", key)
    h30 = terms[terms.horizon == 30]
    assert h30.alpha_bps.isna().all() and h30.net_bps.isna().all() and (h30.weight.fillna(0) == 0).all()
    assert not (store.read_partition("arbitrated_scores", key).selected_h_min == 30).any()


def test_no_model_at_all_means_no_trades_and_no_crash(tmp_path, monkeypatch, live_clock) -> None:
    empty = tmp_path / "empty_registry"
    empty.mkdir()
    monkeypatch.setenv("TRADEGRAPH__PATHS__REGISTRY", str(empty))
    reset_config()
    keys = session_keys(SESSION, 2)
    with dg.DagsterInstance.ephemeral() as instance:
        for key in keys:  # the whole trading job, twice: no crash loop, nothing sent
            live_clock(parse_bar_key(key))
            assert run_bar(key, instance=instance).success
    store = LineageStore()
    for key in keys:
        status = store.read_partition("predictions_models", key)
        assert len(status) == 12 and (status.status == "skipped").all()
        assert len(store.read_partition("predictions", key, missing_ok=True)) == 0
        barrier = store.read_partition("predictions_barrier", key)
        assert barrier.source.str.startswith("prior: no ").all()
        assert (barrier[["p_peak", "p_valley"]] == get_cfg("barrier.neutral_prior")).all().all()
        scores = store.read_partition("arbitrated_scores", key)
        assert len(scores) >= 40 and (scores.decision == "HOLD").all() and (scores.reason == "no_alpha").all()
        assert (store.read_partition("gated_signals", key).gate == "blocked").all()
        assert not store.read_partition("sized_orders", key).has_order.any()
        assert len(store.read_partition("executions", key, missing_ok=True)) == 0


def test_corrupt_model_file_is_skipped_with_its_reason(trained, clean, tmp_path, monkeypatch) -> None:
    root = copy_registry(trained, tmp_path / "registry")
    version = clean.models.get("ret_10m", "lightgbm").version
    model_file = root / "ret_10m" / "lightgbm" / version / "model.txt"
    model_file.chmod(0o644)
    model_file.write_bytes(model_file.read_bytes().replace(b"tree", b"TREE", 1))
    monkeypatch.setenv("TRADEGRAPH__PATHS__REGISTRY", str(root))
    reset_config()
    models = load_models()
    row = models.status.set_index(["target", "family"]).loc[("ret_10m", "lightgbm")]
    assert row.status == "skipped" and "checksum mismatch" in row.reason and str(model_file) in row.reason
    assert models.get("ret_10m", "lightgbm") is None and len(models.models) == 11
    out = run_chain(clean.window, clean.features, models, clean.history)
    assert (out["predictions_models"].status == "skipped").sum() == 1
    p = out["predictions"]
    assert p[(p.horizon == 10) & (p.family == "lightgbm")].empty
    w = out["blended_alpha_weights"].set_index(["horizon", "family"])
    assert w.loc[10].index.tolist() == ["sequential"] and w.loc[(10, "sequential"), "weight"] == 1.0
    assert w.loc[(10, "sequential"), "reason"] == "single"
    assert (w.drop(index=10, level="horizon").reason == "ridge").all()
    a = out["blended_alpha"].query("horizon == 10")
    assert a.alpha.notna().mean() > 0.9 and (a.n_families <= 1).all()
    assert_rest_trade(out, [])


def test_null_validation_ic_and_slope_are_nan_never_a_type_error(trained, clean, tmp_path, monkeypatch) -> None:
    """Issue 10: a model whose validation_ic / calibration_slope is null (too few names with a label) crashed
    every bar with a TypeError in model_skill and blended_alpha. Now: NaN, handled, recorded."""
    from TRAINING.common.utils.file_utils import read_json, write_atomic_json

    root = copy_registry(trained, tmp_path / "registry")
    version = clean.models.get("ret_10m", "lightgbm").version
    meta_file = root / "ret_10m" / "lightgbm" / version / "model_meta.json"
    meta = read_json(meta_file)
    meta.update(validation_ic=None, calibration_slope=None)
    meta_file.chmod(0o644)
    write_atomic_json(meta_file, meta)
    monkeypatch.setenv("TRADEGRAPH__PATHS__REGISTRY", str(root))
    reset_config()
    models = load_models()
    assert models.get("ret_10m", "lightgbm").meta["validation_ic"] is None
    out = run_chain(clean.window, clean.features, models, clean.history)
    skill = out["model_skill"].set_index(["horizon", "family"]).loc[(10, "lightgbm")]
    assert np.isnan(skill.ic_prior) and np.isfinite(skill.mu)  # no prior: the live IC alone (or μ_floor)
    w = out["blended_alpha_weights"].set_index(["horizon", "family"])
    assert np.isnan(w.loc[(10, "lightgbm"), "calibration_slope"]) and np.isnan(w.loc[(10, "lightgbm"), "scale"])
    a = out["blended_alpha"].query("horizon == 10")
    assert a.alpha.notna().mean() > 0.9 and (a.n_families == 2).any()  # sequential alone carries α at 10m
    assert_rest_trade(out, [])


# --------------------------------------------------------------------------------------------- skill, Σ, μ
class FrameHistory:
    """A ChainHistory over a crafted predictions frame (what earlier bars would have recorded)."""

    def __init__(self, predictions: pd.DataFrame):
        self._pred = predictions[PRED_HISTORY_COLUMNS]

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        return self._pred[self._pred.bar.isin(bars)].sort_values(["bar", "symbol", "horizon", "family"]).reset_index(
            drop=True)

    def prediction_grid(self, bars: list[str]) -> PredictionGrid:
        return PredictionGrid.from_frame(self.predictions(bars), bars)

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"bar": pd.Series(dtype=object), "symbol": pd.Series(dtype=object),
                             "raw": pd.Series(dtype=float)})


@pytest.mark.parametrize("case", ["nan", "singular"])
def test_nan_or_singular_sigma_falls_back_to_recorded_equal_weights(trained, clean, case) -> None:
    o = clean.out
    sigma = o["model_skill_sigma"].copy()
    params = BlendParams.from_cfg()
    hit = sigma.horizon == 15 if case == "nan" else np.full(len(sigma), True)
    off = sigma.family_a != sigma.family_b
    sigma.loc[hit & off, "corr"] = np.nan if case == "nan" else 1.0  # two identical families …
    if case == "singular":
        params = dataclasses.replace(params, ridge_lambda=0.0)  # … and no ridge: Σ + λI is singular
    out = compute_blended_alpha(o["predictions"], o["model_skill"], sigma, clean.models, params)
    w = out["blended_alpha_weights"]
    affected = w[w.horizon == 15] if case == "nan" else w
    assert (affected.reason == f"equal:{'nonfinite' if case == 'nan' else 'singular'}").all()
    assert np.allclose(affected.groupby("horizon").weight.apply(list).tolist(), 0.5)
    assert np.isfinite(w.weight).all() and np.allclose(w.groupby("horizon").weight.sum(), 1.0)
    if case == "nan":
        pd.testing.assert_frame_equal(w[w.horizon != 15], o["blended_alpha_weights"].query("horizon != 15"))
    a = out["blended_alpha"]
    assert (a.alpha.notna() == o["blended_alpha"].alpha.notna()).all()


def wrong_way_history(clean: CleanBar, bar: str) -> FrameHistory:
    """Earlier bars' predictions that are exactly minus the realised move: a rank IC of −1 everywhere."""
    bar_min = get_cfg("market.bar_minutes")
    keys = previous_bar_keys(bar, get_cfg("blending.ic_window_bars") + max(get_cfg("horizons.minutes")) // bar_min)
    w = clean.window
    close = pd.DataFrame(w.panel()["close"], index=[bar_key(t) for t in w.times], columns=w.panel().symbols)
    rows = []
    for h in get_cfg("horizons.minutes"):
        fwd = -np.log(close.shift(-(h // bar_min)) / close)
        for fam in ("lightgbm", "sequential"):
            part = fwd.loc[keys].stack(future_stack=True).rename("raw").reset_index()
            rows.append(part.rename(columns={"level_0": "bar", "level_1": "symbol"}).assign(
                horizon=h, family=fam, std=lambda d: d.raw * 1e3))
    return FrameHistory(pd.concat(rows, ignore_index=True))


def test_all_mu_at_the_floor_still_blends_on_the_simplex(trained, clean) -> None:
    hist = wrong_way_history(clean, clean.window.bar)
    skill = compute_model_skill(clean.window, clean.features, clean.out["predictions"], clean.models, hist)
    s = skill["model_skill"]
    assert len(s) == 10 and (s.n_live > 0).all() and np.allclose(s.ic_live, -1.0)
    assert (s.mu == get_cfg("blending.mu_floor")).all()
    out = compute_blended_alpha(clean.out["predictions"], s, skill["model_skill_sigma"], clean.models)
    w = out["blended_alpha_weights"]
    assert (w.mu == get_cfg("blending.mu_floor")).all() and (w.reason == "ridge").all()
    assert (w.weight >= 0).all() and np.allclose(w.groupby("horizon").weight.sum(), 1.0, atol=1e-12)
    assert np.isfinite(out["blended_alpha"].alpha).mean() > 0.9


def test_degenerate_family_history_gives_zero_correlation_not_nan(trained, clean) -> None:
    hist = wrong_way_history(clean, clean.window.bar)
    hist._pred = hist._pred.assign(std=np.where(hist._pred.family == "sequential", 0.25, hist._pred["std"]))
    sigma = compute_model_skill(clean.window, clean.features, clean.out["predictions"], clean.models,
                                hist)["model_skill_sigma"]
    off = sigma.family_a != sigma.family_b
    assert len(sigma) == 20 and (sigma[off]["corr"] == 0.0).all() and (sigma[~off]["corr"] == 1.0).all()


# --------------------------------------------------------------------------------------------- market inputs
def test_zero_or_nan_sigma_or_adv_holds_that_symbol_and_the_rest_trade(trained, clean) -> None:
    traders = clean.traders
    others = clean.quiet
    cases = {traders[0]: ({"sigma_bps": 0.0}, "bad_sigma"), others[0]: ({"sigma_bps": np.nan}, "bad_sigma"),
             others[1]: ({"adv_shares": 0.0, "adv_bar_dollars": 0.0}, "bad_adv"),
             others[2]: ({"adv_shares": np.nan, "adv_bar_dollars": np.nan}, "bad_adv")}
    f = corrupt(clean.features, {(s, c): v for s, (cols, _) in cases.items() for c, v in cols.items()})
    o = clean.out
    out = downstream(o["blended_alpha"], f, o["predictions_barrier"], clean.window.bar, clean.history)
    for sym, (_, reason) in cases.items():
        assert_no_trade(out, [sym], reason)
    rest = ~out["arbitrated_scores"].symbol.isin(list(cases))
    pd.testing.assert_frame_equal(out["arbitrated_scores"][rest], o["arbitrated_scores"][rest])
    assert_rest_trade(out, list(cases))
    # sizing guards on its own too: an allowed signal whose σ or ADV is unusable places no order
    for cols, flag in (({"sigma_bps": 0.0}, "bad_sigma"), ({"adv_bar_dollars": np.nan}, "bad_adv")):
        f2 = corrupt(clean.features, {(traders[0], c): v for c, v in cols.items()})
        z = compute_sized(clean.window.bar, o["gated_signals"], f2, float(get_cfg("broker.initial_cash")),
                          clean.history).set_index("symbol")
        assert not z.loc[traders[0], "has_order"] and z.loc[traders[0], "status"].startswith("bad_input:")
        assert flag in z.loc[traders[0], "status"] and z.loc[traders[1], "has_order"]


def quoted(window: BarWindow, symbol: str, bid_mult: float, ask_mult: float) -> BarWindow:
    """The window with this bar's quote of ``symbol`` replaced by close × the multipliers."""
    ts = parse_bar_key(window.bar)
    hist, snap = window.history.copy(), window.snapshot.copy()
    for frame, at in ((hist, (hist.symbol == symbol) & (hist.ts == ts)), (snap, snap.symbol == symbol)):
        close = frame.loc[at, "close"]
        frame.loc[at, "bid"], frame.loc[at, "ask"] = close * bid_mult, close * ask_mult
    return BarWindow(window.bar, window.times, snap, hist)


def test_zero_or_crossed_spread_holds_that_symbol_and_the_rest_trade(trained, clean) -> None:
    locked, crossed = clean.traders[0], clean.quiet[0]
    window = quoted(quoted(clean.window, locked, 1.0, 1.0), crossed, 1.0005, 0.9995)
    f = features_for_window(window).set_index("symbol")
    assert f.loc[locked, "spread_bps"] == 0.0 and f.loc[crossed, "spread_bps"] < 0
    out = run_chain(window, f.reset_index(), clean.models, clean.history)
    assert_no_trade(out, [locked, crossed], "bad_spread")
    assert_rest_trade(out, [locked, crossed])
    # the gate holds on its own too: a TRADE whose spread is ≤ 0 is held, and sizing places no order
    scores = clean.out["arbitrated_scores"].copy()
    both = clean.traders[:2]
    scores.loc[scores.symbol == both[0], "spread_bps"] = 0.0
    scores.loc[scores.symbol == both[1], "spread_bps"] = -1.0
    g = compute_gated(scores, clean.out["predictions_barrier"], FLAT)
    held = g.set_index("symbol").loc[both]
    assert (held.gate == "hold").all() and (held.reason == "spread").all()
    z = compute_sized(clean.window.bar, g, clean.features, float(get_cfg("broker.initial_cash")), clean.history)
    assert not z.set_index("symbol").loc[both, "has_order"].any()
