"""The ``files`` market-data source: a directory of ``<SYMBOL>.csv`` / ``<SYMBOL>.parquet``, checked at load.

Contract (SPEC §10; README "Your own market data"): columns ``ts, open, high, low, close, volume`` and optionally
``bid, ask`` (the bar's closing quote) and ``quote_ts`` (when that quote was taken). ``ts`` is read under
``market.files_timezone`` and ``market.files_stamp`` (:mod:`resources.market.contract`); each file is checked
against the calendar's grid and refused with a :class:`DataError` when it does not fit (every refused file is
listed by ``tradegraph data check``). Rows are then kept or skipped once, at load, by rules that read only the
row and the symbol's earlier rows (:mod:`assets.bars.quality`): time rules (unparseable, outside the calendar's
range, outside the session, off the grid), row rules (prices, volume, quote), duplicates, and price jumps.
Every skip is kept in :attr:`FilesSource.skips` (file, symbol, ts, rule, rows) and reaches lineage through the
``bars`` asset of the bar that would have seen the row. Without quote columns the spread is estimated
(Abdi–Ranaldo, :func:`assets.bars.quality.estimated_spread`) and the rows say so (``spread_estimated``).

Cost: everything above happens once per load. Per bar, :meth:`FilesSource.history` slices the time-sorted rows
with two binary searches and :meth:`FilesSource.adv_shares` reads a table of daily volumes built at load, so a
bar costs the same for a file of a week or of years (``make bench`` measures it at two lengths).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from assets.bars.quality import (
    RULE_JUMP,
    RULE_LEVEL,
    QualityParams,
    duplicate_rules,
    estimated_spread,
    level_shifts,
    price_jumps,
    row_rules,
    segments,
    split_suspects,
)
from CONFIG.config_loader import get_cfg
from resources.market.adjustments import empty_adjustments, forward_log_factor, read_adjustments, with_factors
from resources.market.calendar import TradingCalendar, get_calendar
from resources.market.contract import (
    RULE_OUT_OF_RANGE,
    RULE_UNPARSEABLE,
    Convention,
    DataError,
    FileDiagnosis,
    Grid,
    diagnose,
    instants,
    match_grid,
    read_times,
)
from resources.market.simulator import BAR_COLUMNS

REQUIRED = ("ts", "open", "high", "low", "close", "volume")
SKIP_COLUMNS = ["file", "symbol", "ts", "rule", "rows"]
FLAG_COLUMNS = ["symbol", "ts", "split_ratio", "reason"]
EXTRA_COLUMNS = ["quote_ts", "spread_estimated"]  # carried in history rows, not in the lineage market_bars


def empty_skips() -> pd.DataFrame:
    return pd.DataFrame({"file": pd.Series(dtype=object), "symbol": pd.Series(dtype=object),
                         "ts": pd.Series(dtype="datetime64[ns, UTC]"), "rule": pd.Series(dtype=object),
                         "rows": pd.Series(dtype=np.int64)})


def empty_flags() -> pd.DataFrame:
    return pd.DataFrame({"symbol": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                         "split_ratio": pd.Series(dtype=float), "reason": pd.Series(dtype=object)})


class FilesSource:
    """Bars from files, checked at load (see the module docstring).

    ``refuse`` False keeps going past a refused file (``tradegraph data check`` reads :attr:`diagnoses`);
    the engine always refuses. ``adjustments`` overrides ``market.adjustments_file`` (a path, or "" for none).
    """

    def __init__(self, directory: str | Path, calendar: TradingCalendar | None = None, *,
                 convention: Convention | None = None, refuse: bool = True, adjustments: str | None = None):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise DataError(f"market.files_dir {self.dir} is not a directory")
        self.calendar = calendar or get_calendar()
        self.convention = convention or Convention.from_cfg()
        self.params = QualityParams.from_cfg()
        self.min_grid_share = float(get_cfg("market.files_min_grid_share"))
        self.min_coverage = float(get_cfg("market.files_min_coverage"))
        adj_path = get_cfg("market.adjustments_file") if adjustments is None else adjustments
        actions = read_adjustments(adj_path, self.calendar) if adj_path else empty_adjustments()
        self.diagnoses: list[FileDiagnosis] = []
        rows, skips, flags = [], [], []
        for path in self._files():  # a loop over files at load, never on a per-bar path
            diag, r, s, f = self._load_file(path, actions)
            self.diagnoses.append(diag)
            rows += [r] if r is not None else []
            skips += [s] if s is not None and len(s) else []
            flags += [f] if f is not None and len(f) else []
        refused = [d for d in self.diagnoses if d.verdict == "refused"]
        if refuse and refused:
            more = f" ({len(refused) - 1} more file(s) refused)" if len(refused) > 1 else ""
            raise DataError(f"{refused[0].error}{more}; `tradegraph data check --dir {self.dir}` shows each file")
        self._symbols = np.array(sorted(d.symbol for d in self.diagnoses if d.verdict != "refused"))
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=BAR_COLUMNS + EXTRA_COLUMNS)
        self._rows = frame.sort_values(["ts", "symbol"], kind="mergesort").reset_index(drop=True)
        self._ts = self._rows["ts"].to_numpy(dtype="datetime64[ns]") if len(self._rows) else np.array(
            [], dtype="datetime64[ns]")
        self.skips = (pd.concat(skips, ignore_index=True).sort_values(["ts", "file"], kind="mergesort")
                      .reset_index(drop=True) if skips else empty_skips())
        self.flags = (pd.concat(flags, ignore_index=True).sort_values(["ts", "symbol"], kind="mergesort")
                      .reset_index(drop=True) if flags else empty_flags())
        self.adjustments = with_factors(actions, self._rows) if len(actions) else empty_adjustments()
        self._daily_volume()
        self._adv: dict[dt.date, pd.Series] = {}

    # ---------------------------------------------------------------------------------------------- load
    def _files(self) -> list[Path]:
        files = sorted(p for p in self.dir.iterdir() if p.suffix in (".parquet", ".csv"))
        if not files:
            raise DataError(f"{self.dir}: no .parquet or .csv bar files (market.files_dir)")
        return files

    def _load_file(self, path: Path, actions: pd.DataFrame):
        sym = path.stem
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except Exception as exc:  # any parse failure of the file: refused, named
            diag = FileDiagnosis(str(path), sym)
            diag.refuse(f"unreadable ({type(exc).__name__}: {exc})")
            return diag, None, None, None
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            diag = FileDiagnosis(str(path), sym, rows=len(frame))
            diag.refuse(f"missing column(s) {missing} (needed: {list(REQUIRED)}, optional: bid, ask, quote_ts)")
            return diag, None, None, None
        raw = read_times(frame["ts"])
        diag, times = diagnose(str(path), sym, raw, self.calendar, self.convention, self.min_grid_share,
                               self.min_coverage)
        if diag.verdict == "refused":
            return diag, None, None, None
        t = times[~np.isnat(times)]
        back = np.nonzero(np.diff(t) < np.timedelta64(0, "ns"))[0]
        if len(back):
            row = int(np.nonzero(~np.isnat(times))[0][back[0] + 1])
            diag.refuse(f"row {row}: timestamp {pd.Timestamp(times[row], tz='UTC')} is before the previous row "
                        "(rule: rows in time order)")
            return diag, None, None, None
        grid = Grid.spanning(self.calendar, times)
        m = match_grid(times, grid, self.convention.stamp, self.calendar.tz)
        has_quotes = "bid" in frame.columns and "ask" in frame.columns
        out = pd.DataFrame({"ts": pd.DatetimeIndex(m.close).tz_localize("UTC"), "symbol": sym})
        for col in ("open", "high", "low", "close", "volume"):
            out[col] = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        for col in ("bid", "ask"):
            out[col] = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float) if has_quotes else np.nan
        if "quote_ts" in frame.columns:
            q = read_times(frame["quote_ts"])
            out["quote_ts"] = pd.DatetimeIndex(instants(q, self.convention)).tz_localize("UTC")
        else:
            out["quote_ts"] = pd.NaT
        rule = m.rule.astype(object)
        live = rule == ""
        rule[live] = row_rules(out[live], has_quotes, self.params.quote_tolerance_bps)
        live = rule == ""
        rule[live] = duplicate_rules(out.loc[live, ["ts"]], out.loc[live, ["open", "high", "low", "close", "volume",
                                                                            "bid", "ask"]])
        live = rule == ""
        flags = self._price_rules(out, live, rule, grid, m.bar, actions)
        live = rule == ""
        out["spread_estimated"] = not has_quotes
        if not has_quotes:
            self._estimate_quotes(out, live, grid, m.bar)
        skips = _skip_rows(str(path), sym, rule, times, out["ts"])
        diag.skips = {str(k): int(v) for k, v in skips.groupby("rule")["rows"].sum().items()}
        if not live.any():
            diag.warn("no usable row")
        return diag, out[live].reset_index(drop=True)[BAR_COLUMNS + EXTRA_COLUMNS], skips, flags

    def _price_rules(self, out: pd.DataFrame, live: np.ndarray, rule: np.ndarray, grid: Grid, bar: np.ndarray,
                     actions: pd.DataFrame) -> pd.DataFrame:
        """Split-like jumps (flags), price jumps and implausible new levels (skips) on the rows that passed
        the row rules (:func:`price_rules`)."""
        idx = np.nonzero(live)[0]
        if not len(idx):
            return empty_flags()
        found, flags = price_rules(out.iloc[idx], grid.days[bar[idx]], actions, self.params)
        rule[idx] = np.where(found != "", found, rule[idx])
        return flags

    def _estimate_quotes(self, out: pd.DataFrame, live: np.ndarray, grid: Grid, bar: np.ndarray) -> None:
        idx = np.nonzero(live)[0]
        if not len(idx):
            return
        days = grid.days[bar[idx]]
        new_session = np.ones(len(idx), dtype=bool)
        new_session[1:] = days[1:] != days[:-1]
        close = out["close"].to_numpy(float)[idx]
        s = estimated_spread(close, out["high"].to_numpy(float)[idx], out["low"].to_numpy(float)[idx],
                             np.zeros(len(idx), dtype=np.int64), new_session, self.params.spread_window,
                             self.params.spread_floor_bps)
        bid, ask = np.full(len(out), np.nan), np.full(len(out), np.nan)
        bid[idx], ask[idx] = close * (1 - s / 2), close * (1 + s / 2)
        out["bid"], out["ask"] = bid, ask

    def _daily_volume(self) -> None:
        """Per calendar session and symbol: the session's volume and whether it has rows (ADV's inputs)."""
        r = self._rows
        self._vol_days = np.array([], dtype="datetime64[D]")
        self._vol = np.zeros((0, len(self._symbols)))
        self._has = np.zeros((0, len(self._symbols)), dtype=bool)
        if r.empty:
            return
        days = self.calendar.session_days(pd.DatetimeIndex(r["ts"]))
        d_codes, d_uniq = pd.factorize(days, sort=True)
        s_codes = np.searchsorted(self._symbols, r["symbol"].to_numpy())
        vol = np.zeros((len(d_uniq), len(self._symbols)))
        np.add.at(vol, (d_codes, s_codes), r["volume"].to_numpy(float))
        has = np.zeros(vol.shape, dtype=bool)
        has[d_codes, s_codes] = True
        self._vol_days, self._vol, self._has = np.asarray(d_uniq, dtype="datetime64[D]"), vol, has

    # ---------------------------------------------------------------------------------------------- per bar
    def symbols(self) -> np.ndarray:
        return self._symbols

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        """Accepted rows of the ``n_bars`` bar closes up to ``bar``, sorted by (ts, symbol); raw prices (the
        window applies :attr:`adjustments`)."""
        closes = self.calendar.previous_bars(bar, n_bars)
        if not len(closes):
            return self._rows.iloc[0:0].copy()
        lo = np.searchsorted(self._ts, closes[0].tz_convert(None).to_datetime64(), side="left")
        hi = np.searchsorted(self._ts, closes[-1].tz_convert(None).to_datetime64(), side="right")
        return self._rows.iloc[lo:hi].reset_index(drop=True)

    def skips_between(self, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
        """Skipped rows with start < ts ≤ end (``start`` None: from the beginning)."""
        ts = self.skips["ts"]
        mask = ts <= end if start is None else (ts > start) & (ts <= end)
        return self.skips[mask.to_numpy()].reset_index(drop=True)

    def unplaced_skips(self) -> pd.DataFrame:
        """Skips of rows that belong to no bar of the calendar (outside its range, unparseable), one row per
        file and rule (``rows`` = how many, ``ts`` = the first): every bar's load drops them."""
        s = self.skips[self.skips["rule"].isin([RULE_OUT_OF_RANGE, RULE_UNPARSEABLE])]
        return s.reset_index(drop=True)

    def flags_between(self, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
        """Split-like jumps with start ≤ ts ≤ end (``start`` None: from the beginning)."""
        f = self.flags
        mask = f["ts"] <= end if start is None else (f["ts"] >= start) & (f["ts"] <= end)
        return f[mask.to_numpy()].reset_index(drop=True)

    def adjustments_until(self, bar: pd.Timestamp) -> pd.DataFrame:
        """The actions effective on or before ``bar`` (point in time)."""
        a = self.adjustments
        return a[(a["effective_open"] <= bar).to_numpy()].reset_index(drop=True)

    def adv_shares(self, session: dt.date) -> pd.Series:
        """Mean daily volume over the ``features.adv_sessions`` calendar sessions strictly before ``session``
        (sessions without a row of the symbol left out), from the table built at load; memoised."""
        if session in self._adv:
            return self._adv[session]
        n = int(get_cfg("features.adv_sessions"))
        days = self.calendar.sessions(None, session)
        prior = np.array([d for d in days[-(n + 1):] if d < session][-n:], dtype="datetime64[D]")
        pos = np.searchsorted(self._vol_days, prior)
        pos = pos[(pos < len(self._vol_days)) & (self._vol_days[np.minimum(pos, len(self._vol_days) - 1)] == prior)] \
            if len(self._vol_days) else pos[:0]
        vol, has = self._vol[pos], self._has[pos]
        with np.errstate(invalid="ignore", divide="ignore"):
            adv = vol.sum(axis=0) / has.sum(axis=0)
        out = pd.Series(np.where(has.any(axis=0), adv, np.nan), index=self._symbols, name="adv_shares")
        self._adv[session] = out
        return out


def _skip_rows(file: str, symbol: str, rule: np.ndarray, times: np.ndarray, bar_close: pd.Series) -> pd.DataFrame:
    """Skipped rows as records: the bar close when the row is a bar, else its own instant; rows with no
    instant at all (unparseable) as one summary row per rule."""
    bad = rule != ""
    if not bad.any():
        return empty_skips()
    at = bar_close.to_numpy(dtype="datetime64[ns]").copy()
    at[np.isnat(at)] = times[np.isnat(at)]
    frame = pd.DataFrame({"file": file, "symbol": symbol, "ts": at[bad], "rule": rule[bad], "rows": 1})
    summary_rules = frame["rule"].isin([RULE_UNPARSEABLE, RULE_OUT_OF_RANGE])
    one = frame[~summary_rules]
    many = frame[summary_rules]
    if len(many):
        many = many.groupby(["file", "symbol", "rule"], sort=True).agg(ts=("ts", "min"), rows=("rows", "sum")
                                                                        ).reset_index()
        many["ts"] = many["ts"].fillna(np.datetime64("1970-01-01"))
    out = pd.concat([one, many], ignore_index=True)[SKIP_COLUMNS]
    out["ts"] = pd.DatetimeIndex(out["ts"]).tz_localize("UTC")
    out["rows"] = out["rows"].astype(np.int64)
    return out


def price_rules(rows: pd.DataFrame, days: np.ndarray, actions: pd.DataFrame,
                params: QualityParams) -> tuple[np.ndarray, pd.DataFrame]:
    """Price sanity over rows sorted by (symbol, ts) that passed the row rules (any source: files, a vendor's):
    (R,) the rule each row breaks (``RULE_JUMP``, ``RULE_LEVEL`` or "") and the split-like jumps at an open
    (symbol, ts, split_ratio, reason), each row decided from its own symbol's earlier rows only
    (:mod:`assets.bars.quality`)."""
    rule = np.full(len(rows), "", dtype=object)
    if not len(rows):
        return rule, empty_flags()
    symbols = rows["symbol"].to_numpy()
    seg = segments(symbols)
    new_session = np.ones(len(rows), dtype=bool)
    new_session[1:] = (days[1:] != days[:-1]) | (symbols[1:] != symbols[:-1])
    ts = rows["ts"].to_numpy(dtype="datetime64[ns]")
    g = forward_log_factor(symbols, ts, actions)
    k = split_suspects(rows["open"].to_numpy(float), rows["close"].to_numpy(float), seg, new_session, g, params)
    step = np.where(np.isfinite(k), np.log(np.where(np.isfinite(k), k, 1.0)), 0.0)
    g2 = g + _cumsum_by_segment(step, seg)
    prices = rows[["open", "high", "low", "close"]].to_numpy(dtype=float)
    jumps = price_jumps(prices, seg, new_session, g2, params)
    rule[jumps] = RULE_JUMP
    level = level_shifts(prices[:, 3], seg, g2, jumps, params.level_shift_max_ratio)
    rule[level] = RULE_LEVEL
    found = np.isfinite(k) & ~jumps & ~level
    if not found.any():
        return rule, empty_flags()
    prev = rows["close"].to_numpy(float)[np.nonzero(found)[0] - 1]
    reasons = [f"split-like jump at the open: open/previous close {o / c:.4f} ≈ 1/{r:g} (held whatever the "
               "volume says), and no entry in market.adjustments_file" for o, c, r in
               zip(rows["open"].to_numpy(float)[found], prev, k[found], strict=True)]
    return rule, pd.DataFrame({"symbol": symbols[found], "ts": rows["ts"].to_numpy()[found],
                               "split_ratio": k[found], "reason": reasons})


def _cumsum_by_segment(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each symbol's first row (``seg`` from :func:`segments`)."""
    total = np.cumsum(values)
    before = np.concatenate([[0.0], total])[seg]
    return total - before
