"""Which bar rows can be trusted (pure, vectorised over rows and symbols): row rules, price sanity, split-like
jumps, the spread estimated from high/low/close, and the age of a quote.

Rows are long arrays sorted by (symbol, time); ``seg`` is each row's symbol segment start (the index of the
symbol's first row), ``new_session`` marks a row whose previous row of the symbol is in an earlier session.
Every rule reads only the row and the rows of the same symbol before it, so a decision never changes when
later rows arrive (point in time) and the same file gives the same skips in any process.

Row rules (:func:`row_rules`, first failing rule wins, in this order): a missing, non-finite or non-positive
price; high < low; open or close outside high–low; NaN or negative volume; for files with quotes, a missing or
non-positive bid/ask, a crossed quote (bid > ask; a locked quote bid = ask is real and kept), a close outside
its own quote by more than max(``market.quote_tolerance_bps``·mid, the spread).

Price sanity (:func:`price_jumps`), the rule (decision; SPEC §9 "a price far outside the symbol's recent
range"): with y = log price (forward-adjusted by corporate actions and suspected splits), a row is a jump when
any of its open/high/low/close is farther than max(``jump_sigmas``·σ, ``jump_floor``) from the reference, the
median of the symbol's previous ``reference_rows`` closes; σ = 1.4826 × the median |one-row intraday log
return| over the previous ``sigma_rows`` rows (overnight gaps left out). The reference reads the *raw* previous
closes, skipped ones included, so a new level is confirmed once it holds a majority of them: with 5 reference
rows the fourth row at a new level is accepted (the first three are skipped), and a run of one or two bad
prints never moves the reference. A ×100 or ÷100 print (|y| ≈ 4.6) is never accepted alone.

Implausible new levels (:func:`level_shifts`, decision; README "Your own market data"): a run of skipped jumps
that ends in a confirmed row is a new level; when that row's close lies beyond ×``level_shift_max_ratio`` or
÷``level_shift_max_ratio`` of the last accepted close before the run (the pre-jump level), it is not a price move
but a data event (a vendor switching to cents: ×100; an unadjusted split mid-session) and is never accepted: that
row and every later row nearer the new level than the pre-jump level (in log) are skipped with
:data:`RULE_LEVEL` (the run's jumps stay skipped jumps), so the symbol has no price (no entry, no exit at a wrong price; a held position keeps its last
good mark, flagged stale) until the file is fixed (rows back at the old level are accepted again once confirmed)
or ``market.adjustments_file`` explains the change (an adjusted history has no jump). Rows are still decided from
the row and the rows before it only. The default 3 lies far beyond the jump floor (a genuine 30 % move, log 0.26,
is accepted once confirmed) and below every power-of-ten scale (×10, ×100, ×1000 and their inverses).

Split-like jumps (:func:`split_suspects`, SPEC §9, decision): at a session's first row, an open/previous-close
ratio within ``split_tolerance`` (in log) of 1/k for a k in ``split_ratios`` (new shares per old share; reverse
splits below 1) is a suspected split *whatever the volume says*: the row is kept (it is a real print) but the
symbol is held (no orders) and later rows are compared on the new level. Why not the volume: the session's
first bar trades several times the intraday median (the U shape), so a ÷k volume of a reverse split never
looked "moved toward k×" against the previous rows and a forward split passed with no change at all; a single
opening bar against earlier opening bars is too noisy to tell a split from a news gap. A genuine −50 % (or
×2) overnight gap is rare and holding it is the safe side.

Spread estimate (:func:`estimated_spread`): Abdi & Ranaldo (2017), "A Simple Estimation of Bid-Ask Spreads
from Daily Close, High, and Low Prices", Review of Financial Studies 30(12): s² = 4·E[(c_{t−1} − η_{t−1})
(c_{t−1} − η_t)], c the log close and η the mid-range (log high + log low)/2. Point in time: the mean runs over
the pairs (t−1, t) of the previous ``window`` rows ending at the row (both of one session), negative means
give 0; floored at ``floor_bps``. Unlike a fraction of the bar's range, its expectation is the spread whatever
the bar's length (the range grows with √length; measured on SPY minute bars aggregated to 1/5/15 minutes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg

RULE_PRICE = "non-positive or missing price"
RULE_HIGH_LOW = "high < low"
RULE_OHLC = "open or close outside high-low"
RULE_VOLUME = "NaN or negative volume"
RULE_QUOTE = "missing or non-positive bid/ask"
RULE_CROSSED = "crossed quote (bid > ask)"
RULE_OUTSIDE_QUOTE = "close outside its quote"
RULE_DUPLICATE = "duplicated bar (repeated row)"
RULE_CONFLICT = "duplicated bar (conflicting rows)"
RULE_JUMP = "price jump beyond recent volatility, unconfirmed"
RULE_LEVEL = ("implausible new price level (beyond market.level_shift_max_ratio of the last good close: a unit change "
              "or an unadjusted split), held until the file is fixed or market.adjustments_file explains it")
MAD_TO_SIGMA = 1.4826  # normal consistency constant of the MAD (a definition, not a tunable)
_CHUNK = 200_000       # rows per gathered block (bounds memory of the (rows × window) gathers)


@dataclass(frozen=True)
class QualityParams:
    """Row-trust settings (``market.*``)."""

    quote_tolerance_bps: float
    reference_rows: int
    sigma_rows: int
    jump_sigmas: float
    jump_floor: float
    split_ratios: tuple[float, ...]
    split_tolerance: float
    level_shift_max_ratio: float
    spread_window: int
    spread_floor_bps: float

    @classmethod
    def from_cfg(cls) -> QualityParams:
        m = "market."
        return cls(float(get_cfg(m + "quote_tolerance_bps")), int(get_cfg(m + "sanity_reference_rows")),
                   int(get_cfg(m + "sanity_sigma_rows")), float(get_cfg(m + "jump_sigmas")),
                   float(get_cfg(m + "jump_floor")), tuple(float(k) for k in get_cfg(m + "split_ratios")),
                   float(get_cfg(m + "split_tolerance")), float(get_cfg(m + "level_shift_max_ratio")),
                   int(get_cfg(m + "spread_estimator_bars")), float(get_cfg(m + "estimated_spread_floor_bps")))


def row_rules(frame: pd.DataFrame, has_quotes: bool, quote_tolerance_bps: float) -> np.ndarray:
    """(R,) the first rule each row breaks ("" when none), vectorised."""
    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    v = frame["volume"].to_numpy(dtype=float)
    prices = np.column_stack([o, h, lo, c])
    rules: list[tuple[str, np.ndarray]] = []
    with np.errstate(invalid="ignore"):
        rules += [(RULE_PRICE, ~(np.isfinite(prices) & (prices > 0)).all(axis=1)),
                  (RULE_HIGH_LOW, h < lo),
                  (RULE_OHLC, (o > h) | (o < lo) | (c > h) | (c < lo)),
                  (RULE_VOLUME, ~(np.isfinite(v) & (v >= 0)))]
        if has_quotes:
            bid, ask = frame["bid"].to_numpy(dtype=float), frame["ask"].to_numpy(dtype=float)
            mid = (bid + ask) / 2
            tol = np.maximum(quote_tolerance_bps / 1e4 * mid, ask - bid)
            rules += [(RULE_QUOTE, ~(np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0))),
                      (RULE_CROSSED, bid > ask),
                      (RULE_OUTSIDE_QUOTE, (c < bid - tol) | (c > ask + tol))]
    out = np.full(len(frame), "", dtype=object)
    for name, mask in reversed(rules):  # the first rule in the list wins
        out[mask] = name
    return out


def duplicate_rules(keys: pd.DataFrame, values: pd.DataFrame) -> np.ndarray:
    """(R,) for rows sharing a key (symbol, bar): a repeat of an identical row is a skipped repeat (the first
    copy is kept); rows that share the key but disagree are all skipped (which one is right is unknown)."""
    out = np.full(len(keys), "", dtype=object)
    kid = pd.Series(keys.groupby(list(keys.columns), sort=False, dropna=False).ngroup().to_numpy(), name="_key")
    if not kid.duplicated().any():
        return out
    both = pd.concat([kid, values.reset_index(drop=True)], axis=1)
    repeat = both.duplicated(keep="first").to_numpy()
    versions = both.drop_duplicates().groupby("_key").size()
    conflict = versions.reindex(kid.to_numpy()).to_numpy() > 1
    out[repeat & ~conflict] = RULE_DUPLICATE
    out[conflict] = RULE_CONFLICT
    return out


def _gather(values: np.ndarray, seg: np.ndarray, lags: np.ndarray, rows: slice) -> np.ndarray:
    """(rows, L) values[i − lag] for lag in ``lags``, NaN where i − lag falls before the row's segment."""
    i = np.arange(rows.start, rows.stop)
    idx = i[:, None] - lags[None, :]
    ok = idx >= seg[i][:, None]
    out = values[np.where(ok, idx, 0)]
    return np.where(ok, out, np.nan)


