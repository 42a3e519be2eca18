"""Point-in-time history a bar's stages need: earlier bars' predictions and sizing raws.

Two providers with one interface, so the Dagster path and the replay loop feed the same pure functions the
same numbers: :class:`LineageHistory` reads what earlier runs recorded in DuckDB; :class:`MemoryHistory`
keeps what the replay loop produced (it also writes the same lineage tables). Only bars strictly before the
current one are ever returned.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from resources.lineage.store import LineageStore

PRED_HISTORY_COLUMNS = ["bar", "symbol", "horizon", "family", "raw", "std"]
SIZING_HISTORY_COLUMNS = ["bar", "symbol", "raw"]


@dataclass
class PredictionGrid:
    """Past predictions as (groups × bars × symbols) arrays, one group per (horizon, family).

    Why: the stages that read history (skill, Σ) do row arithmetic per past bar; on arrays every bar is
    one vectorised row, where long DataFrames had to be factorized and pivoted bar after bar. ``keys`` are
    the requested bars (oldest first), ``symbols`` the sorted symbols seen in them. The last group is an
    empty one that stands for a (horizon, family) with no rows. NaN where nothing was recorded.
    """

    keys: list[str]
    symbols: np.ndarray
    groups: dict[tuple[int, str], int]
    raw: np.ndarray        # (G+1, K, S)
    std: np.ndarray        # (G+1, K, S)
    has_rows: np.ndarray   # (G+1, K) the group has rows on that bar
    _empty: int = field(init=False)

    def __post_init__(self) -> None:
        self._empty = len(self.groups)

    def select(self, h: int, families: list[str], column: str) -> tuple[np.ndarray, np.ndarray]:
        """(F, K, S) ``column`` ("raw" or "std") of the families at horizon ``h``, and (F, K) has-rows."""
        g = [self.groups.get((int(h), str(f)), self._empty) for f in families]
        return getattr(self, column)[g], self.has_rows[g]

    def select_groups(self, groups: list[tuple[int, str]], column: str) -> tuple[np.ndarray, np.ndarray]:
        """(G, K, S) ``column`` of the given (horizon, family) groups, and (G, K) has-rows."""
        g = [self.groups.get((int(h), str(f)), self._empty) for h, f in groups]
        return getattr(self, column)[g], self.has_rows[g]

    @classmethod
    def from_frame(cls, past: pd.DataFrame, keys: list[str]) -> PredictionGrid:
        """The grid of long rows (``PRED_HISTORY_COLUMNS``), built with one scatter per column."""
        sym, symbols = pd.factorize(np.asarray(past["symbol"], dtype=object), sort=True)
        bar_codes, bars = pd.factorize(np.asarray(past["bar"], dtype=object))
        bar = pd.Index(keys).get_indexer(bars)[bar_codes] if len(bars) else bar_codes
        h_codes, hs = pd.factorize(past["horizon"].to_numpy())
        f_codes, fs = pd.factorize(np.asarray(past["family"], dtype=object))
        code = h_codes * len(fs) + f_codes
        groups = {(int(h), str(f)): i * len(fs) + j for i, h in enumerate(hs) for j, f in enumerate(fs)}
        shape = (len(groups) + 1, len(keys), len(symbols))
        ok = bar >= 0
        has_rows = np.zeros(shape[:2], dtype=bool)
        has_rows[code[ok], bar[ok]] = True
        grids = []
        for column in ("raw", "std"):
            out = np.full(shape, np.nan)
            out[code[ok], bar[ok], sym[ok]] = past[column].to_numpy(dtype=float)[ok]
            grids.append(out)
        return cls(list(keys), np.asarray(symbols, dtype=object), groups, grids[0], grids[1], has_rows)


@dataclass(frozen=True)
class _BarPredictions:
    """One bar's predictions laid out as (groups × symbols) arrays, kept by :class:`MemoryHistory`."""

    symbols: np.ndarray
    groups: tuple[tuple[int, str], ...]
    raw: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _BarPredictions:
        """The arrays of one bar's prediction rows (any order). The predictions stage's own layout (rows sorted
        by symbol, then the same sorted (horizon, family) groups for every symbol) is read by reshaping, any
        other by the general scatter; the same arrays either way (``tests/unit/test_history_grid.py``)."""
        regular = cls._regular(frame)
        if regular is not None:
            return regular
        grid = PredictionGrid.from_frame(frame.assign(bar=""), [""])
        order = sorted(g for g, i in grid.groups.items() if grid.has_rows[i, 0])  # groups with rows only
        idx = [grid.groups[g] for g in order]
        return cls(grid.symbols, tuple(order), grid.raw[idx, 0], grid.std[idx, 0])


    @classmethod
    def _regular(cls, frame: pd.DataFrame) -> _BarPredictions | None:
        n = len(frame)
        if not n:
            return None
        sym = frame["symbol"].to_numpy(dtype=object)
        first = np.flatnonzero(sym != sym[0])
        g_n = int(first[0]) if len(first) else n  # rows of the first symbol: its groups
        if n % g_n:
            return None
        h = frame["horizon"].to_numpy()
        f = frame["family"].to_numpy(dtype=object)
        groups = tuple((int(a), str(b)) for a, b in zip(h[:g_n], f[:g_n], strict=True))
        symbols = sym[::g_n]
        if list(groups) != sorted(set(groups)) or not (symbols[1:] > symbols[:-1]).all() \
                or not ((sym == np.repeat(symbols, g_n)).all() and (h == np.tile(h[:g_n], n // g_n)).all()
                        and (f == np.tile(f[:g_n], n // g_n)).all()):
            return None
        raw, std = (np.ascontiguousarray(frame[c].to_numpy(dtype=float).reshape(n // g_n, g_n).T)
                    for c in ("raw", "std"))
        return cls(np.asarray(symbols, dtype=object), groups, raw, std)


def stack_frames(frames: list[pd.DataFrame], keys: list[str], columns: list[str]) -> pd.DataFrame:
    """The ``columns`` of B frames as one long frame with a ``bar`` column (``keys[b]`` on frame b's rows),
    built column by column (no per-frame copy): what the batch stages read their inputs from. String columns
    are joined as stored and the keys' strings converted once (issue 12: a batch's 78 prediction frames
    stacked 2.7× faster than through object arrays); dtypes as the object arrays would have inferred."""
    sizes = [len(f) for f in frames]
    if sum(sizes):  # the keys' dtype inferred once (str keys: str), then repeated per row
        out = {"bar": pd.Series(np.asarray(keys, dtype=object)).array.take(np.repeat(np.arange(len(keys)), sizes))}
    else:  # no row: an empty object column, as an empty array infers
        out = {"bar": np.empty(0, dtype=object)}
    for c in columns:
        if c != "bar":
            cols = [f[c] if c in f.columns else None for f in frames]
            if len(cols) > 1 and all(x is not None and isinstance(x.dtype, pd.StringDtype) and x.dtype == cols[0].dtype
                                     for x in cols):  # strings joined as they are stored (no object round trip)
                out[c] = pd.concat(cols, ignore_index=True).array
                continue
            parts = [x.to_numpy() if x is not None else np.full(len(f), np.nan) for x, f in zip(cols, frames,
                                                                                                   strict=True)]
            out[c] = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.empty(0)
    return pd.DataFrame(out, copy=False)


def assemble_grid(bars: list[str], kept: list[tuple[int, _BarPredictions]]) -> PredictionGrid:
    """One grid over ``bars`` from per-bar arrays (position in ``bars``, arrays), a vectorised scatter per
    bar: equals ``PredictionGrid.from_frame`` of the same rows (``tests/unit/test_history_grid.py``)."""
    groups = sorted(set().union(*(k.groups for _, k in kept)))
    g_pos = {g: i for i, g in enumerate(groups)}
    first = kept[0][1].symbols
    same = all(k.symbols is first or np.array_equal(k.symbols, first) for _, k in kept)
    symbols = first if same else np.unique(np.concatenate([k.symbols for _, k in kept]))
    shape = (len(groups) + 1, len(bars), len(symbols))
    raw, std = np.full(shape, np.nan), np.full(shape, np.nan)
    has_rows = np.zeros(shape[:2], dtype=bool)
    index = None if same else pd.Index(symbols)
    last: tuple[np.ndarray, np.ndarray] | None = None
    for j, k in kept:  # a loop over past bars, each one vectorised scatter
        rows = np.array([g_pos[g] for g in k.groups], dtype=np.int64)  # a bar with no rows: empty
        if same:
            raw[rows, j], std[rows, j] = k.raw, k.std
        else:  # by hash, and once per symbol set (halts change it now and then): not a sort of strings per bar
            if last is None or not (k.symbols is last[0] or np.array_equal(k.symbols, last[0])):
                last = (k.symbols, index.get_indexer(k.symbols)[None, :])
            cols = last[1]
            raw[rows[:, None], j, cols], std[rows[:, None], j, cols] = k.raw, k.std
        has_rows[rows, j] = True
    return PredictionGrid(list(bars), symbols, g_pos, raw, std, has_rows)


@dataclass(frozen=True)
class Timeline:
    """The bars a batch of B bars reads and writes on one axis: each bar's ``n`` previous bar closes and
    the batch's own bars, oldest first (issue 12: stages over a batch of bars).

    ``keys`` (L,) the axis; ``at`` (B,) each batch bar's position on it; ``window`` (B, n) the positions of
    each bar's n previous bars, oldest first, padded at the front with L (an empty row a caller appends)
    where the calendar has fewer; ``past`` the keys that are not batch bars (read from the history). A
    batch bar's window holds only positions before its own: bar t never reads a later bar."""

    keys: list[str]
    bars: list[str]
    at: np.ndarray
    window: np.ndarray
    past: list[str]

    @classmethod
    def of(cls, bars: list[str], n: int) -> Timeline:
        from resources.market.calendar import bar_keys, get_calendar, parse_bar_key

        if len(set(bars)) != len(bars) or list(bars) != sorted(bars):
            raise ValueError("a batch's bars must be distinct and in time order")
        cal = get_calendar()
        b_n = len(bars)
        run = bar_keys(cal.previous_bars(parse_bar_key(bars[-1]), n + b_n)) if b_n else []
        if len(run) == n + b_n and run[n:] == list(bars):  # consecutive bars (replay's batches): one call
            keys = run
            window = np.arange(n)[None, :] + np.arange(b_n)[:, None]
        else:  # any other set of bars: each bar's own previous keys (a loop over bars of calendar lookups)
            own = [bar_keys(cal.previous_bars(parse_bar_key(b), n + 1)[:-1]) for b in bars]
            keys = sorted(set().union(*own, bars))
            index = pd.Index(keys)
            window = np.full((b_n, n), len(keys), dtype=np.int64)
            for i, k in enumerate(own):
                if k:
                    window[i, n - len(k):] = index.get_indexer(k)
        at = pd.Index(keys).get_indexer(list(bars))
        mine = set(bars)
        return cls(list(keys), list(bars), at, np.asarray(window, dtype=np.int64),
                   [k for k in keys if k not in mine])

    def rows(self, past: PredictionGrid, batch: np.ndarray, column: str,
             groups: list[tuple[int, str]], symbols: np.ndarray, batch_symbols: np.ndarray) -> np.ndarray:
        """(G, L + 1, S) ``column`` of ``groups`` on the axis over ``symbols``: past bars from ``past``
        (a grid over :attr:`past`), batch bars from ``batch`` (G, B, S_b) over ``batch_symbols``; the last
        row is the empty one the windows' padding points to. NaN where nothing was recorded."""
        out = np.full((len(groups), len(self.keys) + 1, len(symbols)), np.nan)
        index = pd.Index(symbols)
        if len(past.keys) and len(past.symbols):
            rows = pd.Index(self.keys).get_indexer(past.keys)
            got, _ = past.select_groups(groups, column)
            out[:, rows[:, None], index.get_indexer(past.symbols)[None, :]] = got
        if len(self.bars) and len(batch_symbols):
            out[:, self.at[:, None], index.get_indexer(batch_symbols)[None, :]] = batch
        return out


def state_dir(lineage_path: Path) -> Path:
    """Where the compact per-bar state of a lineage file lives: ``<lineage file>.state/`` beside it."""
    return lineage_path.with_name(lineage_path.name + ".state")


def write_prediction_state(lineage_path: Path, bar: str, predictions: pd.DataFrame, content_hash: str) -> None:
    """Keep one bar's recorded predictions as (groups × symbols) arrays in one ``.npz`` (atomic), stamped
    with the content hash lineage recorded for them: a later run reads the bar from here only while that
    hash is still the recorded one, so the file can never stand for rows lineage does not hold."""
    grid = _BarPredictions.of(predictions[PRED_HISTORY_COLUMNS[1:]].sort_values(
        ["symbol", "horizon", "family"], kind="mergesort"))
    path = state_dir(lineage_path) / "predictions" / f"{bar}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, symbols=np.asarray(grid.symbols, dtype=str),
                 horizons=np.array([h for h, _ in grid.groups], dtype=np.int64),
                 families=np.array([f for _, f in grid.groups], dtype=str),
                 raw=grid.raw, std=grid.std, content_hash=np.str_(content_hash))
    Path(tmp).replace(path)


def read_prediction_state(lineage_path: Path, bar: str, content_hash: str) -> _BarPredictions | None:
    """The bar's kept arrays when their stamp is ``content_hash`` (the recorded one), else None."""
    path = state_dir(lineage_path) / "predictions" / f"{bar}.npz"
    try:
        with np.load(path) as z:
            if str(z["content_hash"]) != content_hash:
                return None
            groups = tuple(zip(z["horizons"].tolist(), z["families"].tolist(), strict=True))
            return _BarPredictions(z["symbols"].astype(object), groups, z["raw"], z["std"])
    except (OSError, KeyError, ValueError):
        return None


class ChainHistory(Protocol):
    def predictions(self, bars: list[str]) -> pd.DataFrame:
        """Recorded predictions (``PRED_HISTORY_COLUMNS``) of the given earlier bars."""

    def prediction_grid(self, bars: list[str]) -> PredictionGrid:
        """The same predictions as a :class:`PredictionGrid` over ``bars``."""

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        """Recorded sizing raws (``SIZING_HISTORY_COLUMNS``) of the given earlier bars."""


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("bar", "symbol", "family") else float)
                         for c in columns})


class LineageHistory:
    """History from the lineage DuckDB file (recorded tables, never ``audit__`` ones)."""

    def __init__(self, store: LineageStore):
        self.store = store

    def _query(self, table: str, columns: list[str], bars: list[str], order: str) -> pd.DataFrame:
        if not bars or not self.store.path.exists():
            return _empty(columns)
        with self.store.connect(read_only=True) as con:
            if not self.store.has_table(con, table):
                return _empty(columns)
            frame = con.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE bar IN (SELECT unnest(?)) "
                                f"ORDER BY {order}", [bars]).df()
        return frame

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        return self._query("predictions", PRED_HISTORY_COLUMNS, bars, "bar, symbol, horizon, family")

    def prediction_grid(self, bars: list[str]) -> PredictionGrid:
        """The grid of the bars' recorded predictions, read from the compact per-bar state
        (:func:`write_prediction_state`) where its stamp is the recorded content hash, and from the rows
        (then kept as state for the next run) for any other bar. Reading 62 bars × 5 000 symbols as rows
        cost 2.3 s; as arrays it is a few ms per bar."""
        recorded = self._recorded_hashes(bars)
        kept: list[tuple[int, _BarPredictions]] = []
        missing: list[str] = []
        for j, bar in enumerate(bars):
            got = read_prediction_state(self.store.path, bar, recorded[bar]) if bar in recorded else None
            if got is not None:
                kept.append((j, got))
            elif bar in recorded:
                missing.append(bar)
        if missing:
            rows = self.predictions(missing)
            position = {b: j for j, b in enumerate(bars)}
            for bar, frame in rows.groupby("bar", sort=True):
                frame = frame.drop(columns="bar")
                kept.append((position[bar], _BarPredictions.of(frame)))
                write_prediction_state(self.store.path, bar, frame, recorded[bar])
            kept.sort(key=lambda item: item[0])
        if not kept:
            return PredictionGrid.from_frame(_empty(PRED_HISTORY_COLUMNS), bars)
        return assemble_grid(bars, kept)

    def _recorded_hashes(self, bars: list[str]) -> dict[str, str]:
        """bar → content hash of its recorded ``predictions`` rows (the last materialization), for bars
        that have rows."""
        if not bars or not self.store.path.exists():
            return {}
        with self.store.connect(read_only=True) as con:
            rows = con.execute("""
                SELECT bar, content_hash FROM materializations
                WHERE tbl = 'predictions' AND bar IN (SELECT unnest(?)) AND row_count > 0
                QUALIFY row_number() OVER (PARTITION BY bar ORDER BY recorded_at DESC) = 1""", [bars]).fetchall()
        return dict(rows)

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        return self._query("sized_orders", SIZING_HISTORY_COLUMNS, bars, "bar, symbol")


class MemoryHistory:
    """History kept in memory by the replay loop (bounded to the bars it may still need)."""

    def __init__(self, keep_bars: int):
        self.keep = keep_bars
        self._pred: dict[str, pd.DataFrame] = {}
        self._size: dict[str, pd.DataFrame] = {}
        self._grid: dict[str, _BarPredictions] = {}

    def add(self, bar: str, predictions: pd.DataFrame, sized: pd.DataFrame) -> None:
        """Keep one bar's rows (the predictions as arrays; their long rows are built when read)."""
        s = sized.sort_values("symbol", kind="mergesort")
        self._pred[bar] = predictions
        self._size[bar] = s[SIZING_HISTORY_COLUMNS[1:]].assign(bar=bar)[SIZING_HISTORY_COLUMNS].reset_index(drop=True)
        grid = _BarPredictions.of(predictions)
        last = self._grid[max(self._grid)] if self._grid else None
        if last is not None and np.array_equal(last.symbols, grid.symbols):  # share one array: the stacking
            grid = _BarPredictions(last.symbols, grid.groups, grid.raw, grid.std)  # check is then `is`
        self._grid[bar] = grid
        for store in (self._pred, self._size, self._grid):
            for old in sorted(store)[:-self.keep]:
                del store[old]

    def _get(self, store: dict[str, pd.DataFrame], bars: list[str], columns: list[str]) -> pd.DataFrame:
        parts = [store[b] for b in sorted(bars) if b in store]
        if not parts:
            return _empty(columns)
        return pd.concat(parts, ignore_index=True)  # bars in key order, each already sorted

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        # Each bar's rows sorted in (symbol, horizon, family) order and bars concatenated in key order: the
        # result is in LineageHistory's ORDER BY.
        rows = {b: self._pred[b].sort_values(["symbol", "horizon", "family"], kind="mergesort")[
            PRED_HISTORY_COLUMNS[1:]].assign(bar=b)[PRED_HISTORY_COLUMNS].reset_index(drop=True)
            for b in bars if b in self._pred}
        return self._get(rows, bars, PRED_HISTORY_COLUMNS)

    def prediction_grid(self, bars: list[str]) -> PredictionGrid:
        """Scatters the per-bar arrays kept by :meth:`add` into one grid: the same grid as
        ``PredictionGrid.from_frame(self.predictions(bars), bars)`` without rebuilding it from rows."""
        kept = [(j, self._grid[b]) for j, b in enumerate(bars) if b in self._grid]
        if not kept:
            return PredictionGrid.from_frame(self.predictions(bars), bars)
        return assemble_grid(bars, kept)

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        return self._get(self._size, bars, SIZING_HISTORY_COLUMNS)
