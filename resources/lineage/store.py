"""The lineage store: one DuckDB file holding every value on the decision path, keyed by bar.

Why short-lived connections: DuckDB lets one process hold the file read-write and then blocks every other
open, read-only included (``docs/dagster_notes.md``). So each write is one short transaction, readers
open read-only, and an open that finds the file locked retries with back-off for at most
``market.lock_retry_seconds`` and then fails with a clear message — never a deadlock, never a lost write.

Tables: one per asset table (column ``bar`` = partition key, ``YYYY-MM-DDTHH:MMZ``), ``market_bars``
(every bar row the engine saw, first seen wins, keyed by ts and symbol), ``runs``, ``materializations``
and ``configs`` (the effective configuration of each hash, so an audit can rerun with it).
Rewriting a partition deletes and inserts in one transaction: no duplicates, no half-written partition.

A Dagster run holds no connection between its writes (issue 14, readers never wait): each step's output is
one short read-write transaction and the run's reads open read-only, so ``explain``, ``audit``, the report and
notebooks wait at most one transaction (tens of ms), and two runs launched outside the queue interleave their
transactions instead of failing. A lock is polled every few ms (never a long back-off). What made the opens
cheap enough (a run opens the file ~30 times): the schema and each table's columns are learnt once per process
and file, not asked again per store. :func:`hold_connection` still shares one connection where a caller wants
one transaction stream for a long time (it is then the only writer and readers wait for it).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.lineage.layout import SCHEMA as COMPACT
from resources.lineage.layout import CompactTable, Layout, layout_for, physical_columns, with_hidden

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")

_SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {COMPACT};
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR, bar VARCHAR, mode VARCHAR, code_version VARCHAR, config_hash VARCHAR,
    model_versions VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, status VARCHAR,
    PRIMARY KEY (run_id, bar));
CREATE TABLE IF NOT EXISTS materializations (
    run_id VARCHAR, asset VARCHAR, tbl VARCHAR, bar VARCHAR, row_count BIGINT, content_hash VARCHAR,
    upstream_hashes VARCHAR, recorded_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS configs (config_hash VARCHAR PRIMARY KEY, config_json VARCHAR);
CREATE TABLE IF NOT EXISTS runs_process (
    run_id VARCHAR PRIMARY KEY, host VARCHAR, pid BIGINT, proc_start VARCHAR, started_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS market_bars (
    ts TIMESTAMPTZ, symbol VARCHAR, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE,
    bid DOUBLE, ask DOUBLE, first_run_id VARCHAR, PRIMARY KEY (ts, symbol));
"""


# A staging file (a replay's bulk lineage) names itself in this table (staging_id, run_id, account_db); the lineage
# file records each staging id it absorbed in ABSORBED, in the absorbing transaction, so a staging file moved in
# and then left behind by a kill (before its removal) is never moved in twice (its append-only rows doubled).
# (in the schema tg_meta: engine bookkeeping, not a lineage table readers list)
STAGING_IDENTITY = "staging_identity"
ABSORBED = "tg_meta.staging_absorbed"
RUN_COLUMNS = ["run_id", "bar", "mode", "code_version", "config_hash", "model_versions", "started_at", "ended_at",
               "status"]


class LineageLocked(RuntimeError):
    """The DuckDB file stayed locked by another process for the whole bounded wait."""


class _Held:
    """A connection one thread keeps open on one file (opened on first use) and what it learnt of tables."""

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.columns: dict[str, set[str]] = {}
        self.layouts: dict[str, CompactTable | None] = {}


_HOLDS = threading.local()
#: per lineage file (path, inode) seen by this process: its schema was created / its tables' columns
_SCHEMA_READY: set[tuple[str, int] | None] = set()
_KNOWN_COLUMNS: dict[tuple[str, int], dict[str, set[str]]] = {}
#: per lineage file: each table's compact layout (None: a plain table), learnt like its columns
_KNOWN_LAYOUTS: dict[tuple[str, int], dict[str, CompactTable | None]] = {}


def _holds() -> dict[str, _Held]:
    if not hasattr(_HOLDS, "paths"):
        _HOLDS.paths = {}
    return _HOLDS.paths


