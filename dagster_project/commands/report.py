"""The period report: PNG plots and a summary table of a replayed/traded period, from the lineage ``pnl``.

The figures (:func:`summarise`, pure) follow :mod:`dagster_project.commands.performance`: the Sharpe ratio,
its standard error and the volatility come from **daily** returns (close to close per session) with the
number of days, and a visible warning when there are fewer than ``report.min_sessions`` of them; equity and
return are shown after and before costs (fees + realised execution cost vs the fill bar's reference), next
to an equal-weight buy-and-hold of the same universe. Turnover is traded notional over the mean portfolio
value, per session; the hit rate is the share of symbol-bars with a realised P&L that were profitable; costs
are in bps of traded notional; slippage is what the fills paid over the price each order was decided at (the
decision bar's close; fills come at a later bar's open), in bps of the decided notional; exposure is gross
(and net) market value over portfolio value, per bar.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import empyrical  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from CONFIG.config_loader import get_cfg  # noqa: E402
from dagster_project.commands.performance import (  # noqa: E402
    DailyFigures,
    benchmark_equity,
    daily_equity,
    daily_returns,
    figures,
    short_sample_warning,
)
from resources.lineage.store import LineageStore  # noqa: E402


def load_pnl(store: LineageStore, account: str) -> pd.DataFrame:
    pnl = store.read_sql("SELECT * FROM pnl WHERE account = ? ORDER BY bar", [account])
    pnl["time"] = pd.to_datetime(pnl["bar"], format="%Y-%m-%dT%H:%MZ", utc=True)
    return pnl


def load_closes(store: LineageStore, first: str, last: str) -> pd.DataFrame:
    """(bar, symbol, close) of the recorded ``bars`` from ``first`` to ``last`` (the benchmark's prices)."""
    if "bars" not in store.tables():
        return pd.DataFrame({"bar": [], "symbol": [], "close": []})
    return store.read_sql("SELECT bar, symbol, close FROM bars WHERE bar BETWEEN ? AND ? ORDER BY bar, symbol",
                          [first, last])


def summary(store: LineageStore, account: str) -> dict[str, float | int | str]:
    """:func:`summarise` of the account's recorded period. Raises ``LookupError`` when it has no pnl row."""
    pnl = load_pnl(store, account)
    if pnl.empty:
        raise LookupError(f"no pnl recorded for account {account!r}")
    tables = store.tables()
    # nothing filled yet: no symbol ever had a row, so the table was never created (an empty write creates none)
    sym = store.read_sql("SELECT realised_pnl FROM pnl_symbols WHERE account = ? AND realised_pnl <> 0",
                         [account]) if "pnl_symbols" in tables else pd.DataFrame({"realised_pnl": []})
    ks = store.read_sql("SELECT count(*) AS n FROM executions_killswitch WHERE transition <> ''") \
        if "executions_killswitch" in tables else pd.DataFrame({"n": [0]})
    closes = load_closes(store, str(pnl["bar"].iloc[0]), str(pnl["bar"].iloc[-1]))
    return summarise(pnl, closes, sym["realised_pnl"], int(ks["n"].iloc[0]), get_cfg("report.min_sessions"))


def summarise(pnl: pd.DataFrame, closes: pd.DataFrame, realised: pd.Series, kill_switch_transitions: int,
              min_sessions: int) -> dict[str, float | int | str]:
    """Every figure of the report from the ``pnl`` rows of one account (≥ 1 row), the universe's closes
    (bar, symbol, close; may be empty: no benchmark, NaN), the symbol-bars' nonzero realised P&L and the
    kill switch's transition count. Percentages are of equity; ``sample_warning`` is "" when the sample
    has at least ``min_sessions`` days."""
    pnl = pnl.sort_values("bar", kind="mergesort").reset_index(drop=True)
    days = daily_equity(pnl)
    start = days.attrs["start"]
    after = figures(daily_returns(days["after_costs"], start))
    before = figures(daily_returns(days["before_costs"], start))
    bench = _benchmark(pnl, closes)
    value = pnl["portfolio_value"].to_numpy(dtype=float)
    bar_returns = value / np.concatenate([[start], value[:-1]]) - 1.0
    traded = float(pnl["traded_notional"].sum())
    costs = float(days["costs"].sum())
    gross = pnl["gross_exposure"].to_numpy(dtype=float) / value
    net = pnl["net_exposure"].to_numpy(dtype=float) / value
    return {
        "sample_warning": short_sample_warning(after.days, min_sessions) or "",
        "bars": len(pnl), "days": after.days,
        "start_value": start, "end_value": float(value[-1]),
        "total_return_pct": after.total_return * 100,
        "total_return_before_costs_pct": before.total_return * 100,
        "benchmark_return_pct": bench.total_return * 100,
        "sharpe_annualised": after.sharpe, "sharpe_standard_error": after.sharpe_se,
        "sharpe_before_costs": before.sharpe, "benchmark_sharpe": bench.sharpe,
        "volatility_annualised_pct": after.volatility * 100,
        "max_drawdown_pct": float(empyrical.max_drawdown(bar_returns)) * 100,
        "max_daily_drawdown_pct": after.max_drawdown * 100,
        "benchmark_max_daily_drawdown_pct": bench.max_drawdown * 100,
        "mean_daily_return_bps": float(daily_returns(days["after_costs"], start).mean() * 1e4),
        "turnover_per_session": float(traded / value.mean() / after.days),
        "hit_rate": float((realised > 0).mean()) if len(realised) else math.nan,
        "fills": int(pnl["n_fills"].sum()), "traded_notional": traded,
        "fees": float(pnl["fees"].sum()), "costs": costs,
        "costs_bps": costs / traded * 1e4 if traded else math.nan,
        "est_cost": float(pnl["est_cost"].sum()), "realised_cost": float(pnl["realised_cost"].sum()),
        "slippage_vs_decision_bps": _slippage_bps(pnl),
        "mean_gross_exposure_pct": float(gross.mean() * 100), "max_gross_exposure_pct": float(gross.max() * 100),
        "mean_net_exposure_pct": float(net.mean() * 100),
        "kill_switch_transitions": kill_switch_transitions,
    }


def _benchmark(pnl: pd.DataFrame, closes: pd.DataFrame) -> DailyFigures:
    """Daily figures of the equal-weight buy-and-hold over the pnl's bars (all NaN without closes)."""
    closes = closes[closes["bar"].isin(set(pnl["bar"]))] if len(closes) else closes
    if closes.empty:
        return DailyFigures(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    eq = benchmark_equity(closes)
    sessions = pnl.set_index("bar")["session"].reindex(eq.index)
    per_day = eq.groupby(sessions.to_numpy(), sort=True).last()
    return figures(daily_returns(per_day, 1.0))


def _slippage_bps(pnl: pd.DataFrame) -> float:
    """Σ slippage / Σ decided notional over the period, in bps."""
    decided = float(pnl["decided_notional"].sum()) if "decided_notional" in pnl else 0.0
    return float(pnl["slippage"].sum() / decided * 1e4) if decided else float("nan")


def plots(store: LineageStore, account: str, out: Path) -> list[Path]:
    """PNGs of the period: equity after/before costs with the benchmark, drawdown, daily returns, gross and
    net exposure, cumulative costs."""
    pnl = load_pnl(store, account)
    x = np.arange(len(pnl))
    value = pnl["portfolio_value"].to_numpy(dtype=float)
    costs = np.cumsum(pnl["fees"].fillna(0.0).to_numpy(dtype=float) + pnl["realised_cost"].fillna(0.0).to_numpy(dtype=float))
    closes = load_closes(store, str(pnl["bar"].iloc[0]), str(pnl["bar"].iloc[-1]))
    start = float(pnl["start_of_day_equity"].iloc[0])
    paths = []
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(x, value, lw=1.2, label="after costs")
    ax.plot(x, value + costs, lw=1.0, label="before costs")
    if len(closes):
        bench = benchmark_equity(closes).reindex(pnl["bar"]).ffill().to_numpy(dtype=float) * start
        ax.plot(x, bench, lw=1.0, color="gray", label="equal-weight buy & hold")
    _finish(ax, pnl, "Equity", "USD", legend=True)
    paths.append(_save(fig, out / "equity_curve.png"))
    series = {
        "drawdown.png": ("Drawdown", (value / np.maximum.accumulate(np.maximum(value, start)) - 1) * 100, "%"),
        "costs.png": ("Cumulative costs (fees + execution vs reference)", costs, "USD"),
    }
    for name, (title, y, unit) in series.items():
        fig, ax = plt.subplots(figsize=(9, 3.2))
        ax.plot(x, y, lw=1.2)
        _finish(ax, pnl, title, unit)
        paths.append(_save(fig, out / name))
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(x, pnl["gross_exposure"] / pnl["portfolio_value"] * 100, lw=1.2, label="gross")
    ax.plot(x, pnl["net_exposure"] / pnl["portfolio_value"] * 100, lw=1.0, label="net")
    _finish(ax, pnl, "Exposure", "% of PV", legend=True)
    paths.append(_save(fig, out / "gross_exposure.png"))
    days = daily_equity(pnl)
    daily = daily_returns(days["after_costs"], days.attrs["start"]) * 1e4
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.bar(daily.index, daily.to_numpy(), color=np.where(daily.to_numpy() >= 0, "tab:green", "tab:red"))
    ax.set_title("Daily return (after costs)")
    ax.set_ylabel("bps")
    ax.grid(alpha=0.3, axis="y")
    paths.append(_save(fig, out / "daily_returns.png"))
    return paths


def _finish(ax, pnl: pd.DataFrame, title: str, unit: str, legend: bool = False) -> None:
    first = pnl.groupby("session").head(1)
    ax.set_xticks(first.index.to_numpy())
    ax.set_xticklabels(first["session"].tolist(), rotation=0, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_value(value: object) -> str:
    return f"{value:,.4f}" if isinstance(value, float) else str(value)


def write_report(store: LineageStore, account: str, out: Path) -> Path:
    """``report.md`` with the short-sample warning (if any) on top, the figures table and the plots."""
    stats = summary(store, account)
    images = plots(store, account, out)
    lines = [f"# tradegraph report ({account} account)", ""]
    if stats["sample_warning"]:
        lines += [f"> **{stats['sample_warning']}**", ""]
    lines += ["Sharpe ratio and volatility from daily returns (empyrical-reloaded, 252 days a year); standard "
              "error of the Sharpe ratio: Lo (2002), i.i.d.", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {format_value(v)} |" for k, v in stats.items() if k != "sample_warning"]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
