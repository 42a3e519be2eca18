"""The demo report: PNG plots and a summary table of a replayed/traded period, from the lineage ``pnl``.

Sharpe is annualised from bar returns (√(bars per session × 252)); turnover is traded notional over the
mean portfolio value, per session; the hit rate is the share of symbol-bars with a realised P&L that were
profitable; costs are fees plus realised execution costs (fill vs the fill bar's reference price) in bps of
traded notional; slippage is what the fills paid over the price each order was decided at (the decision
bar's close; fills come at a later bar's open), in bps of the decided notional.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from resources.lineage.store import LineageStore  # noqa: E402
from resources.market.calendar import get_calendar  # noqa: E402

TRADING_DAYS = 252


def load_pnl(store: LineageStore, account: str) -> pd.DataFrame:
    pnl = store.read_sql("SELECT * FROM pnl WHERE account = ? ORDER BY bar", [account])
    pnl["time"] = pd.to_datetime(pnl["bar"], format="%Y-%m-%dT%H:%MZ", utc=True)
    return pnl


def summary(store: LineageStore, account: str) -> dict[str, float]:
    pnl = load_pnl(store, account)
    if pnl.empty:
        raise LookupError(f"no pnl recorded for account {account!r}")
    value = pnl["portfolio_value"].to_numpy(dtype=float)
    ret = np.diff(value) / value[:-1]
    per_year = np.sqrt(TRADING_DAYS * get_calendar().bars_per_full_session())
    sharpe = float(ret.mean() / ret.std() * per_year) if len(ret) > 1 and ret.std() > 0 else float("nan")
    dd = value / np.maximum.accumulate(value) - 1
    daily = pnl.groupby("session")["daily_return"].last()
    tables = store.tables()
    # nothing filled yet: no symbol ever had a row, so the table was never created (an empty write creates none)
    sym = store.read_sql("SELECT realised_pnl FROM pnl_symbols WHERE account = ? AND realised_pnl <> 0",
                         [account]) if "pnl_symbols" in tables else pd.DataFrame({"realised_pnl": []})
    traded = float(pnl["traded_notional"].sum())
    costs = float(pnl["fees"].sum() + pnl["realised_cost"].sum())
    ks = store.read_sql("SELECT count(*) AS n FROM executions_killswitch WHERE transition <> ''") \
        if "executions_killswitch" in tables else pd.DataFrame({"n": [0]})
    return {
        "bars": len(pnl), "sessions": int(pnl["session"].nunique()),
        "start_value": float(value[0]), "end_value": float(value[-1]),
        "total_return_pct": float((value[-1] / value[0] - 1) * 100),
        "sharpe_annualised": sharpe, "max_drawdown_pct": float(dd.min() * 100),
        "mean_daily_return_bps": float(daily.mean() * 1e4),
        "turnover_per_session": float(traded / value.mean() / max(1, pnl["session"].nunique())),
        "hit_rate": float((sym["realised_pnl"] > 0).mean()) if len(sym) else float("nan"),
        "fills": int(pnl["n_fills"].sum()), "traded_notional": traded,
        "fees": float(pnl["fees"].sum()), "costs_bps": costs / traded * 1e4 if traded else float("nan"),
        "est_cost": float(pnl["est_cost"].sum()), "realised_cost": float(pnl["realised_cost"].sum()),
        "slippage_vs_decision_bps": _slippage_bps(pnl),
        "mean_gross_exposure_pct": float((pnl["gross_exposure"] / pnl["portfolio_value"]).mean() * 100),
        "kill_switch_transitions": int(ks["n"].iloc[0]),
    }


def _slippage_bps(pnl: pd.DataFrame) -> float:
    """Σ slippage / Σ decided notional over the period, in bps."""
    decided = float(pnl["decided_notional"].sum()) if "decided_notional" in pnl else 0.0
    return float(pnl["slippage"].sum() / decided * 1e4) if decided else float("nan")


def plots(store: LineageStore, account: str, out: Path) -> list[Path]:
    pnl = load_pnl(store, account)
    x = np.arange(len(pnl))
    value = pnl["portfolio_value"].to_numpy(dtype=float)
    figs = {
        "equity_curve.png": ("Portfolio value", value, "USD"),
        "drawdown.png": ("Drawdown", (value / np.maximum.accumulate(value) - 1) * 100, "%"),
        "gross_exposure.png": ("Gross exposure", pnl["gross_exposure"] / pnl["portfolio_value"] * 100, "% of PV"),
        "costs.png": ("Cumulative costs", np.cumsum(pnl["fees"] + pnl["realised_cost"]), "USD"),
    }
    paths = []
    out.mkdir(parents=True, exist_ok=True)
    for name, (title, y, unit) in figs.items():
        fig, ax = plt.subplots(figsize=(9, 3.2))
        ax.plot(x, y, lw=1.2)
        _session_ticks(ax, pnl)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    daily = pnl.groupby("session")["daily_return"].last() * 1e4
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.bar(daily.index, daily.to_numpy(), color=np.where(daily.to_numpy() >= 0, "tab:green", "tab:red"))
    ax.set_title("Daily return")
    ax.set_ylabel("bps")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "daily_returns.png", dpi=110)
    plt.close(fig)
    return paths + [out / "daily_returns.png"]


def _session_ticks(ax, pnl: pd.DataFrame) -> None:
    first = pnl.groupby("session").head(1)
    ax.set_xticks(first.index.to_numpy())
    ax.set_xticklabels(first["session"].tolist(), rotation=0, fontsize=8)


def write_report(store: LineageStore, account: str, out: Path) -> Path:
    stats = summary(store, account)
    images = plots(store, account, out)
    lines = [f"# tradegraph demo report ({account} account)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:,.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in stats.items()]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