@contextmanager
def hold_connection(path: str | Path | None = None) -> Iterator[None]:
    """Within this block, every :class:`LineageStore` of this thread on ``path`` shares one read-write
    connection, opened at the first use and closed at the end (nested holds share the outer one)."""
    key = str(Path(path or resolve_path("paths.lineage_db")).resolve())
    holds = _holds()
    if key in holds:
        yield
        return
    holds[key] = _Held()
    try:
        yield
    finally:
        held = holds.pop(key)
        if held.con is not None:
            held.con.close()


def forget_file(path: str | Path) -> None:
    """Drop what this process learnt of the file at ``path`` (its schema, tables and columns): call it after
    deleting the file, since a new file at the same path may get the same inode."""
    resolved = str(Path(path).resolve())
    for key in [k for k in _KNOWN_COLUMNS if k[0] == resolved]:
        del _KNOWN_COLUMNS[key]
    for key in [k for k in _KNOWN_LAYOUTS if k[0] == resolved]:
        del _KNOWN_LAYOUTS[key]
    for key in [k for k in _SCHEMA_READY if k is not None and k[0] == resolved]:
        _SCHEMA_READY.discard(key)


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"invalid table name {name!r}")
    return name


def _concat(frames: dict[str, pd.DataFrame]) -> tuple[list[str], np.ndarray, pd.DataFrame | None]:
    """bar → frame as (bars, rows per bar, the non-empty frames concatenated in order or None)."""
    bars = list(frames)
    lengths = np.array([len(f) for f in frames.values()], dtype=np.int64)
    filled = [f for f in frames.values() if len(f)]
    return bars, lengths, pd.concat(filled, ignore_index=True) if filled else None


