"""Replay's bulk lineage (issue 12): flushes go to the replay's own staging file and ``close`` moves it into the
lineage file in one transaction. What it records must be exactly what the per-bar writers record; a replay
that stops leaves whole bars (or none), never part of one."""

import datetime as dt
import enum

import numpy as np
import pandas as pd
import pytest

from CONFIG.config_loader import reset_config
from dagster_project.commands.replay import ORDER, UPSTREAM, ReplayEngine
from resources.lineage.hashing import content_hash, content_hashes
from resources.lineage.io_manager import record_output
from resources.lineage.store import LineageStore
from tests.graph_helpers import session_keys

KEYS = session_keys("2025-06-03")[-4:] + session_keys("2025-06-04", 3)   # the close, the night, the open
SETTINGS = {"TRADEGRAPH__SIZING__NO_TRADE_BAND": "0.0", "TRADEGRAPH__ARBITRATION__RESERVE_BASE_BPS": "0.0",
            "TRADEGRAPH__REPLAY__FLUSH_BARS": "2"}   # several flushes to the staging file per replay


class _Side(enum.StrEnum):
    BUY = "buy"


def test_content_hashes_equal_content_hash_frame_by_frame():
    rng = np.random.default_rng(3)

    def frame(n: int, tz: str | None = "UTC") -> pd.DataFrame:
        return pd.DataFrame({
            "symbol": [f"S{i:03d}" for i in range(n)], "x": rng.normal(size=n), "i": rng.integers(0, 9, n),
            "b": rng.random(n) > 0.5, "s": pd.Series(([None, "a", np.nan, "é", _Side.BUY] * n)[:n], dtype=object),
            "t": pd.date_range("2025-01-01", periods=n, freq="5min", tz=tz)})

    frames = [frame(n) for n in (0, 1, 5, 100, 7)] + [
        frame(3, tz=None), frame(4).astype({"i": float}), pd.DataFrame(), frame(6)[["x"]], frame(2)[["t", "x"]],
        pd.DataFrame({"s": ["a", "b"]}), pd.DataFrame({"s": ["a", None]}), pd.DataFrame({"s": [_Side.BUY] * 2}),
        pd.DataFrame([[1.0, 2.0]], columns=["d", "d"]), pd.DataFrame([[3.0, 4.0]], columns=["d", "d"]),
        pd.DataFrame({1: [1.5]}), pd.DataFrame({"1": [1.5]}), pd.DataFrame({"c": pd.Categorical(["x", "y"])})]
    assert content_hashes(frames) == [content_hash(f) for f in frames]
    assert content_hashes([]) == []


def _home(tmp_path, monkeypatch, name: str, arm: bool = True) -> None:
    """The home ``name`` (its own lineage, paper account and switch) with this file's settings; switches armed."""
    from tests.conftest import arm_switches

    for key, value in SETTINGS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / name))
    reset_config()
    if arm:
        arm_switches()


def _replay(tmp_path, monkeypatch, name: str, bars: list[str], **kw) -> tuple[ReplayEngine, list[dict]]:
    """A replay of ``bars`` in the home ``name`` (its own lineage, paper account and switch), step by step."""

    _home(tmp_path, monkeypatch, name)
    engine = ReplayEngine(**kw)
    outputs = []
    try:
        for bar in bars:
            outputs.append(engine.step(bar))
    finally:
        engine.close()
    return engine, outputs


def _record_per_bar(store: LineageStore, run_id: str, outputs: list[dict], bars: list[str]) -> None:
    """The same outputs through the Dagster path's writer: one transaction per asset output and bar."""
    for bar, out in zip(bars, outputs, strict=True):
        for asset in ORDER:
            with store.connect() as con:
                con.execute("BEGIN TRANSACTION")
                record_output(store, con, run_id, asset, bar, out[asset], UPSTREAM[asset])
                con.execute("COMMIT")


