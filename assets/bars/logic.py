"""Pure logic of the ``bars`` stage: validate a point-in-time snapshot and pivot bars into a panel.

Why a panel: every later stage works on (time × symbol) arrays, so a bar is pivoted once, vectorised, and
no stage loops over symbols.

What a window carries besides prices (SPEC §9, §10): the skipped rows the bar saw (``skips``: file, symbol,
ts, rule, rows — recorded in lineage as ``bars_skips``), the corporate actions in effect (``adjustments``,
``bars_adjustments``: the history is stored raw and adjusted when pivoted, so an audit of a later bar adjusts
the same recorded rows the same way), and per symbol in the snapshot: ``hold_reason`` (a split-like jump
without an adjustments entry, at or before the bar: no orders, see ``assets/gated_signals/logic.py``), ``quote_age_bars`` (from the source's quote
time when it has one, else the bars since the quote last changed; for an estimated spread the bars since the
symbol last traded) and ``spread_estimated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from assets.bars.quality import bars_since_trade, quote_age_bars, row_rules
from CONFIG.config_loader import get_cfg

PANEL_FIELDS = ("open", "high", "low", "close", "volume", "bid", "ask")


SKIP_COLUMNS = ["file", "symbol", "ts", "rule", "rows"]
RULE_EMPTY_BAR = "empty bar: no symbol of the universe has a row"
ADJ_COLUMNS = ["symbol", "effective_date", "split_ratio", "cash_dividend", "effective_open", "prev_close",
               "price_factor", "volume_factor"]


def empty_skips() -> pd.DataFrame:
    """An empty ``bars_skips`` table (a copy: built once, it cost ~2 ms a bar)."""
    return _empty_skips().copy()


@lru_cache(maxsize=1)
def _empty_skips() -> pd.DataFrame:
    return pd.DataFrame({"file": pd.Series(dtype=object), "symbol": pd.Series(dtype=object),
                         "ts": pd.Series(dtype="datetime64[ns, UTC]"), "rule": pd.Series(dtype=object),
                         "rows": pd.Series(dtype=np.int64)})


def validate_snapshot(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split bar rows into usable rows and recorded skips (``SKIP_COLUMNS``, file ""); never a silent fix.

    The row rules of :func:`assets.bars.quality.row_rules` (prices, high/low, volume; quotes when present).
    Duplicated (ts, symbol) rows are an error: the source is broken and no ordering of them can be trusted.
    """
    if frame.duplicated(["ts", "symbol"]).any():
        dup = frame[frame.duplicated(["ts", "symbol"], keep=False)].iloc[0]
        raise ValueError(f"duplicated bar for {dup['symbol']} at {dup['ts']} (rule: one row per symbol and bar)")
    has_quotes = {"bid", "ask"} <= set(frame.columns) and bool(len(frame)) and bool(
        np.isfinite(frame["bid"].to_numpy(dtype=float)).any())
    rule = row_rules(frame, False, 0.0)
    if has_quotes:  # a quote rule only where the row has a quote at all (an estimated one may be NaN early)
        quoted = np.isfinite(frame["bid"].to_numpy(dtype=float)) | np.isfinite(frame["ask"].to_numpy(dtype=float))
        q_rule = row_rules(frame, True, _quote_tolerance())
        rule = np.where((rule == "") & quoted, q_rule, rule)
    bad = rule != ""
    skips = pd.DataFrame({"file": "", "symbol": frame.loc[bad, "symbol"].to_numpy(),
                          "ts": pd.DatetimeIndex(frame.loc[bad, "ts"]), "rule": rule[bad], "rows": 1})
    skips["rows"] = skips["rows"].astype(np.int64)
    return frame[~bad].reset_index(drop=True), skips[SKIP_COLUMNS]


def _quote_tolerance() -> float:
    return float(get_cfg("market.quote_tolerance_bps"))