def _with_keys(data: pd.DataFrame, bars: list[str], lengths: np.ndarray) -> pd.DataFrame:
    """``data`` with ``bar`` and ``_row`` (numbered per bar from 0) first, as whole arrays; a ``bar`` or ``_row``
    column of its own is replaced. Modifies ``data`` (the caller's own assembled frame) and returns it."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != len(data):
        raise ValueError(f"rows of {len(bars)} bars sum to {int(lengths.sum())}, the frame has {len(data)}")
    for c in ("bar", "_row"):
        if c in data.columns:
            del data[c]
    data.insert(0, "_row", np.arange(len(data), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    data.insert(0, "bar", np.repeat(np.array(bars, dtype=object), lengths))
    return data


class LineageStore:
    """Reads and writes of the lineage DuckDB file (path from ``paths.lineage_db`` unless given)."""

    def __init__(self, path: str | Path | None = None, retry_seconds: float | None = None):
        self.path = Path(path) if path else resolve_path("paths.lineage_db")
        self.retry_seconds = get_cfg("market.lock_retry_seconds") if retry_seconds is None else retry_seconds
        self._schema_ready = False
        self._own_columns: dict[str, set[str]] = {}
        self._own_layouts: dict[str, CompactTable | None] = {}

    def _held(self) -> _Held | None:
        holds = _holds()
        return holds.get(str(self.path.resolve())) if holds else None

    def _file_key(self) -> tuple[str, int] | None:
        try:
            return str(self.path.resolve()), self.path.stat().st_ino
        except OSError:
            return None

    @property
    def _columns(self) -> dict[str, set[str]]:
        """Known tables and their columns: the held connection's while one is held, else this process's
        knowledge of this file (tables and columns are only ever added, so what was seen stays true; a
        store is built per call, and asking DuckDB again cost ~11 ms a table per write)."""
        held = self._held()
        if held is not None:
            return held.columns
        key = self._file_key()
        return _KNOWN_COLUMNS.setdefault(key, {}) if key is not None else self._own_columns

    @property
    def _layouts(self) -> dict[str, CompactTable | None]:
        """Known tables' compact layouts (None: plain), cached like :attr:`_columns`."""
        held = self._held()
        if held is not None:
            return held.layouts
        key = self._file_key()
        return _KNOWN_LAYOUTS.setdefault(key, {}) if key is not None else self._own_layouts

    def _compact(self, con: duckdb.DuckDBPyConnection, table: str, db: str | None = None) -> CompactTable | None:
        """``table``'s compact layout in this file (or the attached database ``db``), None if it is plain or absent."""
        if db is None and table in self._layouts:
            return self._layouts[table]
        where = "database_name = current_database()" if db is None else "database_name = ?"
        row = con.execute(f"SELECT comment FROM duckdb_tables() WHERE {where} AND schema_name = ? AND table_name = ?",
                          ([] if db is None else [db]) + [COMPACT, table]).fetchall()
        info = None
        if row:
            prefix = f"{db}." if db else ""
            physical = {r[0]: r[1] for r in con.execute(f"DESCRIBE {prefix}{COMPACT}.{table}").fetchall()}
            info = CompactTable(Layout.from_json(row[0][0]), physical)
        if db is None and (info is not None or self.has_table(con, table)):
            self._layouts[table] = info
        return info

    def _has(self, con: duckdb.DuckDBPyConnection, table: str) -> bool:
        return table in self._columns or self.has_table(con, table)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection (or the held one, see :func:`hold_connection`); waits (bounded) while
        another process holds the file."""
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"lineage database {self.path} does not exist yet (no run has written it)")
        held = self._held()
        if held is not None:
            if held.con is None:
                held.con = self._open(read_only=False)
                held.con.execute(_SCHEMA)
                for table, cols in held.con.execute(
                        "SELECT table_name, list(column_name) FROM duckdb_columns() WHERE schema_name = 'main' "
                        "AND database_name = current_database() GROUP BY table_name").fetchall():
                    held.columns[table] = set(cols)
            yield held.con
            return
        if not read_only and not self.path.exists():
            # a new file (first run, or one deleted and made again): what this process learnt of a file at
            # this path is void, even if the new file gets the old one's inode (Linux reuses them)
            forget_file(self.path)
            self._schema_ready = False
            self._own_columns.clear()
        con = self._open(read_only)
        try:
            if not read_only and not self._schema_ready:
                key = self._file_key()
                if key not in _SCHEMA_READY:
                    con.execute(_SCHEMA)
                    _SCHEMA_READY.add(self._file_key())
                self._schema_ready = True
            yield con
        finally:
            con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A holder keeps the file for one short transaction (ms), so poll often and never back off far:
        # a 0.5 s back-off cap let a reader polling every 50 ms starve a run's writes for seconds.
        deadline, delay = time.monotonic() + self.retry_seconds, 0.002
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    if "lock" in str(exc).lower():
                        raise LineageLocked(
                            f"lineage database {self.path} is locked by another process (waited "
                            f"{self.retry_seconds:.0f}s; DuckDB allows one writer and blocks readers meanwhile)"
                        ) from exc
                    raise
                time.sleep(delay)
                delay = min(delay * 1.5, 0.02)

    # ------------------------------------------------------------------ writes
    def write_partition(self, con: duckdb.DuckDBPyConnection, table: str, bar: str, frame: pd.DataFrame) -> None:
        """Replace ``table``'s rows for ``bar`` with ``frame`` (call inside a transaction)."""
        self.write_partitions(con, table, {bar: frame})

    def write_partitions(self, con: duckdb.DuckDBPyConnection, table: str, frames: dict[str, pd.DataFrame]) -> None:
        """Replace ``table``'s rows for several bars at once (bar → frame): one delete, one insert."""
        bars, lengths, data = _concat(frames)
        self.replace_bars(con, table, bars, lengths, data)

    def replace_bars(self, con: duckdb.DuckDBPyConnection, table: str, bars: list[str], lengths: np.ndarray,
                     data: pd.DataFrame | None) -> None:
        """Replace ``table``'s rows of ``bars`` with ``data`` (``lengths[i]`` rows of ``bars[i]``, in order;
        None: no rows), one delete and one insert (call inside a transaction). ``data`` is the caller's own
        assembled frame (:func:`resources.lineage.batch.assemble`): the key columns are inserted into it.
        An absent table is not created by a write of no rows (its columns would be untyped)."""
        table = _check_ident(table)
        if data is None or not len(data):
            if self._columns.get(table) is not None or self._has(con, table):
                con.execute(f"DELETE FROM {self._physical(table, self._compact(con, table))} WHERE bar BETWEEN ? "
                            "AND ? AND bar IN (SELECT unnest(?))", [min(bars), max(bars), list(bars)])
            return
        data = _with_keys(data, bars, lengths)
        known = self._columns.get(table)
        con.register("_incoming", data)
        try:
            if known is None or not set(data.columns) <= known:
                self._columns[table] = self._ensure_columns(con, table, data, known is not None or
                                                            self._has(con, table))
            info = self._compact(con, table)
            # the range lets DuckDB skip row groups by their min/max (bars are written in time order)
            con.execute(f"DELETE FROM {self._physical(table, info)} WHERE bar BETWEEN ? AND ? AND bar IN "
                        "(SELECT unnest(?))", [min(bars), max(bars), list(bars)])
            self._insert(con, table, info, "_incoming", self._with_hidden(con, info, data))
        finally:
            con.unregister("_incoming")

    @staticmethod
    def _with_hidden(con: duckdb.DuckDBPyConnection, info: CompactTable | None, data: pd.DataFrame) -> set[str]:
        """Register ``_incoming`` again with the layout's hidden columns when it has some; returns the columns."""
        if info is None or not info.layout.hidden:
            return set(data.columns)
        data = with_hidden(info.layout, data)
        con.unregister("_incoming")
        con.register("_incoming", data)
        return set(data.columns)

    @staticmethod
    def _physical(table: str, info: CompactTable | None) -> str:
        return f"{COMPACT}.{table}" if info is not None else table

    def _insert(self, con: duckdb.DuckDBPyConnection, table: str, info: CompactTable | None, source: str,
                present: set[str]) -> int:
        """Insert the logical rows of ``source`` into ``table`` (encoded when it is compact); returns the count."""
        if info is None:
            sql = f"INSERT INTO {table} BY NAME SELECT * FROM {source}"
        else:
            sql = f"INSERT INTO {COMPACT}.{table} BY NAME {info.encode(source, present)}"
        got = con.execute(sql).fetchall()
        return int(got[0][0]) if got else 0

    def append_rows(self, con: duckdb.DuckDBPyConnection, table: str, frames: dict[str, pd.DataFrame],
                    unique: str | None = None, unique_in: tuple[str, ...] = ()) -> int:
        """Append rows for several bars (bar → frame) without touching any recorded row (call inside a
        transaction); see :meth:`append_bars`. Returns the number of rows appended."""
        bars, lengths, data = _concat(frames)
        return self.append_bars(con, table, bars, lengths, data, unique, unique_in)

    def append_bars(self, con: duckdb.DuckDBPyConnection, table: str, bars: list[str], lengths: np.ndarray,
                    data: pd.DataFrame | None, unique: str | None = None, unique_in: tuple[str, ...] = ()) -> int:
        """Append ``data`` (``lengths[i]`` rows of ``bars[i]``, in order; the caller's own frame) without
        touching any recorded row. Each bar's ``_row`` continues after its last recorded one, so reads keep the
        order of recording. With ``unique`` (a column, e.g. ``fill_id``), a row whose value is already recorded
        in this table or in any table of ``unique_in`` is not appended (nor a repeat within the batch).
        Returns the number of rows appended."""
        table = _check_ident(table)
        if data is None or not len(data):
            return 0
        data = _with_keys(data, bars, lengths)
        if unique:
            repeat = data[unique].duplicated(keep="first").to_numpy()
            if repeat.any():
                data = data[~repeat]
        known = self._columns.get(table)
        exists = known is not None or self._has(con, table)
        con.register("_incoming", data)
        try:
            return self._append_incoming(con, table, unique, unique_in, exists,
                                         known if known is not None and set(data.columns) <= known else None)
        finally:
            con.unregister("_incoming")

    def _append_incoming(self, con: duckdb.DuckDBPyConnection, table: str, unique: str | None,
                         unique_in: tuple[str, ...], exists: bool, known: set[str] | None = None) -> int:
        """Append the relation ``_incoming`` (columns ``bar``, ``_row`` numbered per bar from 0, …) to
        ``table`` as :meth:`append_rows` does."""
        if known is None:
            self._columns[table] = self._ensure_columns(con, table, None, exists)
        if self._compact(con, table) is not None:
            raise ValueError(f"append-only table {table} cannot have a compact layout")
        where = ""
        if unique:
            others = [t for t in dict.fromkeys((table, *unique_in)) if self._has(con, _check_ident(t))]
            where = f"WHERE i.{unique} NOT IN (" + " UNION ".join(
                f"SELECT {unique} FROM {t}" for t in others) + ")"
        n = con.execute(f"""
            INSERT INTO {table} BY NAME
            SELECT i.* EXCLUDE (_row), i._row + coalesce(o.last + 1, 0) AS _row FROM _incoming i
            LEFT JOIN (SELECT bar, max(_row) AS last FROM {table} WHERE bar IN (SELECT DISTINCT bar FROM _incoming)
                       GROUP BY bar) o USING (bar) {where}""").fetchall()
        return int(n[0][0]) if n else 0

    def _ensure_columns(self, con: duckdb.DuckDBPyConnection, table: str, data: pd.DataFrame | None,
                        exists: bool) -> set[str]:
        """Create the table from ``_incoming`` (compact when it has a layout, :mod:`resources.lineage.layout`)
        or add its new columns; returns the table's (logical) columns. Tables and columns are only ever added,
        so the answer is cached for this store's lifetime."""
        incoming = {r[0]: r[1] for r in con.execute("DESCRIBE _incoming").fetchall()}
        if data is not None:
            incoming = {c: incoming[c] for c in data.columns}
        if not exists and layout_for(table) is not None:
            return self._create_compact(con, table, incoming)
        info = self._compact(con, table) if exists else None
        if info is not None:
            return self._add_compact_columns(con, table, info, incoming)
        if not exists:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM _incoming LIMIT 0")
            self._layouts[table] = None
        existing = {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for col, typ in sorted(existing.items()):
            if typ in ('"NULL"', "NULL"):
                con.execute(f'ALTER TABLE {table} ALTER COLUMN "{col}" TYPE VARCHAR')
        for col in incoming:
            if col not in existing:
                dtype = con.execute(f'SELECT typeof("{col}") FROM _incoming LIMIT 1').fetchall()
                typ = dtype[0][0] if dtype and dtype[0][0] != "NULL" else "VARCHAR"
                con.execute(f'ALTER TABLE {table} ADD COLUMN "{col}" {typ}')
                existing[col] = typ
        return set(existing)

    def _create_compact(self, con: duckdb.DuckDBPyConnection, table: str, incoming: dict[str, str],
                        layout: Layout | None = None) -> set[str]:
        """Create ``compact.<table>`` for these logical columns (name → type) and its view ``<table>``."""
        logical = {c: ("VARCHAR" if t in ('"NULL"', "NULL") else t) for c, t in incoming.items()}
        layout = (layout or layout_for(table)).fitted(logical)
        physical = physical_columns(layout, logical)
        con.execute(f"CREATE TABLE {COMPACT}.{table} (" + ", ".join(f'"{c}" {t}' for c, t in physical.items()) + ")")
        con.execute(f"COMMENT ON TABLE {COMPACT}.{table} IS '" + layout.to_json().replace("'", "''") + "'")
        info = CompactTable(layout, physical)
        con.execute(f"CREATE VIEW {table} AS {info.decode(f'{COMPACT}.{table}')}")
        self._layouts[table] = info
        return set(info.logical())

    def _add_compact_columns(self, con: duckdb.DuckDBPyConnection, table: str, info: CompactTable,
                             incoming: dict[str, str]) -> set[str]:
        """New logical columns of a compact table: stored plain, the view made again."""
        logical = info.logical()
        new = {c: ("VARCHAR" if t in ('"NULL"', "NULL") else t) for c, t in incoming.items() if c not in logical}
        if new:
            for col, typ in new.items():
                con.execute(f'ALTER TABLE {COMPACT}.{table} ADD COLUMN "{col}" {typ}')
                info.physical[col] = typ
            con.execute(f"CREATE OR REPLACE VIEW {table} AS {info.decode(f'{COMPACT}.{table}')}")
        return set(info.logical())

    def absorb(self, con: duckdb.DuckDBPyConnection, staged: str | Path,
               appends: dict[str, tuple[str | None, tuple[str, ...]]]) -> dict[str, int]:
        """Move a staging lineage file's record (written by the same writers) into this one, in bulk : one ``INSERT … SELECT`` per table, so each table gets whole row groups
        compressed at once instead of one partial row group per flush.

        The staged file's ``materializations`` say which (table, bar) it recorded. Per table and bar the
        result is what writing the same frames here bar by bar gives: a replaced table loses the bar's
        earlier rows (also when the staged frame was empty); an append-only table (``appends``: table →
        (unique column or None, the other tables it must be unique across)) keeps them, continues each
        bar's ``_row`` after them and skips a unique value already recorded; ``market_bars`` keeps the
        first row seen; ``runs``/``materializations`` rows of the same run replace, ``configs`` are kept.
        All of it is one transaction of its own (call it outside one): a failure leaves this file as it
        was. A staging file is moved in at most once: one that names itself (:data:`STAGING_IDENTITY`) has its
        id recorded in :data:`ABSORBED` by the same transaction; an older one counts as moved in when all of its
        ``runs`` rows are here. Returns the rows inserted per table, or None when it was moved in already.
        """
        con.execute("ATTACH ? AS _stg (READ_ONLY)", [str(staged)])
        learnt = {t: set(c) for t, c in self._columns.items()}   # to forget what a rolled-back write created
        layouts = dict(self._layouts)
        con.execute("BEGIN TRANSACTION")
        try:
            identity = self._staging_identity(con)
            if self._absorbed_already(con, identity):
                con.execute("ROLLBACK")   # moved in already (killed after that commit, before the file's removal)
                return None
            have = {t for (t,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = '_stg' AND schema_name = 'main'"
            ).fetchall()}
            wrote = [t for (t,) in con.execute(
                "SELECT DISTINCT tbl FROM _stg.materializations ORDER BY tbl").fetchall()]
            inserted: dict[str, int] = {}
            for table in wrote:
                table = _check_ident(table)
                staged_info = self._compact(con, table, db="_stg")
                # the staged rows as readers see them (a compact table decoded: its view is the staged file's)
                source = (staged_info.decode(f"_stg.{COMPACT}.{table}") if staged_info is not None else
                          f"SELECT * FROM _stg.{table}" if table in have else "SELECT NULL AS bar WHERE false")
                con.execute(f"CREATE OR REPLACE TEMP VIEW _incoming AS {source}")
                found = staged_info is not None or table in have
                exists = table in self._columns or self._has(con, table)
                if table in appends:
                    if found:
                        unique, unique_in = appends[table]
                        inserted[table] = self._append_incoming(con, table, unique, unique_in, exists)
                    continue
                info = self._compact(con, table) if exists else None
                if exists:
                    bars = con.execute("SELECT min(bar), max(bar) FROM _stg.materializations WHERE tbl = ?",
                                       [table]).fetchall()[0]
                    con.execute(f"DELETE FROM {self._physical(table, info)} WHERE bar BETWEEN ? AND ? AND bar IN "
                                "(SELECT bar FROM _stg.materializations WHERE tbl = ?)", [*bars, table])
                if found:
                    self._columns[table] = self._ensure_columns(con, table, None, exists)
                    info = self._compact(con, table)
                    if (info is not None and staged_info is not None and info.layout == staged_info.layout
                            and info.physical == staged_info.physical):
                        # the same layout: the staged physical rows as they are (already encoded and sorted)
                        inserted[table] = con.execute(f"INSERT INTO {COMPACT}.{table} BY NAME SELECT * FROM "
                                                      f"_stg.{COMPACT}.{table}").fetchall()[0][0]
                    else:
                        present = {r[0] for r in con.execute("DESCRIBE _incoming").fetchall()}
                        inserted[table] = self._insert(con, table, info, "_incoming", present)
            con.execute("DELETE FROM materializations m USING _stg.materializations r "
                        "WHERE m.run_id = r.run_id AND m.tbl = r.tbl AND m.bar = r.bar")
            con.execute("INSERT INTO materializations BY NAME SELECT * FROM _stg.materializations")
            con.execute("DELETE FROM runs r USING _stg.runs n WHERE r.run_id = n.run_id AND r.bar = n.bar")
            con.execute("INSERT INTO runs BY NAME SELECT * FROM _stg.runs")
            con.execute("INSERT OR IGNORE INTO configs BY NAME SELECT * FROM _stg.configs")
            span = con.execute("SELECT min(ts), max(ts) FROM _stg.market_bars").fetchall()[0]
            if span[0] is not None:
                inserted["market_bars"] = con.execute("""
                    INSERT INTO market_bars BY NAME SELECT m.* FROM _stg.market_bars m
                    ANTI JOIN (SELECT ts, symbol FROM market_bars WHERE ts BETWEEN ? AND ?) b USING (ts, symbol)
                    ORDER BY m.ts, m.symbol""", list(span)).fetchall()[0][0]
            con.execute("DROP VIEW IF EXISTS _incoming")
            if identity is not None:
                con.execute(f"INSERT INTO {ABSORBED} VALUES (?, ?, now())", list(identity))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self._columns.clear()
            self._columns.update(learnt)
            self._layouts.clear()
            self._layouts.update(layouts)
            raise
        finally:
            con.execute("DETACH _stg")
        return inserted

    def _absorbed_already(self, con: duckdb.DuckDBPyConnection, identity: tuple[str, str] | None) -> bool:
        """Was the attached staging file moved in before? By its id; a file written before staging files named
        themselves, by its ``runs`` rows: a move brings all of them in (one transaction) and a killed replay's
        file has none in lineage yet, so every (run_id, bar) already here means it was moved in."""
        if identity is not None:
            return bool(con.execute(f"SELECT count(*) FROM {ABSORBED} WHERE staging_id = ?",
                                    [identity[0]]).fetchone()[0])
        staged_runs = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = '_stg' AND "
                                  "schema_name = 'main' AND table_name = 'runs'").fetchone()[0]
        if not staged_runs or not self._has(con, "runs"):
            return False
        staged, missing = con.execute("SELECT count(*), count(*) FILTER (WHERE r.run_id IS NULL) FROM _stg.runs s "
                                      "LEFT JOIN runs r USING (run_id, bar)").fetchone()
        return staged > 0 and missing == 0

    @staticmethod
    def _staging_identity(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
        """The attached staging file's (staging id, run id) from its :data:`STAGING_IDENTITY` table (None: a file
        without one), with this file's record of absorbed staging files made ready (inside the transaction)."""
        found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = '_stg' AND schema_name = "
                            "'main' AND table_name = ?", [STAGING_IDENTITY]).fetchone()[0]
        row = con.execute(f"SELECT staging_id, run_id FROM _stg.{STAGING_IDENTITY}").fetchone() if found else None
        if row is None:
            return None
        con.execute("CREATE SCHEMA IF NOT EXISTS tg_meta")
        con.execute(f"CREATE TABLE IF NOT EXISTS {ABSORBED} (staging_id VARCHAR PRIMARY KEY, run_id VARCHAR, "
                    "absorbed_at TIMESTAMP WITH TIME ZONE)")
        return str(row[0]), str(row[1])

    def migrate(self) -> list[str]:
        """Convert this file's plain tables that have a compact layout (:func:`~resources.lineage.layout.
        layout_for`; files recorded before issue 12's layout) to it, in one transaction: readers get the same
        rows, columns and types after. Not needed to read or write an old file (its plain tables stay plain);
        it only saves their bytes. Returns the tables converted."""
        done: list[str] = []
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                plain = [t for (t,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = 'main' ORDER BY 1").fetchall() if layout_for(t) is not None]
                for table in plain:
                    con.execute(f"ALTER TABLE {_check_ident(table)} RENAME TO _plain_{table}")
                    con.execute(f"CREATE OR REPLACE TEMP VIEW _incoming AS SELECT * FROM _plain_{table}")
                    self._layouts.pop(table, None)
                    logical = {r[0]: r[1] for r in con.execute("DESCRIBE _incoming").fetchall()}
                    self._columns[table] = self._create_compact(con, table, logical)
                    self._insert(con, table, self._layouts[table], "_incoming", set(logical))
                    con.execute("DROP VIEW _incoming")
                    con.execute(f"DROP TABLE _plain_{table}")
                    done.append(table)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                self._columns.clear()
                self._layouts.clear()
                raise
        return done

    def record_materializations(self, con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
        """Insert many ``materializations`` rows (replacing the same run, table and bar)."""
        con.register("_mats", rows)
        try:
            con.execute("DELETE FROM materializations m USING _mats r "
                        "WHERE m.run_id = r.run_id AND m.tbl = r.tbl AND m.bar = r.bar")
            con.execute("INSERT INTO materializations SELECT run_id, asset, tbl, bar, row_count, content_hash, "
                        "upstream_hashes, recorded_at FROM _mats")
        finally:
            con.unregister("_mats")

    def write_market_bars(self, con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, run_id: str) -> int:
        """Insert bar rows not yet recorded (first seen wins); returns rows whose values differ from the record."""
        if frame.empty:
            return 0
        # the recorded side is cut to the frame's time span first: the table only grows, and bars are
        # appended in time order, so the scan stays the size of the batch, not of the whole history
        span = [frame["ts"].min(), frame["ts"].max()]
        con.register("_mb", frame)
        try:
            revised = con.execute("""
                SELECT count(*) FROM _mb m
                JOIN (SELECT * FROM market_bars WHERE ts BETWEEN ? AND ?) b USING (ts, symbol)
                WHERE m.close IS DISTINCT FROM b.close OR m.volume IS DISTINCT FROM b.volume
                   OR m.high IS DISTINCT FROM b.high OR m.low IS DISTINCT FROM b.low""", span).fetchall()[0][0]
            con.execute("""
                INSERT INTO market_bars
                SELECT m.ts, m.symbol, m.open, m.high, m.low, m.close, m.volume, m.bid, m.ask, ?
                FROM _mb m ANTI JOIN (SELECT ts, symbol FROM market_bars WHERE ts BETWEEN ? AND ?) b
                USING (ts, symbol)""", [run_id, *span])
        finally:
            con.unregister("_mb")
        return int(revised)

    def record_materialization(self, con: duckdb.DuckDBPyConnection, run_id: str, asset: str, table: str,
                               bar: str, rows: int, content_hash: str, upstream: dict[str, str]) -> None:
        con.execute("DELETE FROM materializations WHERE run_id = ? AND tbl = ? AND bar = ?", [run_id, table, bar])
        con.execute("INSERT INTO materializations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, asset, table, bar, rows, content_hash, json.dumps(upstream, sort_keys=True),
                     dt.datetime.now(dt.UTC)])

    def record_config(self, con: duckdb.DuckDBPyConnection, config_hash: str, config: dict) -> None:
        con.execute("INSERT OR IGNORE INTO configs VALUES (?, ?)",
                    [config_hash, json.dumps(config, sort_keys=True, default=str)])

    def replace_runs(self, con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
        """Write complete ``runs`` rows (every column set) in one statement, replacing the same run and bar."""
        if list(rows.columns) != RUN_COLUMNS:
            raise ValueError(f"runs rows need exactly the columns {RUN_COLUMNS}, got {list(rows.columns)}")
        con.register("_runs", rows)
        try:
            con.execute("DELETE FROM runs r USING _runs n WHERE r.run_id = n.run_id AND r.bar = n.bar")
            con.execute("INSERT INTO runs SELECT * FROM _runs")
        finally:
            con.unregister("_runs")

    def upsert_run(self, con: duckdb.DuckDBPyConnection, **row: object) -> None:
        """Insert or update one ``runs`` row (keyed by run id and bar); unknown fields are an error."""
        cols = RUN_COLUMNS
        unknown = set(row) - set(cols)
        if unknown:
            raise ValueError(f"unknown runs columns {sorted(unknown)}")
        current = con.execute("SELECT * FROM runs WHERE run_id = ? AND bar = ?",
                              [row["run_id"], row["bar"]]).fetchall()
        current = current[0] if current else None
        merged = dict(zip(cols, current, strict=True)) if current else dict.fromkeys(cols)
        merged.update({k: v for k, v in row.items() if v is not None})
        con.execute("DELETE FROM runs WHERE run_id = ? AND bar = ?", [row["run_id"], row["bar"]])
        con.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(cols))})", [merged[c] for c in cols])

    # ------------------------------------------------------------------ reads
    def read_partition(self, table: str, bar: str, con: duckdb.DuckDBPyConnection | None = None,
                       missing_ok: bool = False) -> pd.DataFrame:
        """The rows of ``table`` for ``bar`` in the order written (an absent table: error, or empty)."""
        table = _check_ident(table)
        with self._maybe(con) as c:
            if not self._has(c, table):
                if missing_ok:
                    return pd.DataFrame()
                raise LookupError(f"no lineage table {table!r} in {self.path}: materialize it first")
            frame = c.execute(f"SELECT * FROM {table} WHERE bar = ? ORDER BY _row", [bar]).df()
        return frame.drop(columns=["bar", "_row"])

    def read_sql(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).df()

    def read_market_bars(self, start: pd.Timestamp, end: pd.Timestamp,
                         con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
        with self._maybe(con) as c:
            frame = c.execute("""SELECT ts, symbol, open, high, low, close, volume, bid, ask FROM market_bars
                                 WHERE ts BETWEEN ? AND ? ORDER BY ts, symbol""",
                              [start.to_pydatetime(), end.to_pydatetime()]).df()
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame

    def tables(self) -> list[str]:
        with self.connect(read_only=True) as con:
            return sorted(r[0] for r in con.execute("SHOW TABLES").fetchall())

    @staticmethod
    def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
        return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? "
                                "AND database_name = current_database()", [table]).fetchall()[0][0])

    @contextmanager
    def _maybe(self, con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
        if con is not None:
            yield con
        else:
            with self.connect(read_only=self.path.exists()) as c:
                yield c
