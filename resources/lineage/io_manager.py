"""The lineage IO manager: every asset output is recorded in DuckDB, keyed by bar, and loaded from there.

Why an IO manager and not pickles: the lineage tables *are* the storage, so any asset can be
rematerialized alone in the UI (its inputs load from the recorded tables), and an audit reads exactly what
was recorded. Within one run, outputs are also kept in memory so downstream steps do not re-read DuckDB.

Outputs: a ``BarWindow`` (the ``bars`` asset: snapshot → table ``bars``, skipped rows → ``bars_skips``, corporate
actions in effect → ``bars_adjustments``, raw history → ``market_bars``), a
``DataFrame`` (table named after the asset) or a ``dict`` of DataFrames (each key a table name that starts
with the asset name). Each table write replaces the bar's rows in one transaction and records a
``materializations`` row with its content hash and the content hashes of the upstream tables.

Except the record of trading (:data:`APPEND_ONLY_TABLES`, issue 15): orders, fills, kill-switch events,
refusals and the working orders seen are **appended**, never deleted or replaced. Every row carries the
``run_id`` of the run that recorded it (stamped here when the asset did not), a run appends only its own
rows (rows carrying another run's id — a kept record — are already recorded), and a fill whose ``fill_id``
is recorded in either fills table is never recorded again. So a rerun of a bar adds what it saw and the
first run's lineage stays readable.

Audit runs (tag ``tradegraph/mode=audit``) write to ``audit__<table>`` instead, so an audit never
overwrites what was recorded; their inputs still load from the recorded tables.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import pandas as pd

from assets.bars.logic import BarWindow, empty_skips
from assets.history import write_prediction_state
from resources.lineage.batch import TableBatch, assemble, first_seen, stamp_own
from resources.lineage.store import LineageStore
from resources.market.adjustments import empty_adjustments
from resources.market.calendar import get_calendar, parse_bar_key

MODE_TAG = "tradegraph/mode"
FILLS_TABLES = ("positions_fills", "executions_fills")
APPEND_ONLY_TABLES = frozenset({"executions", "executions_fills", "executions_killswitch", "executions_refusals",
                                "positions_fills", "positions_orders", "positions_foreign_fills"})
_RUN_CACHE: dict[tuple[str, str, str], Any] = {}


def run_mode(context: dg.OutputContext | dg.InputContext) -> str:
    try:
        return context.step_context.dagster_run.tags.get(MODE_TAG, "live")
    except Exception:  # a context built outside a run (unit tests)
        return "live"


def table_prefix(mode: str) -> str:
    return "audit__" if mode == "audit" else ""


class LineageIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs in the lineage DuckDB file ``paths.lineage_db`` (no field: not settable by a launch)."""

    def _store(self) -> LineageStore:
        return LineageStore()

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        asset = context.asset_key.path[-1]
        bar = context.partition_key
        prefix = table_prefix(run_mode(context))
        upstream_names = [d.asset_key.path[-1] for d in context.asset_spec.deps]
        store = self._store()
        with store.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                hashes, revised = record_output(store, con, context.run_id, asset, bar, obj, upstream_names, prefix)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        if asset == "predictions" and not prefix:  # the compact record the next bars read (assets/history.py)
            write_prediction_state(store.path, bar, obj["predictions"], hashes["predictions"])
        if revised is not None:
            context.add_output_metadata({"revised_history_rows": revised})
        _RUN_CACHE[(context.run_id, asset, bar)] = obj
        context.add_output_metadata({f"content_hash/{t}": h[:16] for t, h in sorted(hashes.items())})

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.path[-1]
        bar = context.partition_key
        run_id = context.step_context.run_id if context.step_context else ""
        for key in [k for k in _RUN_CACHE if k[0] != run_id]:
            del _RUN_CACHE[key]
        cached = _RUN_CACHE.get((run_id, asset, bar))
        if cached is not None:
            return cached
        return load_recorded(self._store(), asset, bar)