def _nanmedian_rows(block: np.ndarray) -> np.ndarray:
    out = np.full(block.shape[0], np.nan)
    has = np.isfinite(block).any(axis=1)
    if has.any():
        out[has] = np.nanmedian(block[has], axis=1)
    return out


def split_suspects(open_: np.ndarray, close: np.ndarray, seg: np.ndarray, new_session: np.ndarray,
                   log_factor: np.ndarray, p: QualityParams) -> np.ndarray:
    """(R,) the suspected split ratio k of each row (NaN when none): a session's first row whose open sits
    within ``split_tolerance`` (log) of 1/k times the previous close, both forward-adjusted by ``log_factor``
    (R,); the volume is not read (module docstring)."""
    n = len(close)
    out = np.full(n, np.nan)
    cand = np.nonzero(new_session & (np.arange(n) > seg))[0]
    if not len(cand) or not p.split_ratios:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (np.log(open_[cand]) + log_factor[cand]) - (np.log(close[cand - 1]) + log_factor[cand - 1])
        ks = np.log(np.asarray(p.split_ratios, dtype=float))
        miss = np.abs(rho[:, None] + ks[None, :])               # |log(open/prev close) + log k|
        match = miss < p.split_tolerance
    best = np.where(match, miss, np.inf).argmin(axis=1)
    found = match.any(axis=1)
    out[cand[found]] = np.asarray(p.split_ratios)[best[found]]
    return out


