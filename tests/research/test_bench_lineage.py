"""The lineage-bytes benchmark's arithmetic (issue 12's ``replay_bytes_per_symbol_bar``), worked by hand."""

import duckdb
import pytest

from dagster_project.commands import bench_lineage
from resources.market.calendar import get_calendar


def test_lineage_bytes_per_symbol_bar_marginal_and_tables():
    days = get_calendar().sessions("2025-06-02", "2025-06-06")[:2]   # 78 + 78 bars
    sizes = {("full", 78): 1_000, ("full", 156): 5_000, ("summary", 78): 100, ("summary", 156): 160}

    def replay_into(name: str, bars: list[str], mode: str) -> dict:
        assert name == f"bytes_{mode}_{1 if len(bars) == 78 else 2}"
        return {"file_bytes": sizes[(mode, len(bars))], "table_bytes": {"predictions": 3_120, "runs": 156}}

    out = bench_lineage.lineage_bytes(replay_into, days, symbols=10)
    full = out["full"]
    assert full["bars"] == 156 and full["file_bytes"] == 5_000
    assert full["bytes_per_symbol_bar"] == pytest.approx(5_000 / 1_560)          # 3.205 B
    assert full["one_session_bytes_per_symbol_bar"] == pytest.approx(1_000 / 780)
    assert full["marginal_bytes_per_symbol_bar"] == pytest.approx(4_000 / 780)   # the second session alone
    assert full["table_bytes_per_symbol_bar"] == {"predictions": 2.0, "runs": 0.1}
    assert out["summary"]["marginal_bytes_per_symbol_bar"] == pytest.approx(60 / 780)


def test_table_bytes_cover_the_blocks_their_segments_use(tmp_path):
    path = tmp_path / "t.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE big AS SELECT i::DOUBLE * 1.000001 AS x FROM range(300000) t(i)")
    con.execute("CREATE TABLE small AS SELECT 1 AS y")
    con.execute("CREATE TABLE empty (z INTEGER)")
    con.close()
    con = duckdb.connect(str(path), read_only=True)
    used, block = con.execute("SELECT used_blocks, block_size FROM pragma_database_size()").fetchone()
    con.close()
    sizes = bench_lineage.table_bytes(path)
    assert list(sizes)[0] == "big" and "empty" not in sizes       # one constant row is stored in no block
    assert 300_000 * 1 < sizes["big"] <= used * block              # compressed, and within the used blocks
    assert sum(sizes.values()) <= used * block