def adjust_history(history: pd.DataFrame, adjustments: pd.DataFrame | None) -> pd.DataFrame:
    """History back-adjusted by corporate actions (``ADJ_COLUMNS``): a row before an action's effective open
    has its prices × ``price_factor`` and its volume × ``volume_factor``; later rows are untouched. The caller
    passes only the actions in effect at its bar (point in time). Loops over actions (a handful), never rows."""
    if adjustments is None or not len(adjustments) or not len(history):
        return history
    out = history.copy()
    price = np.array(out[["open", "high", "low", "close", "bid", "ask"]], dtype=float)  # copies: scaled in place
    vol = np.array(out["volume"], dtype=float)
    sym, ts = out["symbol"].to_numpy(), pd.DatetimeIndex(out["ts"])
    for s, at, pf, vf in zip(adjustments["symbol"], adjustments["effective_open"], adjustments["price_factor"],
                             adjustments["volume_factor"], strict=True):
        before = (sym == s) & np.asarray(ts < pd.Timestamp(at))
        if np.isfinite(pf):
            price[before] *= pf
        if np.isfinite(vf):
            vol[before] *= vf
    out[["open", "high", "low", "close", "bid", "ask"]] = price
    out["volume"] = vol
    return out


@dataclass(frozen=True)
class Panel:
    """Bars as (T, N) arrays; NaN where a symbol has no bar (halted, missing, skipped)."""

    times: pd.DatetimeIndex
    symbols: np.ndarray
    fields: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def tail(self, n: int) -> Panel:
        return Panel(self.times[-n:], self.symbols, {k: v[-n:] for k, v in self.fields.items()})

    def slice(self, lo: int, hi: int) -> Panel:
        """Rows [lo, hi) as views (no copy)."""
        return Panel(self.times[lo:hi], self.symbols, {k: v[lo:hi] for k, v in self.fields.items()})


def to_panel(frame: pd.DataFrame, times: pd.DatetimeIndex, symbols: np.ndarray) -> Panel:
    """Pivot long bars onto the given time grid and symbol order (sorted), vectorised."""
    t_idx = times.get_indexer(pd.DatetimeIndex(frame["ts"]))
    s_idx = np.searchsorted(symbols, frame["symbol"].to_numpy())
    s_idx = np.clip(s_idx, 0, len(symbols) - 1)
    ok = (t_idx >= 0) & (symbols[s_idx] == frame["symbol"].to_numpy())
    fields = {}
    for name in PANEL_FIELDS:
        arr = np.full((len(times), len(symbols)), np.nan)
        arr[t_idx[ok], s_idx[ok]] = frame[name].to_numpy(dtype=float)[ok]
        fields[name] = arr
    return Panel(times, np.asarray(symbols), fields)


@dataclass(frozen=True)
class BarWindow:
    """The ``bars`` asset of one bar: the snapshot of the whole universe and the history features need.

    ``snapshot`` has one row per universe symbol with ``status`` = ``ok``, ``missing`` (no bar: halted or
    absent) or ``skipped: <rule>`` (a bad row, see :func:`validate_snapshot`), prices NaN unless ``ok``,
    ``hold_reason``, ``quote_age_bars`` and ``spread_estimated`` (module docstring).
    ``history`` holds the validated bar rows of the window (``times``), oldest first, raw (unadjusted);
    ``skips`` the rows this bar saw skipped; ``adjustments`` the corporate actions in effect.
    """

    bar: str
    times: pd.DatetimeIndex
    snapshot: pd.DataFrame
    history: pd.DataFrame
    skips: pd.DataFrame = field(default_factory=empty_skips)
    adjustments: pd.DataFrame | None = None

    def panel(self) -> Panel:
        """The history, adjusted by the window's corporate actions, as (T, N) arrays, pivoted once per window:
        features, predictions and skill all read it. The arrays are read-only so that no stage can change what
        another one sees."""
        cached = self.__dict__.get("_panel")
        if cached is None:
            cached = to_panel(adjust_history(self.history, self.adjustments), self.times,
                              self.snapshot["symbol"].to_numpy())
            for arr in cached.fields.values():
                arr.flags.writeable = False
            object.__setattr__(self, "_panel", cached)
        return cached


def build_window(bar: str, bar_ts: pd.Timestamp, times: pd.DatetimeIndex, raw: pd.DataFrame,
                 universe: np.ndarray, adv_shares: pd.Series, *, skips: pd.DataFrame | None = None,
                 flags: pd.DataFrame | None = None, adjustments: pd.DataFrame | None = None,
                 bar_minutes: int | None = None) -> tuple[BarWindow, pd.DataFrame]:
    """Validate raw history rows and assemble the snapshot; returns the window and the bar's skipped rows.

    ``skips``: rows the source skipped that this bar saw (recorded with the window); ``flags``: split-like
    jumps (symbol, ts, split_ratio, reason) of the source; ``adjustments``: the actions in effect at the bar;
    ``bar_minutes``: for the age of a quote with a timestamp (default ``market.bar_minutes``). The window of
    one bar is :func:`build_windows` of one bar over the whole of ``times`` (one code path).
    """
    return build_windows([bar], pd.DatetimeIndex([bar_ts]), times, raw, universe, [adv_shares],
                         [(0, len(times))], skips=[skips], flags=[flags], adjustments=[adjustments],
                         bar_minutes=bar_minutes)[0]