def level_shifts(close: np.ndarray, seg: np.ndarray, log_factor: np.ndarray, jumps: np.ndarray,
                 max_ratio: float) -> np.ndarray:
    """(R,) True for the rows of an implausible new level (module docstring): from the row that confirms it to
    the last row nearer the new level than the pre-jump one (the jump rows before it stay jumps).

    ``close`` (R,) finite positive closes, ``log_factor`` (R,) their forward adjustment, ``jumps`` (R,) the
    :func:`price_jumps` mask. Vectorised over rows; the loop runs once per implausible level found (a handful
    in a file), never per row or symbol."""
    n = len(close)
    held = np.zeros(n, dtype=bool)
    if n == 0:
        return held
    y = np.log(close) + log_factor
    i = np.arange(n)
    starts = np.unique(seg)
    seg_end = np.r_[starts[1:], n][np.searchsorted(starts, seg)]
    limit = np.log(max_ratio)
    done = 0  # rows before this one are decided
    while True:
        bad = jumps | held
        last_good = np.maximum.accumulate(np.where(bad, -1, i))       # last accepted row at or before each row
        anchor = np.r_[-1, last_good[:-1]]                            # … strictly before each row
        confirm = ~bad & (i >= done) & (i > seg) & np.r_[False, bad[:-1]] & (anchor >= seg)
        with np.errstate(invalid="ignore"):
            far = confirm & (np.abs(y - y[np.maximum(anchor, 0)]) > limit)
        hit = np.nonzero(far)[0]
        if not len(hit):
            return held
        r = int(hit[0])
        a, end = int(anchor[r]), int(seg_end[r])
        old, new = y[a], y[r]
        nearer_new = np.abs(y[r:end] - new) < np.abs(y[r:end] - old)
        stop = r + (int(np.argmin(nearer_new)) if not nearer_new.all() else len(nearer_new))
        held[r:stop] = True  # the run's jump rows keep their rule: it was decided before row r arrived
        done = stop


