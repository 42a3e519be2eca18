"""Performance figures of a traded period, from the lineage ``pnl`` rows (pure: frames in, numbers out).

Why daily: the Sharpe ratio and volatility are computed from **daily** returns (one per session, close to
close), never from bar returns annualised by √(bars per year): intraday bar returns are autocorrelated and
heteroscedastic (open/close), so the √-rule overstates the Sharpe ratio. The statistics themselves come from
empyrical-reloaded (``sharpe_ratio``, ``annual_volatility``, ``max_drawdown``, annualised with its 252
trading days); the standard error of the Sharpe ratio is Lo (2002), "The Statistics of Sharpe Ratios",
Financial Analysts Journal 58(4), eq. (9) for i.i.d. returns: SE(SR) = √((1 + SR²/2) / n) with SR the
per-day ratio and n the number of days, annualised like the ratio itself (× √252).

Equity before costs adds back every cost the fills paid (fees + realised execution cost vs the fill bar's
reference price): what the same trades would have earned at the reference prices. The benchmark is an
equal-weight buy-and-hold of the same universe: equal amounts of every symbol with a close at the first
bar, held to the end (value = mean of close_t / close_first, a missing close carries the last one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import empyrical
import numpy as np
import pandas as pd
from empyrical.periods import APPROX_BDAYS_PER_YEAR


@dataclass(frozen=True)
class DailyFigures:
    """Sharpe and friends of one daily return series (after or before costs, or the benchmark)."""

    days: int
    total_return: float        # fraction over the period
    sharpe: float              # annualised, daily returns
    sharpe_se: float           # annualised standard error (Lo 2002, i.i.d.)
    volatility: float          # annualised, daily returns
    max_drawdown: float        # fraction ≤ 0, of the daily closes


def daily_equity(pnl: pd.DataFrame) -> pd.DataFrame:
    """Per session (index, ascending): equity at its last bar after and before costs, the session's costs.

    ``pnl``: the lineage ``pnl`` rows of one account (bar, session, portfolio_value, start_of_day_equity,
    fees, realised_cost), any order. The first row's ``start_of_day_equity`` is the starting equity (row
    ``start`` is not returned; :func:`daily_returns` uses it). Raises ``ValueError`` on an empty frame.
    """
    if pnl.empty:
        raise ValueError("no pnl rows: nothing to report")
    p = pnl.sort_values("bar", kind="mergesort")
    costs = p["fees"].fillna(0.0).to_numpy(dtype=float) + p["realised_cost"].fillna(0.0).to_numpy(dtype=float)
    frame = pd.DataFrame({"session": p["session"].to_numpy(), "after_costs": p["portfolio_value"].to_numpy(dtype=float),
                          "before_costs": p["portfolio_value"].to_numpy(dtype=float) + np.cumsum(costs),
                          "costs": costs})
    out = frame.groupby("session", sort=True).agg(after_costs=("after_costs", "last"),
                                                  before_costs=("before_costs", "last"), costs=("costs", "sum"))
    out.attrs["start"] = float(p["start_of_day_equity"].iloc[0])
    return out


def daily_returns(equity: pd.Series, start: float) -> pd.Series:
    """Close-to-close returns of a per-session equity series; the first session's against ``start``."""
    values = equity.to_numpy(dtype=float)
    prev = np.concatenate([[start], values[:-1]])
    return pd.Series(values / prev - 1.0, index=equity.index)


def benchmark_equity(closes: pd.DataFrame) -> pd.Series:
    """Equal-weight buy-and-hold of the universe per bar (index: bar, ascending; value 1.0 at the first bar).

    ``closes``: rows (bar, symbol, close). Symbols without a finite close at the first bar are left out (they
    could not have been bought); a later missing close carries the symbol's last one. Raises ``ValueError``
    when no symbol has a close at the first bar.
    """
    bars = np.sort(closes["bar"].unique())   # every bar, even one where no symbol has a close
    wide = closes.pivot_table(index="bar", columns="symbol", values="close", aggfunc="last").reindex(bars)
    wide = wide.where(wide > 0)
    first = wide.iloc[0]
    held = first.index[np.isfinite(first.to_numpy(dtype=float))]
    if not len(held):
        raise ValueError("no symbol has a close at the first bar: no benchmark")
    rel = wide[held].ffill().to_numpy(dtype=float) / first[held].to_numpy(dtype=float)
    return pd.Series(rel.mean(axis=1), index=wide.index)


def figures(returns: pd.Series) -> DailyFigures:
    """Annualised figures of a daily return series (NaN where undefined: fewer than 2 days or no variance)."""
    r = returns.to_numpy(dtype=float)
    n = len(r)
    sharpe = float(empyrical.sharpe_ratio(r)) if n > 1 else math.nan
    per_day = sharpe / math.sqrt(APPROX_BDAYS_PER_YEAR)
    se = math.sqrt((1.0 + per_day ** 2 / 2.0) / n) * math.sqrt(APPROX_BDAYS_PER_YEAR) if n > 1 else math.nan
    return DailyFigures(
        days=n,
        total_return=float(np.prod(1.0 + r) - 1.0) if n else math.nan,
        sharpe=sharpe,
        sharpe_se=se if math.isfinite(sharpe) else math.nan,
        volatility=float(empyrical.annual_volatility(r)) if n > 1 else math.nan,
        max_drawdown=float(empyrical.max_drawdown(r)) if n else math.nan,
    )


def short_sample_warning(days: int, min_sessions: int) -> str | None:
    """The warning a report shows when its sample is too short to say anything (``report.min_sessions``)."""
    if days >= min_sessions:
        return None
    return (f"WARNING: only {days} trading day{'s' if days != 1 else ''} (fewer than report.min_sessions = "
            f"{min_sessions}): the Sharpe ratio and volatility are not meaningful on so short a sample")
