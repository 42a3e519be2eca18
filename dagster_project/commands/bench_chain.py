"""Benchmark of the pure decision chain for one bar (features → sized_orders), vectorised over N symbols.

Why: a bar's budget from close to orders is seconds for the whole run, so the chain's own share must stay
small and grow no faster than the universe. This times model inference (the ``predictions`` stage) apart
from the rest of the chain (``model_skill`` → ``sized_orders``) at 50, 500 and 5 000 symbols, each over
≥ 20 repetitions, and reports p50/p90 and the 5000/500 scaling ratio.

Inputs are synthetic but valid: a small registry trained by the real trainers (every horizon, both return
families, the barrier classifiers); a bars window of N symbols drawn from the simulator's distributions
(``simulator.*``: prices, daily volatility, ADV, spreads, intraday volume noise) with the real features
computed from it; a ``MemoryHistory`` pre-filled with the prediction and sizing history the chain reads (the
IC window plus the longest horizon), whose predictions carry real skill against the window's realised
returns, so standardization, model skill, Σ and the sizing scale all do real work; and a book holding a
few names so gating and sizing see current weights.

Run: ``python -m dagster_project.commands.bench_chain`` (``make bench``). Writes ``<paths.bench>/chain.json`` and
``chain.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.arbitrated_scores.stage import compute_arbitrated
from assets.bars.logic import BarWindow, build_window
from assets.blended_alpha.stage import compute_blended_alpha
from assets.features.logic import features_for_window
from assets.gated_signals.stage import compute_gated
from assets.history import MemoryHistory, PredictionGrid
from assets.model_skill.stage import compute_model_skill
from assets.predictions.models import ModelSet, load_models
from assets.predictions.stage import compute_predictions, previous_bar_keys
from assets.predictions.standardize import standardize
from assets.sized_orders.stage import compute_sized
from CONFIG.config_loader import get_cfg, resolve_path, use_config
from resources.market.calendar import bar_key, get_calendar, parse_bar_key
from resources.market.simulator import SimParams
from TRAINING.common.utils.file_utils import write_atomic_json

# The acceptance targets for this benchmark (what is measured against, not an engine setting).
SIZES = (50, 500, 5000)
REPS = 20
TARGET_REST_P50_MS = 50.0
TARGET_AT_SIZE = 500
PREDICTION_SKILL = 0.3  # share of a synthetic past prediction that is the realised return (the rest noise)
SIGNAL_SHARE = 0.05     # share of the universe with a sizing signal in a synthetic past bar (and held names)
REST_STAGES = ("model_skill", "blended_alpha", "arbitrated_scores", "gated_signals", "sized_orders")


# ----------------------------------------------------------------------------------------------- inputs
def bench_bar() -> str:
    """A mid-session bar of the first partition session (any regular bar would do)."""
    bars = get_calendar().session_bars(get_cfg("market.partitions_start"))
    return bar_key(bars[len(bars) // 2])


def synthetic_window(bar: str, n: int, rng: np.random.Generator) -> BarWindow:
    """``market.history_bars`` bars of N symbols drawn from the simulator's distributions, validated."""
    p, cal = SimParams.from_cfg(), get_calendar()
    ts = parse_bar_key(bar)
    times = cal.previous_bars(ts, get_cfg("market.history_bars"))
    per_session = cal.bars_per_full_session()
    t = len(times)
    p0 = np.exp(rng.uniform(np.log(p.price_min), np.log(p.price_max), n))
    sig_bar = rng.uniform(p.daily_vol_min, p.daily_vol_max, n) / np.sqrt(per_session)
    adv = np.exp(rng.uniform(np.log(p.adv_min), np.log(p.adv_max), n))
    spread = rng.uniform(p.spread_bps_min, p.spread_bps_max, n)
    logp = np.log(p0) + np.cumsum(sig_bar * rng.standard_normal((t, n)), axis=0)
    close = np.exp(logp)
    open_ = np.exp(np.vstack([np.log(p0)[None, :], logp[:-1]]))
    hl = np.abs(rng.standard_normal((t, n))) * 0.5 * sig_bar
    spr = spread * np.exp(0.2 * rng.standard_normal((t, n)))
    symbols = np.array([f"S{i:05d}" for i in range(1, n + 1)], dtype=object)
    raw = pd.DataFrame({
        "ts": np.repeat(times, n), "symbol": np.tile(symbols, t), "open": open_.ravel(),
        "high": (np.maximum(open_, close) * np.exp(hl)).ravel(), "low": (np.minimum(open_, close) * np.exp(-hl)).ravel(),
        "close": close.ravel(), "volume": np.round(adv / per_session * np.exp(0.3 * rng.standard_normal((t, n)))).ravel(),
        "bid": (close * (1 - spr / 2e4)).ravel(), "ask": (close * (1 + spr / 2e4)).ravel()})
    window, _ = build_window(bar, ts, times, raw, symbols, pd.Series(adv, index=symbols))
    return window