def price_jumps(prices: np.ndarray, seg: np.ndarray, new_session: np.ndarray, log_factor: np.ndarray,
                p: QualityParams) -> np.ndarray:
    """(R,) True where a row is a jump beyond the symbol's recent volatility (see the module docstring).

    ``prices`` (R, 4) open, high, low, close, all finite and positive; ``log_factor`` (R,) the forward
    adjustment of each row's log price (corporate actions and suspected splits up to the row)."""
    n = len(prices)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    y = np.log(prices) + log_factor[:, None]
    yc = y[:, 3]
    ret = np.full(n, np.nan)
    ret[1:] = yc[1:] - yc[:-1]
    ret[new_session | (np.arange(n) == seg)] = np.nan  # overnight gaps and each symbol's first row
    ref_lags = np.arange(1, p.reference_rows + 1)
    sig_lags = np.arange(0, p.sigma_rows)  # returns of rows i−1, … (the return at i−1 ends at row i−1)
    absret = np.abs(ret)
    for start in range(0, n, _CHUNK):  # a loop over blocks of rows, never over symbols
        rows = slice(start, min(n, start + _CHUNK))
        ref = _nanmedian_rows(_gather(yc, seg, ref_lags, rows))
        prev_ret = _gather(absret, seg, sig_lags + 1, rows)
        sigma = MAD_TO_SIGMA * _nanmedian_rows(prev_ret)
        limit = np.maximum(np.where(np.isfinite(sigma), p.jump_sigmas * sigma, 0.0), p.jump_floor)
        dev = np.abs(y[rows] - ref[:, None]).max(axis=1)
        out[rows] = np.isfinite(ref) & (dev > limit)
    return out


def estimated_spread(close: np.ndarray, high: np.ndarray, low: np.ndarray, seg: np.ndarray,
                     new_session: np.ndarray, window: int, floor_bps: float) -> np.ndarray:
    """(R,) the Abdi–Ranaldo spread estimate of each row as a fraction of price (see the module docstring);
    NaN until the symbol has ``window // 2`` usable pairs."""
    n = len(close)
    if n == 0:
        return np.empty(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c, eta = np.log(close), (np.log(high) + np.log(low)) / 2
        prod = np.full(n, np.nan)
        prod[1:] = (c[:-1] - eta[:-1]) * (c[:-1] - eta[1:])
    prod[new_session | (np.arange(n) == seg)] = np.nan
    ok = np.isfinite(prod)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, prod, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(n)
    lo = np.maximum(i - window + 1, seg)
    total, count = csum[i + 1] - csum[lo], ccnt[i + 1] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(np.maximum(4.0 * total / count, 0.0))
    s = np.maximum(s, floor_bps / 1e4)
    return np.where(count >= max(1, window // 2), s, np.nan)


def segments(symbols: np.ndarray) -> np.ndarray:
    """(R,) index of the first row of each row's symbol, for rows sorted by symbol."""
    n = len(symbols)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = symbols[1:] != symbols[:-1]
    return np.maximum.accumulate(np.where(start, np.arange(n), 0))


def quote_age_bars(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """(T, N) → (N,) bars since each symbol's quote last changed, at the last row of a (time × symbol) panel
    on the bar grid (NaN where the symbol has no bar). A bar without a row counts as a bar elapsed; a quote
    unchanged over the whole window is as old as the window. NaN for a symbol with no quote at the last bar."""
    t_n = bid.shape[0]
    if t_n == 0:
        return np.full(bid.shape[1], np.nan)
    present = np.isfinite(bid) & np.isfinite(ask)
    fb, fa = _ffill(bid), _ffill(ask)
    changed = np.zeros(bid.shape, dtype=bool)
    changed[1:] = present[1:] & ((bid[1:] != fb[:-1]) | (ask[1:] != fa[:-1]))
    last = np.where(changed, np.arange(t_n)[:, None], -1).max(axis=0)
    age = (t_n - 1 - last).astype(float)
    age[~present[-1]] = np.nan
    return age


def bars_since_trade(volume: np.ndarray) -> np.ndarray:
    """(T, N) → (N,) bars since each symbol's last bar with volume > 0 (the age of a spread estimated from the
    bar's trades); NaN where the symbol has no bar at the last row."""
    t_n = volume.shape[0]
    if t_n == 0:
        return np.full(volume.shape[1], np.nan)
    with np.errstate(invalid="ignore"):
        traded = np.isfinite(volume) & (volume > 0)
    last = np.where(traded, np.arange(t_n)[:, None], -1).max(axis=0)
    age = (t_n - 1 - last).astype(float)
    age[~np.isfinite(volume[-1])] = np.nan
    return age


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down the rows of a (T, N) array, vectorised."""
    ok = np.isfinite(a)
    idx = np.where(ok, np.arange(a.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return a[idx, np.arange(a.shape[1])[None, :]]