def _everything(store: LineageStore, bars: list[str]) -> dict[str, pd.DataFrame]:
    """Every recorded table's rows of ``bars`` as the readers see them (``read_partition``, in order)."""
    out = {}
    for table in store.tables():
        if table in ("runs", "runs_process", "configs", "materializations", "market_bars"):
            continue
        out[table] = pd.concat([store.read_partition(table, b).assign(bar=b) for b in bars], ignore_index=True)
    out["market_bars"] = store.read_sql("SELECT * FROM market_bars ORDER BY ts, symbol")
    out["materializations"] = store.read_sql(
        "SELECT run_id, asset, tbl, bar, row_count, content_hash, upstream_hashes FROM materializations "
        "ORDER BY run_id, tbl, bar")
    return out


def test_bulk_lineage_reads_back_exactly_what_the_per_bar_writers_record(trained, tmp_path, monkeypatch):
    engine, outputs = _replay(tmp_path, monkeypatch, "bulk", KEYS)
    assert not engine.staging_path.exists()          # moved into the lineage file and removed
    reference = LineageStore(tmp_path / "per_bar.duckdb")
    _record_per_bar(reference, engine.run_id, outputs, KEYS)
    # a second replay over the same bars into the same file: replaced tables keep one record of each bar,
    # append-only ones (orders, fills, kill-switch events) keep both runs' rows, a fill is recorded once
    again, outputs2 = _replay(tmp_path, monkeypatch, "bulk", KEYS)
    _record_per_bar(reference, again.run_id, outputs2, KEYS)

    bulk, per_bar = _everything(engine.store, KEYS), _everything(reference, KEYS)
    assert sorted(bulk) == sorted(per_bar)
    for table in sorted(per_bar):
        pd.testing.assert_frame_equal(bulk[table], per_bar[table], check_exact=True, obj=table)
    assert len(bulk["features"]) == len(KEYS) * 50 and bulk["positions_fills"]["fill_id"].is_unique
    assert set(bulk["executions"]["run_id"]) == {engine.run_id, again.run_id}
    runs = engine.store.read_sql("SELECT run_id, bar, status FROM runs ORDER BY run_id, bar")
    assert len(runs) == 2 * len(KEYS) and set(runs["status"]) == {"success"}


def test_summary_mode_writes_only_the_summary_tables(trained, tmp_path, monkeypatch):
    from dagster_project.commands.replay import SUMMARY_TABLES

    engine, _ = _replay(tmp_path, monkeypatch, "summary", KEYS[:3], lineage="summary")
    tables = set(engine.store.tables()) - {"runs", "runs_process", "configs", "materializations", "market_bars"}
    assert tables and tables <= SUMMARY_TABLES
    assert set(engine.store.read_sql("SELECT DISTINCT tbl FROM materializations")["tbl"]) <= SUMMARY_TABLES