def own_rows(table: str, frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """What a run appends to an append-only table: its rows stamped with its id (rows of other runs dropped)."""
    return stamp_own(frame, run_id)


def _append_rule(table: str) -> tuple[str | None, tuple[str, ...]] | None:
    """How ``table`` (``audit__`` prefixed or not) is written: None = its bars are replaced; else appended, with
    the column that must stay unique and the tables it must be unique across (fills: ``fill_id`` in both)."""
    base = table.removeprefix("audit__")
    if base not in APPEND_ONLY_TABLES:
        return None
    if base not in FILLS_TABLES:
        return None, ()
    prefix = table[: len(table) - len(base)]
    return "fill_id", tuple(prefix + t for t in FILLS_TABLES)


def write_table(store: LineageStore, con: Any, table: str, frames: dict[str, pd.DataFrame]) -> None:
    """Write bar → frame to ``table``: append-only tables append (fills unique by ``fill_id``), every
    other table replaces the bars' rows."""
    rule = _append_rule(table)
    if rule is None:
        store.write_partitions(con, table, frames)
    else:
        store.append_rows(con, table, frames, *rule)


def write_batch(store: LineageStore, con: Any, table: str, batch: TableBatch) -> None:
    """:func:`write_table` of an assembled batch (its frame is consumed: the key columns go into it)."""
    rule = _append_rule(table)
    if rule is None:
        store.replace_bars(con, table, batch.bars, batch.lengths, batch.data)
    else:
        store.append_bars(con, table, batch.bars, batch.lengths, batch.data, *rule)


_NO_ADJUSTMENTS: list[pd.DataFrame] = []


def _no_adjustments() -> pd.DataFrame:
    """The empty adjustments table, made once per process (3 ms each time; replay records it at every bar).
    Shared read-only: the writers and hashes never modify a frame they are given."""
    if not _NO_ADJUSTMENTS:
        _NO_ADJUSTMENTS.append(empty_adjustments())
    return _NO_ADJUSTMENTS[0]


def output_tables(asset: str, obj: Any) -> dict[str, pd.DataFrame]:
    if isinstance(obj, BarWindow):
        adjustments = obj.adjustments if obj.adjustments is not None else _no_adjustments()
        return {"bars": obj.snapshot, "bars_adjustments": adjustments, "bars_skips": obj.skips}
    if isinstance(obj, pd.DataFrame):
        return {asset: obj}
    if isinstance(obj, dict):
        bad = [k for k in obj if not k.startswith(asset)]
        if bad:
            raise ValueError(f"asset {asset}: table names {bad} must start with the asset name")
        return {k: v for k, v in sorted(obj.items())}
    raise TypeError(f"asset {asset}: cannot record an output of type {type(obj).__name__}")


def upstream_hashes(con: Any, names: list[str], bar: str, prefix: str) -> dict[str, str]:
    if not names:
        return {}
    rows = con.execute("""
        SELECT tbl, content_hash FROM materializations
        WHERE bar = ? AND asset IN (SELECT unnest(?))
        QUALIFY row_number() OVER (PARTITION BY tbl ORDER BY recorded_at DESC) = 1
        ORDER BY tbl""", [bar, names]).fetchall()
    return {t: h for t, h in rows if prefix or not t.startswith("audit__")}


def record_output(store: LineageStore, con: Any, run_id: str, asset: str, bar: str, obj: Any,
                  upstream_names: list[str], prefix: str = "") -> tuple[dict[str, str], int | None]:
    """Write one asset output's tables for ``bar`` (inside the caller's transaction) with their
    materialization rows; shared by the IO manager and the replay loop so both record the same way."""
    upstream = upstream_hashes(con, upstream_names, bar, prefix)
    hashes: dict[str, str] = {}
    for table, frame in output_tables(asset, obj).items():   # a batch of one bar: the replay's code path
        batch = assemble([bar], [frame], run_id if table in APPEND_ONLY_TABLES else None)
        hashes[table] = batch.hashes[0]
        rows = int(batch.lengths[0])
        write_batch(store, con, prefix + table, batch)
        store.record_materialization(con, run_id, asset, prefix + table, bar, rows, hashes[table], upstream)
    revised = None
    if isinstance(obj, BarWindow) and not prefix:
        revised = store.write_market_bars(con, obj.history, run_id)
    return hashes, revised


def record_batch(store: LineageStore, con: Any, run_id: str,
                 items: list[tuple[str, str, Any, list[str]]], keep: frozenset[str] | None = None) -> None:
    """Record many (bar, asset, output, upstream assets) at once — the replay loop's bulk path.

    Same tables, rows, content hashes and materialization rows as :func:`record_output` one by one; the
    upstream hashes come from the batch itself (every upstream of a replayed asset is in the same bar).
    Each table's frames of all the bars are assembled once (:func:`~resources.lineage.batch.assemble`: one
    concatenation, stamped and hashed as whole arrays) and written with one insert.
    ``keep``: write only these tables (and their materialization rows); the hashes are still those of every
    table, so a kept table's upstream hashes equal the full record's.
    """
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    recorded = [(bar, asset, obj, upstream_names, output_tables(asset, obj))
                for bar, asset, obj, upstream_names in items]
    per_table: dict[str, tuple[list[str], list[pd.DataFrame]]] = {}
    for bar, _, _, _, tables in recorded:
        for t, frame in tables.items():
            bars, frames = per_table.setdefault(t, ([], []))
            bars.append(bar)
            frames.append(frame)
    batches: dict[str, TableBatch] = {}
    for t, (bars, frames) in per_table.items():
        if len(set(bars)) < len(bars):
            raise ValueError(f"lineage table {t}: a bar is recorded twice in one batch")
        batches[t] = assemble(bars, frames, run_id if t in APPEND_ONLY_TABLES else None)
    at = {t: dict(zip(b.bars, range(len(b.bars)), strict=True)) for t, b in batches.items()}
    hashes = {(bar, asset): {t: batches[t].hashes[at[t][bar]] for t in tables}
              for bar, asset, _, _, tables in recorded}
    mats = []
    histories = []
    for bar, asset, obj, upstream_names, tables in recorded:
        own = hashes[(bar, asset)]
        upstream = {t: h for name in sorted(upstream_names) for t, h in sorted(hashes.get((bar, name), {}).items())}
        blob = json.dumps(dict(sorted(upstream.items())), sort_keys=True)
        for t in tables:
            if keep is None or t in keep:
                mats.append((run_id, asset, t, bar, int(batches[t].lengths[at[t][bar]]), own[t], blob, now))
        if isinstance(obj, BarWindow) and (keep is None or "bars" in keep):
            histories.append(obj.history)
    for table, batch in sorted(batches.items()):
        if keep is None or table in keep:
            write_batch(store, con, table, batch)
    store.record_materializations(con, pd.DataFrame(mats, columns=[
        "run_id", "asset", "tbl", "bar", "row_count", "content_hash", "upstream_hashes", "recorded_at"]))
    if histories:
        hist = first_seen(histories)
        if len(hist):
            store.write_market_bars(con, hist, run_id)


def absorb_staged(store: LineageStore, con: Any, staged: Any) -> dict[str, int] | None:
    """Move a staging lineage file written by :func:`record_batch` into ``store`` in one transaction, with
    the same result as recording its bars there directly (append-only tables appended, fills unique by
    ``fill_id`` across both fills tables, every other table's bars replaced); see ``LineageStore.absorb``."""
    appends = {t: ("fill_id", FILLS_TABLES) if t in FILLS_TABLES else (None, ()) for t in sorted(APPEND_ONLY_TABLES)}
    return store.absorb(con, staged, appends)


def load_recorded(store: LineageStore, asset: str, bar: str) -> Any:
    """What was recorded for ``asset`` at ``bar``, in the shape the asset returned it."""
    if asset == "bars":
        from CONFIG.config_loader import get_cfg

        snapshot = store.read_partition("bars", bar)
        times = get_calendar().previous_bars(parse_bar_key(bar), get_cfg("market.history_bars"))
        history = store.read_market_bars(times[0], times[-1])
        history = history[history["symbol"].isin(snapshot["symbol"])].reset_index(drop=True)
        skips = store.read_partition("bars_skips", bar, missing_ok=True)
        adjustments = store.read_partition("bars_adjustments", bar, missing_ok=True)
        return BarWindow(bar, times, snapshot, history, skips if len(skips.columns) else empty_skips(),
                         adjustments if len(adjustments) else None)
    with store.connect(read_only=store.path.exists()) as con:
        tables = [r[0] for r in con.execute(
            "SELECT DISTINCT tbl FROM materializations WHERE asset = ? AND bar = ? AND tbl NOT LIKE 'audit__%' "
            "ORDER BY tbl", [asset, bar]).fetchall()]
        if not tables:
            raise LookupError(f"asset {asset} has no recorded partition {bar} in {store.path}: materialize it first")
        frames = {t: store.read_partition(t, bar, con, missing_ok=True) for t in tables}
    return frames[asset] if list(frames) == [asset] else frames