def build_windows(bars: list[str], bar_ts: pd.DatetimeIndex, times: pd.DatetimeIndex, raw: pd.DataFrame,
                  universe: np.ndarray, adv_shares: list[pd.Series], spans: list[tuple[int, int]], *,
                  skips: list[pd.DataFrame | None] | None = None, flags: list[pd.DataFrame | None] | None = None,
                  adjustments: list[pd.DataFrame | None] | None = None,
                  bar_minutes: int | None = None) -> list[tuple[BarWindow, pd.DataFrame]]:
    """The windows of B bars that share one period of history (issue 12: a period's bars at once).

    ``times`` (T,) is the period's grid and ``raw`` its rows; bar b's window is the grid rows
    ``spans[b]`` = [lo, hi) (its bar at ``hi − 1``, or anywhere inside for a single window) and its rows, so
    it sees nothing after its bar. Per bar: ``adv_shares``, ``skips``, ``flags`` and ``adjustments`` as in
    :func:`build_window`. The rows are validated and pivoted once for the period (every row rule reads only
    its row, so a row's verdict does not depend on the window that holds it); each window's history, panel
    and quote ages are slices of those, every value the same bits as the window built alone
    (``tests/unit/test_period_windows.py``). The adjusted panel is built once per distinct set of
    adjustments (the actions touching a window change only when one takes effect or leaves the window).
    Errors: as :func:`validate_snapshot` (a duplicated row anywhere in the period).
    """
    b_n = len(bars)
    skips = skips if skips is not None else [None] * b_n
    flags = flags if flags is not None else [None] * b_n
    adjustments = adjustments if adjustments is not None else [None] * b_n
    history, own = validate_snapshot(raw)
    symbols = np.sort(np.asarray(universe, dtype=object))
    hist_all = history[history["symbol"].isin(symbols).to_numpy()].reset_index(drop=True)
    hist_ts, own_ts, grid_ns = (_ns(x) for x in (hist_all["ts"], own["ts"], times))
    in_order = bool(len(hist_ts) < 2 or (np.diff(hist_ts) >= 0).all())
    raw_panel = to_panel(hist_all, times, symbols)  # unadjusted: the quotes' ages
    at = _BarRows(history, _ns(bar_ts), symbols)
    adjusted: dict[object, Panel] = {}
    adv_of: dict[int, np.ndarray] = {}  # per ADV table (one per session, shared by its bars): mapped once
    out = []
    for b in range(b_n):  # a loop over the period's bars; every pandas step is one slice or one frame build
        ts, (lo, hi) = pd.Timestamp(bar_ts[b]), spans[b]
        whole = lo == 0 and hi == len(times)
        w_times = times if whole else times[lo:hi]
        if whole:  # one window keeps every row it was given (a caller's rows may reach before its grid)
            hist = hist_all
        elif in_order:  # the period's rows sorted by time: the window's rows are one run of them
            a = np.searchsorted(hist_ts, grid_ns[lo], side="left")
            z = np.searchsorted(hist_ts, grid_ns[hi - 1], side="right")
            hist = hist_all.iloc[a:z].reset_index(drop=True)
        else:
            keep = (hist_ts >= grid_ns[lo]) & (hist_ts <= grid_ns[hi - 1])
            hist = hist_all[keep].reset_index(drop=True)
        panel = raw_panel if whole else raw_panel.slice(lo, hi)
        now_skips = own if not len(own) else own[own_ts == _ns([ts])[0]]
        adv = adv_of.get(id(adv_shares[b]))
        if adv is None:
            adv = adv_of[id(adv_shares[b])] = pd.Series(symbols).map(adv_shares[b]).astype(float).to_numpy()
        snap, cur = _snapshot(ts, at, b, symbols, now_skips, skips[b], adv, flags[b], w_times, panel, bar_minutes)
        adj = adjustments[b]
        adj = adj[ADJ_COLUMNS].reset_index(drop=True) if adj is not None and len(adj) else None
        key = None if adj is None else tuple(adj.astype(str).itertuples(index=False))
        if key not in adjusted:
            if adj is None:
                adjusted[key] = raw_panel
            else:
                adjusted[key] = to_panel(adjust_history(hist_all, adj), times, symbols)
            for arr in adjusted[key].fields.values():
                arr.flags.writeable = False
        window = BarWindow(bars[b], w_times, snap, hist, cur, adj)
        full = adjusted[key]
        object.__setattr__(window, "_panel", full if whole else full.slice(lo, hi))
        object.__setattr__(window, "_period", (full, hi - 1))
        out.append((window, cur))
    return out