def synthetic_history(window: BarWindow, features: pd.DataFrame, models: ModelSet,
                      rng: np.random.Generator) -> MemoryHistory:
    """Past predictions with real skill against the window's realised returns, and past sizing raws
    (signal / σ for a few symbols per bar, signals of the size of the trade reserve)."""
    bar_min = get_cfg("market.bar_minutes")
    horizons = sorted(get_cfg("horizons.minutes"))
    n_bars = get_cfg("blending.ic_window_bars") + max(horizons) // bar_min
    keys = previous_bar_keys(window.bar, n_bars)
    panel = window.panel()
    close = pd.DataFrame(panel["close"], index=[bar_key(t) for t in window.times], columns=panel.symbols)
    fams = sorted({fam for (_, fam) in models.models if fam != "barrier_lightgbm"})
    clip = get_cfg("standardization.clip")
    n = len(panel.symbols)
    sigma = features.set_index("symbol")["sigma_bps"].reindex(panel.symbols).to_numpy(dtype=float)
    signal_bps = 2 * get_cfg("arbitration.reserve_base_bps")
    history = MemoryHistory(n_bars + 1)
    for key in keys:
        i = close.index.get_loc(key)
        parts = []
        for h in horizons:
            j = min(i + h // bar_min, len(close) - 1)
            realised = np.log(close.iloc[j].to_numpy() / close.iloc[i].to_numpy())
            scale = np.nanstd(realised) or 1e-3
            for fam in fams:
                raw = PREDICTION_SKILL * realised + scale * rng.standard_normal(n)
                parts.append(pd.DataFrame({"symbol": panel.symbols, "horizon": h, "family": fam, "raw": raw,
                                           "std": standardize(raw, np.empty(0), clip)}))
        preds = pd.concat(parts, ignore_index=True).sort_values(["symbol", "horizon", "family"], kind="mergesort")
        sized_raw = np.where(rng.random(n) < SIGNAL_SHARE, signal_bps * rng.standard_normal(n) / sigma, 0.0)
        history.add(key, preds.reset_index(drop=True), pd.DataFrame({"symbol": panel.symbols, "raw": sized_raw}))
    return history


def synthetic_book(features: pd.DataFrame, pv: float, rng: np.random.Generator) -> pd.DataFrame:
    """A few held names, long and short, at twice the no-trade band each, with half the gross target."""
    half_gross, weight = get_cfg("sizing.gross_target") / 2, 2 * get_cfg("sizing.no_trade_band")
    n_held = max(1, min(int(np.ceil(SIGNAL_SHARE * len(features))), int(half_gross / weight)))
    held = features.iloc[np.sort(rng.choice(len(features), size=min(n_held, len(features)), replace=False))]
    w = half_gross / len(held) * rng.choice([-1.0, 1.0], len(held))
    return pd.DataFrame({"symbol": held["symbol"].to_numpy(), "qty": np.trunc(w * pv / held["price"].to_numpy())})


# ----------------------------------------------------------------------------------------------- timing
class TimedHistory:
    """The chain's history provider, timed: the report says how much of a stage is reading history."""

    def __init__(self, inner: MemoryHistory):
        self.inner, self.ms = inner, 0.0

    def _time(self, fn: Callable[[list[str]], pd.DataFrame], bars: list[str]) -> pd.DataFrame:
        t0 = time.perf_counter()
        out = fn(bars)
        self.ms += (time.perf_counter() - t0) * 1e3
        return out

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        return self._time(self.inner.predictions, bars)

    def prediction_grid(self, bars: list[str]) -> PredictionGrid:
        return self._time(self.inner.prediction_grid, bars)

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        return self._time(self.inner.sizing_raw, bars)


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1e3


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def bench_size(n: int, models: ModelSet, reps: int, seed: int) -> dict[str, Any]:
    """p50/p90 (ms) of inference and of the rest of the chain at N symbols."""
    rng = np.random.default_rng([seed, n])
    bar = bench_bar()
    window = synthetic_window(bar, n, rng)
    features = features_for_window(window)
    history = TimedHistory(synthetic_history(window, features, models, rng))
    pv = float(get_cfg("broker.initial_cash"))
    book = synthetic_book(features, pv, rng)
    infer, reads, stages = [], [], {s: [] for s in REST_STAGES}
    for rep in range(reps + 1):  # the first repetition warms caches and is not counted
        preds, t_inf = _timed(compute_predictions, window, features, models, history)
        p = preds["predictions"]
        history.ms = 0.0
        skill, t1 = _timed(compute_model_skill, window, features, p, models, history)
        blended, t2 = _timed(compute_blended_alpha, p, skill["model_skill"], skill["model_skill_sigma"], models)
        arb, t3 = _timed(compute_arbitrated, blended["blended_alpha"], features, pv)
        gated, t4 = _timed(compute_gated, arb["arbitrated_scores"], preds["predictions_barrier"], book)
        sized, t5 = _timed(compute_sized, bar, gated, features, pv, history)
        if rep:
            infer.append(t_inf)
            reads.append(history.ms)
            for s, t in zip(REST_STAGES, (t1, t2, t3, t4, t5), strict=True):
                stages[s].append(t)
    rest = np.sum([stages[s] for s in REST_STAGES], axis=0)
    return {
        "n_symbols": n, "valid_symbols": int(features["valid"].sum()), "reps": reps,
        "inference_p50_ms": _pct(infer, 50), "inference_p90_ms": _pct(infer, 90),
        "rest_p50_ms": _pct(rest, 50), "rest_p90_ms": _pct(rest, 90),
        "rest_history_reads_p50_ms": _pct(reads, 50), "rest_excl_history_reads_p50_ms": _pct(rest - reads, 50),
        "stages_p50_ms": {s: _pct(stages[s], 50) for s in REST_STAGES},
        "trades": int((arb["arbitrated_scores"]["decision"] == "TRADE").sum()),
        "orders": int(sized["has_order"].sum()),
    }


def markdown(report: dict[str, Any]) -> str:
    """The results as a markdown table (one row per universe size) plus the scaling and the verdict."""
    head = ("| symbols | inference p50 (ms) | inference p90 (ms) | rest p50 (ms) | rest p90 (ms) | "
            "of rest: history reads p50 | rest without them p50 | "
            + " | ".join(f"{s} p50" for s in REST_STAGES) + " | trades | orders |")
    rule = "|" + "---|" * (10 + len(REST_STAGES) - 1)
    rows = [f"| {r['n_symbols']} | {r['inference_p50_ms']:.1f} | {r['inference_p90_ms']:.1f} | "
            f"{r['rest_p50_ms']:.1f} | {r['rest_p90_ms']:.1f} | {r['rest_history_reads_p50_ms']:.1f} | "
            f"{r['rest_excl_history_reads_p50_ms']:.1f} | "
            + " | ".join(f"{r['stages_p50_ms'][s]:.1f}" for s in REST_STAGES)
            + f" | {r['trades']} | {r['orders']} |" for r in report["results"]]
    m = report["machine"]
    lines = [f"Pure chain benchmark, one bar, {report['reps']} repetitions (p50/p90), {report['generated_at']} "
             f"({m['cpus']} CPUs, 1-min load {m['load_1m_after']} at the end)", "",
             head, rule, *rows, ""]
    sc = report.get("scaling_5000_over_500")
    if sc:
        lines.append(f"Scaling 5000/500 (p50): inference ×{sc['inference']:.2f}, rest ×{sc['rest']:.2f} "
                     f"(linear = ×10).")
    t = report["target"]
    if t["rest_p50_ms"] is not None:
        lines.append(f"Target: rest of the chain ≤ {t['limit_ms']:.0f} ms p50 at {t['n_symbols']} symbols — "
                     f"measured {t['rest_p50_ms']:.1f} ms: {'met' if t['met'] else 'NOT met'}.")
    return "\n".join(lines) + "\n"


def run(sizes: Sequence[int] = SIZES, reps: int = REPS, registry: str | None = None,
        out_dir: Path | None = None) -> dict[str, Any]:
    """Train (or reuse) a small registry, benchmark each size, write chain.json and chain.md."""
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp:
        if registry is None:
            from TRAINING.testing import train_small_registry

            registry = str(train_small_registry(tmp))
        with use_config({"paths": {"registry": str(Path(registry).resolve())}}):
            models = load_models()
            bad = models.status[models.status["status"] != "ok"]
            if len(bad):
                raise RuntimeError(f"benchmark registry {registry} is incomplete:\n{bad.to_string(index=False)}")
            results = [bench_size(n, models, reps, get_cfg("simulator.seed")) for n in sizes]
    by_n = {r["n_symbols"]: r for r in results}
    at = by_n.get(TARGET_AT_SIZE)
    report: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.UTC), "reps": reps, "bar": bench_bar(), "results": results,
        "machine": {"cpus": os.cpu_count(), "load_1m_after": round(os.getloadavg()[0], 2)},
        "target": {"n_symbols": TARGET_AT_SIZE, "limit_ms": TARGET_REST_P50_MS,
                   "rest_p50_ms": at["rest_p50_ms"] if at else None,
                   "met": bool(at and at["rest_p50_ms"] <= TARGET_REST_P50_MS)},
    }
    if 500 in by_n and 5000 in by_n:
        report["scaling_5000_over_500"] = {
            k: by_n[5000][f"{k}_p50_ms"] / by_n[500][f"{k}_p50_ms"] for k in ("inference", "rest")}
    out = out_dir or resolve_path("paths.bench")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic_json(out / "chain.json", report)
    (out / "chain.md").write_text(markdown(report))
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="universe sizes (symbols)")
    ap.add_argument("--reps", type=int, default=REPS, help="timed repetitions per size (≥ 20 for the report)")
    ap.add_argument("--registry", default=None, help="reuse a trained registry instead of training a small one")
    ap.add_argument("--out", default=None, help="output directory (default: paths.bench)")
    args = ap.parse_args(argv)
    report = run(args.sizes, args.reps, args.registry, Path(args.out) if args.out else None)
    print(markdown(report), end="")
    return report


if __name__ == "__main__":
    main()
