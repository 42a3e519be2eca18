"""The compact lineage layout (issue 12): the big tables stored as ``compact.<table>`` and read through a view
with the plain table's columns. What a reader gets must be exactly what the plain layout gives (values to the
bit, sign of zero, NULLs, dtypes), on hand-made edge cases and on real replayed frames; a derived column that is
not its derivation is stored, never recomputed wrong."""

import numpy as np
import pandas as pd
import pytest

import resources.lineage.store as store_module
from resources.lineage.layout import Layout
from resources.lineage.store import LineageStore

BAR = "2025-06-03T14:00Z"


def _plain(monkeypatch):
    """New tables are created plain (the layout before issue 12's compact tables)."""
    monkeypatch.setattr(store_module, "layout_for", lambda table: None)


def _write(store: LineageStore, table: str, frames: dict[str, pd.DataFrame]) -> None:
    with store.connect() as con:
        con.execute("BEGIN TRANSACTION")
        if len(frames) == 1:
            (bar, frame), = frames.items()
            store.write_partition(con, table, bar, frame)
        else:
            store.write_partitions(con, table, frames)
        con.execute("COMMIT")


def _bits(frame: pd.DataFrame) -> dict[str, object]:
    """Each column as comparable bits: floats as int64 views (−0.0 ≠ 0.0; NaN as one pattern), others as is."""
    out = {}
    for c in frame.columns:
        col = frame[c]
        if col.dtype.kind == "f":
            v = col.to_numpy(dtype=float).copy()
            v[np.isnan(v)] = np.nan
            out[c] = v.view(np.int64).tolist()
        else:
            out[c] = col.astype(object).where(col.notna(), None).tolist()
    return out


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert dict(a.dtypes) == dict(b.dtypes)
    assert _bits(a) == _bits(b)


def _sql_nulls(store: LineageStore, table: str) -> list[tuple]:
    """Which values SQL sees as NULL (a NaN is not NULL there: ``x IS NULL`` and ``x <> 0`` differ)."""
    cols = list(store.read_sql(f"SELECT * FROM {table} LIMIT 0").columns)
    sql = f"SELECT {', '.join(f'{chr(34)}{c}{chr(34)} IS NULL' for c in cols)} FROM {table} ORDER BY bar, _row"
    return [tuple(r) for r in store.read_sql(sql).itertuples(index=False, name=None)]


def _edge_frame() -> pd.DataFrame:
    """blended_alpha-shaped rows: exact derivations, and every way a stored value can differ from them."""
    alpha = np.array([0.00123, -0.0004567, np.nan, 0.001, np.inf, -0.0, 0.0, 2e-3, np.nan, 1e-300])
    bps = alpha * 1e4
    bps[3] = np.nextafter(bps[3], 1.0)   # one ulp off: not the derivation
    bps[5] = 0.0                         # the derivation gives −0.0
    bps[7] = np.nan                      # recorded NULL where the derivation is a number
    bps[8] = 5.0                         # a number where the derivation is NULL
    return pd.DataFrame({"symbol": [f"S{i:03d}" for i in range(len(alpha))], "horizon": np.arange(10, dtype=np.int64),
                         "alpha": alpha, "alpha_bps": bps, "n_families": np.full(10, 2, dtype=np.int64),
                         "note": ["a", None, "b", None, "c", "d", "e", "f", "g", "h"]})


def test_a_derived_column_that_is_not_its_derivation_is_stored_and_read_back_exactly(tg_home, tmp_path,
                                                                                      monkeypatch):
    frame = _edge_frame()
    compact = LineageStore(tmp_path / "compact.duckdb")
    _write(compact, "blended_alpha", {BAR: frame})
    got = compact.read_partition("blended_alpha", BAR)
    _assert_same(got, frame.astype({"note": got["note"].dtype}))
    # the physical table holds an override exactly where the derivation is not the recorded value
    over = compact.read_sql("SELECT alpha_bps__x IS NOT NULL AS o FROM tg_compact.blended_alpha ORDER BY _row")["o"]
    assert over.tolist() == [False, False, False, True, False, True, False, True, True, False]
    _plain(monkeypatch)
    plain = LineageStore(tmp_path / "plain.duckdb")
    _write(plain, "blended_alpha", {BAR: frame})
    _assert_same(got, plain.read_partition("blended_alpha", BAR))
    assert _sql_nulls(compact, "blended_alpha") == _sql_nulls(plain, "blended_alpha")   # NULL, not NaN, in SQL