class _BarRows:
    """The validated rows at B bars' instants gathered once onto (instant, universe symbol) arrays, so that a
    bar's snapshot columns are row slices instead of a pandas filter and join per bar (issue 12: the
    period's 78 snapshots took 4.6 ms a bar at 100 symbols, now ≈ 1).

    ``fields``: column → (U, N) values at each distinct bar instant (``row[b]`` is bar b's), NaN (float64) or
    False (bool) where the symbol has no row at the bar. Only float64 and bool columns are gathered (the
    sources' prices, volumes, quotes and ``spread_estimated``); another dtype is joined per bar, which
    promotes a missing value as the join always did (an int64 volume becomes float64 only where one is
    missing)."""

    def __init__(self, history: pd.DataFrame, bar_ns: np.ndarray, symbols: np.ndarray):
        self.history, self.symbols = history, symbols
        instants, self.row = np.unique(bar_ns, return_inverse=True)
        rows_ns = _ns(history["ts"])
        u = np.searchsorted(instants, rows_ns)
        u_ok = u < len(instants)
        u_ok[u_ok] = instants[u[u_ok]] == rows_ns[u_ok]
        sym = history["symbol"].to_numpy()
        s = np.clip(np.searchsorted(symbols, sym), 0, max(len(symbols) - 1, 0)) if len(symbols) else \
            np.zeros(len(sym), dtype=np.int64)
        ok = u_ok & (symbols[s] == sym) if len(symbols) else np.zeros(len(sym), dtype=bool)
        self.sel, self.u, self.s = np.flatnonzero(ok), u[ok], s[ok]
        self.present = np.zeros((len(instants), len(symbols)), dtype=bool)
        self.present[self.u, self.s] = True
        self.fields: dict[str, np.ndarray] = {}
        self._where: dict[int, np.ndarray] = {}

    def values(self, b: int, column: str) -> np.ndarray:
        """(N,) bar b's ``column`` per universe symbol, exactly what a join of the bar's rows gives (NaN
        where a symbol has no row; bool columns False there, as :func:`_at_bar` fills them)."""
        got = self.fields.get(column)
        if got is None:
            col = self.history[column]
            if col.dtype not in (np.float64, np.bool_):
                return pd.DataFrame({"symbol": self.symbols}).join(self.frame(b, [column]), on="symbol")[column] \
                    .to_numpy()
            got = np.full(self.present.shape, np.nan) if col.dtype == np.float64 else \
                np.zeros(self.present.shape, dtype=bool)
            got[self.u, self.s] = col.to_numpy()[self.sel]
            self.fields[column] = got
        return got[self.row[b]]

    def frame(self, b: int, columns: list[str]) -> pd.DataFrame:
        """Bar b's rows of universe symbols (``columns``) indexed by symbol, in symbol order."""
        got = self._where.get(b)
        if got is None:
            mine = self.u == self.row[b]
            got = self._where[b] = self.sel[mine][np.argsort(self.s[mine], kind="stable")]
        return self.history.iloc[got][["symbol", *columns]].set_index("symbol")