def test_a_replay_stopped_by_an_error_records_its_whole_bars_only(trained, tmp_path, monkeypatch):
    import dagster_project.commands.replay as replay

    real, failing = replay.compute_pnl, KEYS[4]
    calls = {"n": 0}

    def fail_at_fifth(*args, **kwargs):   # pnl is the bar's last stage: the bar is all but complete
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("stage failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(replay, "compute_pnl", fail_at_fifth)
    with pytest.raises(RuntimeError, match="stage failed"):
        _replay(tmp_path, monkeypatch, "stopped", KEYS)
    store = LineageStore()
    recorded = store.read_sql("SELECT DISTINCT bar FROM materializations ORDER BY bar")["bar"].tolist()
    assert recorded == KEYS[:4] and failing not in recorded
    assert store.read_sql("SELECT bar FROM runs ORDER BY bar")["bar"].tolist() == KEYS[:4]
    for table in store.tables():
        columns = store.read_sql(f"SELECT * FROM {table} LIMIT 0").columns
        if "bar" in columns and table != "runs":
            assert store.read_sql(f"SELECT count(*) AS n FROM {table} WHERE bar >= ?", [failing])["n"][0] == 0, table
    assert not list(store.path.parent.glob(".*.staging.duckdb*"))


def test_a_killed_replay_leaves_the_lineage_file_without_any_of_its_bars(trained, tmp_path, monkeypatch):
    """kill -9 mid-replay: ``close`` never runs, so the flushed bars stay in the staging file only."""

    _home(tmp_path, monkeypatch, "killed")
    store = LineageStore()
    with store.connect() as con:   # a lineage file with an earlier record in it
        store.upsert_run(con, run_id="earlier", bar="2025-06-02T14:00Z", status="success",
                         started_at=dt.datetime(2025, 6, 2, 14, tzinfo=dt.UTC))
    engine = ReplayEngine()
    for bar in KEYS[:5]:
        engine.step(bar)   # flushes twice to the staging file (replay.flush_bars = 2)
    assert engine.staging_path.exists()
    assert store.tables() == ["configs", "market_bars", "materializations", "runs", "runs_process"]
    assert store.read_sql("SELECT run_id FROM runs")["run_id"].tolist() == ["earlier"]
    engine._staging[1].close()   # what the process's death does to its connection (no close, no absorb)
    engine.broker.close()   # and its hold on the paper account file


def test_a_failed_final_write_leaves_the_lineage_file_as_it_was(trained, tmp_path, monkeypatch):
    from resources.lineage.store import LineageStore as Store

    real = Store._append_incoming

    def fail_late(self, con, table, *args, **kwargs):   # after the replaced tables were already written
        if table == "positions_orders" and ".staging." not in self.path.name:   # the final write only
            raise OSError("disk full")
        return real(self, con, table, *args, **kwargs)

    monkeypatch.setattr(Store, "_append_incoming", fail_late)
    with pytest.raises(OSError, match="disk full"):
        _replay(tmp_path, monkeypatch, "failed", KEYS[:3])
    store = LineageStore()
    assert store.read_sql("SELECT count(*) AS n FROM materializations")["n"][0] == 0
    assert store.read_sql("SELECT count(*) AS n FROM runs")["n"][0] == 0
    assert set(store.tables()) == {"configs", "market_bars", "materializations", "runs", "runs_process"}
    assert list(store.path.parent.glob(".*.staging.duckdb"))     # kept: the replay's record, to inspect
    monkeypatch.setattr(Store, "_append_incoming", real)   # the next replay in this process records normally
    engine, _ = _replay(tmp_path, monkeypatch, "failed", KEYS[:3])
    assert engine.store.read_sql("SELECT DISTINCT bar FROM features ORDER BY bar")["bar"].tolist() == KEYS[:3]


def test_explain_and_audit_work_on_bulk_replayed_bars(trained, tmp_path, monkeypatch):
    from dagster_project.commands.audit import audit_bar
    from dagster_project.commands.explain import explain

    engine, outputs = _replay(tmp_path, monkeypatch, "explained", KEYS)
    bar = next(b for b, o in zip(KEYS, outputs, strict=True) if o["sized_orders"]["has_order"].any())
    symbol = outputs[KEYS.index(bar)]["sized_orders"].query("has_order")["symbol"].iloc[0]
    chain = explain(bar, symbol, engine.store)
    assert chain["features"] and chain["predictions"] and chain["size"] and chain["execution"]
    assert chain["lifecycle"] or chain["fills"]                  # the order's life after its bar
    report = audit_bar(bar, engine.store)
    assert report.identical, report.render()


def test_the_next_replay_recovers_a_killed_replays_flushed_bars_and_trades_on_without_a_mismatch(
        trained, tmp_path, monkeypatch):
    """kill -9 after two flushes: the account and the switch were saved at the last flush, lineage has none of
    the replay's bars. The next replay moves the staging file in first, so lineage, account and switch agree."""

    _home(tmp_path, monkeypatch, "killed")
    killed = ReplayEngine()
    for bar in KEYS[:5]:
        killed.step(bar)   # bars 1–4 flushed (and the account saved with them), bar 5 pending
    staging = killed.staging_path
    killed._staging[1].close()
    killed.broker.close()
    assert staging.exists() and not LineageStore().path.exists()   # nothing of it in the lineage file

    engine = ReplayEngine()
    assert engine.recovered == [staging] and not staging.exists()
    store = LineageStore()
    assert store.read_sql("SELECT DISTINCT bar FROM materializations ORDER BY bar")["bar"].tolist() == KEYS[:4]
    result = engine.run(KEYS[4:])
    assert result.orders > 0
    account = store.read_sql("SELECT bar, mismatch, foreign_fills FROM positions_account ORDER BY bar")
    assert account["bar"].tolist() == KEYS and not account["mismatch"].any()
    assert (account["foreign_fills"] == 0).all()


class _Killed(BaseException):
    """The process dies here (kill -9: no handler, no cleanup runs)."""


def _die(engine: ReplayEngine) -> None:
    """What the process's death does: its connections go, nothing is written."""
    if engine._staging is not None:
        engine._staging[1].close()
    engine.broker.close()


def _killed_at_second_flush(tmp_path, monkeypatch, where: str) -> tuple[LineageStore, ReplayEngine]:
    """A replay killed in its second flush (bars 3–4; bars 1–2 were flushed and saved), ``where``: during the
    lineage write (``stage``) or after its commit, before the account's save (``save``); then the next replay."""

    _home(tmp_path, monkeypatch, f"killed-{where}")
    killed = ReplayEngine()
    real = {"stage": killed._stage, "save": killed._save_state}[where]
    calls = []

    def kill_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise _Killed(where)
        return real(*args, **kwargs)

    monkeypatch.setattr(killed, {"stage": "_stage", "save": "_save_state"}[where], kill_on_second)
    with pytest.raises(_Killed):
        for bar in KEYS[:4]:
            killed.step(bar)
    _die(killed)
    monkeypatch.undo()
    _home(tmp_path, monkeypatch, f"killed-{where}", arm=False)
    return LineageStore(), ReplayEngine()


@pytest.mark.parametrize("where", ["stage", "save"])
def test_a_replay_killed_inside_a_flush_never_leaves_fills_lineage_does_not_know(trained, tmp_path, monkeypatch,
                                                                                  where):
    """Killed while writing lineage (before: the account was already saved, one flush ahead of lineage, and the
    next replay halted on a mismatch) or between the staging commit and the account's save (the staged bars the
    account never held are dropped, the first one's ``runs`` row says why): lineage and account agree again."""
    store, engine = _killed_at_second_flush(tmp_path, monkeypatch, where)
    assert len(engine.recovered) == 1
    runs = store.read_sql("SELECT bar, status FROM runs ORDER BY bar")
    assert runs["bar"].tolist()[:2] == KEYS[:2] and (runs["status"].iloc[:2] == "success").all()
    if where == "save":   # bars 3–4 were staged, the account never saved them: 3 says so, 4 has no row
        assert runs["bar"].tolist() == KEYS[:3]
        assert runs["status"].iloc[2].startswith("failed: replay killed after recording this bar's lineage")
    else:
        assert runs["bar"].tolist() == KEYS[:2]
    assert store.read_sql("SELECT DISTINCT bar FROM materializations ORDER BY bar")["bar"].tolist() == KEYS[:2]
    assert store.read_sql("SELECT count(*) AS n FROM features WHERE bar >= ?", [KEYS[2]])["n"][0] == 0
    result = engine.run(KEYS[2:])
    assert result.orders > 0 and result.switch_state == "ACTIVE", result.switch_trips
    account = store.read_sql("SELECT bar, mismatch, foreign_fills FROM positions_account ORDER BY bar")
    assert account["bar"].tolist() == KEYS and not account["mismatch"].any()
    assert (account["foreign_fills"] == 0).all()


def test_a_ctrl_c_between_the_staging_commit_and_the_account_save_saves_the_account(trained, tmp_path,
                                                                                     monkeypatch):
    """Ctrl-C after the flush's staging commit, before the account's save: ``abort`` saves the account with the
    staged bars, so the lineage file, the account and the switch stand at the same bar; --resume goes on."""

    _home(tmp_path, monkeypatch, "ctrl-c")
    engine = ReplayEngine()
    real, calls = engine._save_state, []

    def interrupted_once():
        calls.append(1)
        if len(calls) == 2:   # the second flush (bars 3–4), after its staging commit
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(engine, "_save_state", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        engine.run(KEYS)
    store = LineageStore()
    runs = store.read_sql("SELECT bar, status FROM runs ORDER BY bar")
    assert runs["bar"].tolist() == KEYS[:5] and (runs["status"].iloc[:4] == "success").all()
    assert runs["status"].iloc[4].startswith("failed: replay stopped at this bar (interrupted)")
    assert not list(store.path.parent.glob(".*.staging.duckdb*"))
    result = ReplayEngine().run(KEYS, resume=True)
    assert result.bars == KEYS[4:]
    account = store.read_sql("SELECT bar, mismatch, foreign_fills FROM positions_account ORDER BY bar")
    assert account["bar"].tolist() == KEYS and not account["mismatch"].any()
    assert (account["foreign_fills"] == 0).all()


def test_the_configuration_row_is_staged_once_per_replay(trained, tmp_path, monkeypatch):
    """Every flush stages its bars; the configuration (the same for the whole replay) only once."""
    staged = []
    real = LineageStore.record_config

    def counted(self, con, config_hash, config):
        staged.append((self.path, config_hash))
        return real(self, con, config_hash, config)

    monkeypatch.setattr(LineageStore, "record_config", counted)
    engine, _ = _replay(tmp_path, monkeypatch, "config", KEYS[:5])   # flush_bars 2: three flushes
    assert len(staged) == 1 and staged[0][0].name.endswith(".staging.duckdb")
    runs = engine.store.read_sql("SELECT DISTINCT config_hash FROM runs")["config_hash"].tolist()
    assert runs == [staged[0][1]]
    assert staged[0][1] in set(engine.store.read_sql("SELECT config_hash FROM configs")["config_hash"])


@pytest.mark.parametrize("named", [True, False])
def test_a_staging_file_moved_in_and_left_behind_by_a_kill_is_never_moved_in_twice(trained, tmp_path, monkeypatch,
                                                                                   named):
    """kill -9 after the staging file's move into lineage committed, before the file was removed: the next replay
    finds it again. Moving it in again doubled the append-only rows (orders, kill-switch checks); now the
    lineage file knows which staging files it absorbed (``named``; a file from before staging files named
    themselves: by its runs rows), and the leftover is removed with nothing inserted."""
    import shutil

    import duckdb


    _home(tmp_path, monkeypatch, "twice")
    killed = ReplayEngine()
    for bar in KEYS[:5]:
        killed.step(bar)   # bars 1–4 flushed to the staging file
    staging = killed.staging_path
    _die(killed)
    if not named:   # as the code before this fix wrote it
        with duckdb.connect(str(staging)) as con:
            con.execute("DROP TABLE staging_identity")
    kept = tmp_path / "kept.duckdb"
    shutil.copy(staging, kept)   # the file as the absorbing process left it, had it died before removing it
    store = LineageStore()
    counts = "SELECT (SELECT count(*) FROM positions_orders) AS orders, " \
             "(SELECT count(*) FROM executions_killswitch) AS checks, (SELECT count(*) FROM executions) AS execs"
    ReplayEngine().close()   # recovers (moves the staging file in, removes it) and trades nothing
    before = store.read_sql(counts)
    assert before["execs"][0] > 0 and not staging.exists()
    shutil.copy(kept, staging)
    engine = ReplayEngine()
    assert engine.recovered == [staging] and not staging.exists()
    engine.close()
    pd.testing.assert_frame_equal(store.read_sql(counts), before)
    if named:
        assert store.read_sql("SELECT count(*) AS n FROM tg_meta.staging_absorbed")["n"][0] == 1


def test_another_accounts_staging_file_is_left_alone(trained, tmp_path, monkeypatch):
    """A staging file beside this lineage file that holds another replay account's bars (another home writing
    to the same lineage file, a file copied by hand) is not moved in by this account's replay: its orders would
    be this account's record, and its fills missing from this account (a reconciliation halt)."""
    import shutil

    _home(tmp_path, monkeypatch, "other")
    killed = ReplayEngine()
    for bar in KEYS[:3]:
        killed.step(bar)   # bars 1–2 flushed to its staging file
    _die(killed)
    _home(tmp_path, monkeypatch, "mine")
    store = LineageStore()
    store.path.parent.mkdir(parents=True, exist_ok=True)
    foreign = store.path.parent / f".{store.path.stem}.{killed.run_id}.staging.duckdb"
    shutil.copy(killed.staging_path, foreign)
    engine = ReplayEngine()
    assert engine.recovered == [] and foreign.exists()
    result = engine.run(KEYS)
    assert result.switch_state == "ACTIVE", result.switch_trips
    assert store.read_sql("SELECT DISTINCT run_id FROM runs")["run_id"].tolist() == [engine.run_id]