def test_the_view_recomputes_when_the_override_is_null(tg_home, tmp_path):
    """Would fail if the view did not derive: the physical table holds no alpha_bps at all for exact rows."""
    frame = _edge_frame().iloc[[0, 1, 6]].reset_index(drop=True)
    store = LineageStore(tmp_path / "x.duckdb")
    _write(store, "blended_alpha", {BAR: frame})
    assert store.read_sql("SELECT count(alpha_bps__x) AS n FROM tg_compact.blended_alpha")["n"][0] == 0
    assert store.read_partition("blended_alpha", BAR)["alpha_bps"].tolist() == (frame["alpha"] * 1e4).tolist()


def test_float32_split_and_physical_order_round_trip(tg_home, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    n = 12
    raw = rng.normal(size=n)
    raw[::2] = raw[::2].astype(np.float32)          # half float32-exact
    raw[3], raw[4], raw[5] = np.nan, -0.0, 1e300    # NULL, negative zero, out of FLOAT's range
    frame = pd.DataFrame({"symbol": [f"S{i % 4}" for i in range(n)], "horizon": np.repeat([5, 15, 30], 4),
                          "family": ["b", "a"] * 6, "raw": raw, "std_scale": np.repeat([1.5, 2.5, 3.5], 4)})
    monkeypatch.setattr(store_module, "layout_for", lambda t: Layout(float32=("raw",), order=("family", "symbol")))
    store = LineageStore(tmp_path / "f.duckdb")
    _write(store, "predictions", {BAR: frame, "2025-06-03T14:05Z": frame.iloc[::-1].reset_index(drop=True)})
    assert store.read_sql("SELECT count(raw__f) AS f, count(raw__d) AS d FROM tg_compact.predictions").iloc[0].tolist() \
        == [2 * 6, 2 * 5]   # per frame: 6 float32-exact (−0.0 too), 5 not, 1 NULL
    _assert_same(store.read_partition("predictions", BAR), frame)
    _assert_same(store.read_partition("predictions", "2025-06-03T14:05Z"), frame.iloc[::-1].reset_index(drop=True))


def test_new_columns_and_rewrites_of_a_compact_table(tg_home, tmp_path):
    store = LineageStore(tmp_path / "c.duckdb")
    frame = _edge_frame()
    _write(store, "blended_alpha", {BAR: frame})
    wider = frame.assign(extra=np.arange(10.0))
    _write(store, "blended_alpha", {BAR: wider})   # the bar replaced, a column added (stored plain)
    got = store.read_partition("blended_alpha", BAR)
    assert list(got.columns) == list(wider.columns)
    _assert_same(got.drop(columns="note"), wider.drop(columns="note"))
    assert store.read_sql("SELECT count(*) AS n FROM blended_alpha")["n"][0] == 10


def test_a_file_of_the_plain_layout_stays_plain_and_readable(tg_home, tmp_path, monkeypatch):
    """An existing user's lineage file (tables made before the compact layout) is read and written as it is."""
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as m:
        _plain(m)
        _write(LineageStore(path), "blended_alpha", {BAR: _edge_frame()})
    store_module.forget_file(path)
    store = LineageStore(path)
    _write(store, "blended_alpha", {"2025-06-03T14:05Z": _edge_frame()})
    tables = store.read_sql("SELECT schema_name, table_name FROM duckdb_tables() WHERE table_name = 'blended_alpha'")
    assert tables.values.tolist() == [["main", "blended_alpha"]]
    _assert_same(store.read_partition("blended_alpha", "2025-06-03T14:05Z"), store.read_partition("blended_alpha", BAR))


def test_migrate_converts_an_old_files_tables_and_they_read_the_same(tg_home, tmp_path, monkeypatch, capsys):
    path = tmp_path / "old.duckdb"
    frames = {BAR: _edge_frame(), "2025-06-03T14:05Z": _edge_frame().iloc[::-1].reset_index(drop=True)}
    with monkeypatch.context() as m:
        _plain(m)
        _write(LineageStore(path), "blended_alpha", frames)
        _write(LineageStore(path), "runs_note", {BAR: _edge_frame()})   # no layout: stays as it is
    store_module.forget_file(path)
    store = LineageStore(path)
    before = {b: store.read_partition("blended_alpha", b) for b in frames}
    described = store.read_sql("DESCRIBE blended_alpha").values.tolist()
    from dagster_project.commands import cli

    assert cli.main(["lineage-migrate", "--lineage", str(path)]) == 0
    assert "1 tables migrated (blended_alpha)" in capsys.readouterr().out
    assert store.read_sql("SELECT schema_name FROM duckdb_tables() WHERE table_name = 'blended_alpha'"
                          )["schema_name"].tolist() == ["tg_compact"]
    assert store.read_sql("DESCRIBE blended_alpha").values.tolist() == described
    for bar, frame in before.items():
        _assert_same(store.read_partition("blended_alpha", bar), frame)
    assert store.migrate() == []


# ----------------------------------------------------------------------------- on real replayed frames
@pytest.fixture
def replayed(trained, tmp_path, monkeypatch):
    """Five replayed bars (bulk lineage, compact layout) and a reference file of the same outputs written plain."""
    from dagster_project.commands.replay import ORDER, UPSTREAM
    from resources.lineage.io_manager import record_output
    from tests.chain.test_replay_lineage_bulk import KEYS, _replay

    keys = KEYS[:5]
    engine, outputs = _replay(tmp_path, monkeypatch, "compact", keys)
    reference = LineageStore(tmp_path / "plain.duckdb")
    with monkeypatch.context() as m:
        _plain(m)
        for bar, out in zip(keys, outputs, strict=True):
            for asset in ORDER:
                with reference.connect() as con:
                    con.execute("BEGIN TRANSACTION")
                    record_output(reference, con, engine.run_id, asset, bar, out[asset], UPSTREAM[asset])
                    con.execute("COMMIT")
    return engine, reference, keys


def test_every_replayed_table_reads_back_as_the_plain_layout(replayed):
    engine, reference, keys = replayed
    store = engine.store
    compact = set(store.read_sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'tg_compact'")["table_name"])
    assert compact == {"predictions", "blended_alpha", "arbitrated_scores_terms", "features", "bars"}
    assert sorted(store.tables()) == sorted(reference.tables())
    for table in sorted(set(store.tables()) - {"runs", "runs_process", "configs", "materializations", "market_bars"}):
        assert store.read_sql(f"DESCRIBE {table}").values.tolist() == \
            reference.read_sql(f"DESCRIBE {table}").values.tolist(), table
        for bar in keys:
            _assert_same(store.read_partition(table, bar), reference.read_partition(table, bar))
        if table in compact:
            assert _sql_nulls(store, table) == _sql_nulls(reference, table), table


def test_compact_lineage_moves_into_a_file_of_the_plain_layout(replayed):
    """A replay's staging file (compact) absorbed into a user's old file: its tables stay plain, same rows."""
    from resources.lineage.io_manager import APPEND_ONLY_TABLES, absorb_staged

    engine, reference, keys = replayed
    before = {t: [reference.read_partition(t, b) for b in keys] for t in ("predictions", "features", "blended_alpha")}
    with reference.connect() as con:
        absorb_staged(reference, con, engine.store.path)
    assert reference.read_sql("SELECT count(*) AS n FROM duckdb_tables() WHERE schema_name = 'tg_compact'")["n"][0] == 0
    for table, frames in before.items():
        assert table not in APPEND_ONLY_TABLES
        for bar, frame in zip(keys, frames, strict=True):
            _assert_same(reference.read_partition(table, bar), frame)


def test_the_stages_formulas_are_the_layouts_derivations(replayed):
    """Fails when a stage's formula and its SQL derivation drift apart (another summation order, a factor):
    every derived value of the real replay is recomputed, none stored."""
    store = replayed[0].store
    for table, column in [("blended_alpha", "alpha_bps"), ("arbitrated_scores_terms", "cost_bps"),
                          ("arbitrated_scores_terms", "vol_cost_bps"),
                          ("arbitrated_scores_terms", "net_bps"), ("features", "sigma_daily_bps"),
                          ("features", "adv_bar_dollars")]:
        n, stored = store.read_sql(f"SELECT count(*), count({column}__x) FROM tg_compact.{table}").iloc[0].tolist()
        assert n > 0 and stored == 0, (table, column, stored)
    # the standardization centre is recovered at write time: all but a few rows reproduce
    n, stored = store.read_sql("SELECT count(*), count(std__x) FROM tg_compact.predictions").iloc[0].tolist()
    assert n > 0 and stored <= n // 1000, stored


def test_explain_and_audit_of_a_replayed_bar(replayed):
    from dagster_project.commands.audit import audit_bar
    from dagster_project.commands.explain import explain

    engine, reference, keys = replayed
    bar = keys[-1]
    assert explain(bar, "S001", engine.store) == explain(bar, "S001", reference)
    report = audit_bar(bar)
    assert report.identical, report.render()
    assert {t.table for t in report.tables} >= {"features", "predictions", "blended_alpha", "arbitrated_scores_terms"}