def _snapshot(bar_ts: pd.Timestamp, at: _BarRows, b: int, symbols: np.ndarray, now_skips: pd.DataFrame,
              skips: pd.DataFrame | None, adv_shares: np.ndarray, flags: pd.DataFrame | None,
              times: pd.DatetimeIndex, panel: Panel, bar_minutes: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bar b's snapshot (module docstring) and its skipped rows, from the batch's gathered rows ``at``, the
    (N,) ADV per symbol and its window's unadjusted ``panel``: arrays and one frame construction; the pandas
    steps that only skips, flags or a source's quote times need run only for a bar that has them."""
    parts = [f for f in (skips, now_skips) if f is not None and len(f)]
    if parts:
        cur = pd.concat(parts, ignore_index=True)
        cur = cur[SKIP_COLUMNS].sort_values(["ts", "symbol", "rule"], kind="mergesort").reset_index(drop=True)
    else:
        cur = empty_skips()
    prices = {name: at.values(b, name) for name in PANEL_FIELDS}
    status = np.where(pd.notna(prices["close"]), "ok", "missing").astype(object)
    n_at_bar = 0
    if len(cur):
        at_bar = cur[(cur["ts"] == bar_ts) & (cur["symbol"] != "")].drop_duplicates("symbol", keep="first")
        n_at_bar = len(at_bar)
        skipped = pd.Series(symbols).map(at_bar.set_index("symbol")["rule"]).astype(object)
        status = np.where(skipped.notna() & (status != "ok"), "skipped: " + skipped.fillna("").astype(str), status)
    if len(symbols) and not (status == "ok").any() and not n_at_bar:  # SPEC §9 "a bar with no rows": recorded
        empty = pd.DataFrame({"file": [""], "symbol": [""], "ts": pd.DatetimeIndex([bar_ts]),
                              "rule": [RULE_EMPTY_BAR], "rows": np.array([0], dtype=np.int64)})
        cur = pd.concat([cur, empty], ignore_index=True) if len(cur) else empty
    hold_reason, hold_since = _holds(symbols, flags, times, bar_ts)
    estimated = _at_bar(at, b, "spread_estimated", False)
    age = quote_age_bars(panel["bid"], panel["ask"])
    quote_ts = _at_bar(at, b, "quote_ts", pd.NaT)
    if quote_ts is not None and quote_ts.notna().any():
        minutes = bar_minutes if bar_minutes is not None else _bar_minutes()
        stamped = ((bar_ts - pd.DatetimeIndex(quote_ts)) / pd.Timedelta(minutes=minutes)).to_numpy(dtype=float)
        age = np.where(quote_ts.notna().to_numpy(), np.floor(np.maximum(stamped, 0.0)), age)
    if estimated.any():
        age = np.where(estimated, bars_since_trade(panel["volume"]), age)
    snap = pd.DataFrame({"symbol": symbols, "status": status, **prices, "adv_shares": adv_shares,
                         "hold_reason": hold_reason, "hold_since": hold_since,
                         "quote_age_bars": np.where(status == "ok", age, np.nan), "spread_estimated": estimated})
    return snap, cur


def _ns(values) -> np.ndarray:
    """Instants as int64 nanoseconds (whatever the unit they are stored in)."""
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def _bar_minutes() -> int:
    return int(get_cfg("market.bar_minutes"))


def _at_bar(at: _BarRows, b: int, column: str, default) -> np.ndarray | pd.Series | None:
    """``column`` of bar b's rows per symbol (``default`` where absent). ``spread_estimated``: (N,) bool;
    ``quote_ts`` (default NaT): a Series of instants, None when the source has no such column."""
    if column not in at.history.columns:
        return None if default is pd.NaT else np.full(len(at.symbols), bool(default))
    if default is pd.NaT:
        got = pd.to_datetime(at.frame(b, [column])[column], utc=True).reindex(at.symbols)
        return pd.Series(pd.DatetimeIndex(got))
    if at.history[column].dtype == np.bool_:
        return at.values(b, column)
    got = at.frame(b, [column])[column].astype(object).reindex(at.symbols)
    return pd.Series(got.where(got.notna(), default).to_numpy(), dtype=object).astype(bool).to_numpy()


def _holds(symbols: np.ndarray, flags: pd.DataFrame | None, times: pd.DatetimeIndex,
           bar_ts: pd.Timestamp) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Per symbol the reason it is held (the latest split-like jump at or before the bar, also one older than
    the window: without an adjustments entry the book stays on the old share basis, so the hold lasts until
    an entry explains the jump) and the jump's bar; "" and NaT otherwise."""
    out = np.full(len(symbols), "", dtype=object)
    since = pd.DatetimeIndex([pd.NaT] * len(symbols), tz="UTC")
    if flags is None or not len(flags) or not len(times):
        return out, since
    f = flags[flags["ts"] <= bar_ts].sort_values("ts", kind="mergesort")
    if not len(f):
        return out, since
    last = f.drop_duplicates("symbol", keep="last").set_index("symbol")
    symbols = pd.Series(symbols)
    text = last["reason"].astype(str) + " (at " + pd.DatetimeIndex(last["ts"]).strftime("%Y-%m-%dT%H:%MZ") + ")"
    got = symbols.map(text)
    out = np.where(got.notna(), got.astype(object), "").astype(object)
    return out, pd.DatetimeIndex(pd.to_datetime(symbols.map(last["ts"]), utc=True))
