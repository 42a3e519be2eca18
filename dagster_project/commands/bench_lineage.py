"""Bytes of lineage a replay writes (issue 12's ``replay_bytes_per_symbol_bar``), and where they go per table.

Measured on replays over ``days`` and over its first session alone, each into a fresh lineage file: the file's
size after the replay / (bars × symbols), the marginal bytes per symbol-bar of the sessions after the first (what
a long replay converges to) and each table's bytes. Why several sessions: DuckDB allocates 256-kB blocks per
table, so the ~35 tables of one session at 100 symbols cost ≥ 9 MB (≈ 1.2 kB per symbol-bar) of mostly empty
blocks; at 5 sessions the big tables fill whole row groups and the fixed part is ~15 %. The harness that runs
the replays is the caller's (``replay_into``), so this module does not depend on how a benchmark builds homes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes each table of a DuckDB file occupies: its segments' extents within the file's blocks (from
    ``pragma_storage_info``: a segment runs from its offset to the next segment's in the same block, or to the
    block's end), largest first. Free blocks and the header are in no table."""
    import duckdb
    import pandas as pd

    con = duckdb.connect(str(path), read_only=True)
    try:
        block = int(con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])
        # a compact table (schema tg_compact, read through a view of its name) counts under its name
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY 2, 1").fetchall()
        segments = pd.concat([con.execute(
            f"SELECT '{t}' AS tbl, block_id, block_offset, len(additional_block_ids) AS extra "
            f"FROM pragma_storage_info('{s}.{t}') WHERE persistent AND block_id >= 0").df() for s, t in tables]
            + [pd.DataFrame({"tbl": pd.Series(dtype=object), "block_id": pd.Series(dtype="int64"),
                             "block_offset": pd.Series(dtype="int64"), "extra": pd.Series(dtype="int64")})],
            ignore_index=True)
    finally:
        con.close()
    segments = segments.sort_values(["block_id", "block_offset"], kind="mergesort")
    end = segments.groupby("block_id")["block_offset"].shift(-1).fillna(block)
    segments["bytes"] = (end - segments["block_offset"] + segments["extra"] * block).astype("int64")
    sizes = segments.groupby("tbl")["bytes"].sum().sort_values(ascending=False, kind="mergesort")
    return {str(t): int(b) for t, b in sizes.items()}


def file_figures(path: Path) -> dict:
    """What :func:`lineage_bytes` needs of one replay's lineage file (call it before the file is removed)."""
    return {"file_bytes": path.stat().st_size, "table_bytes": table_bytes(path)}


def lineage_bytes(replay_into: Callable[[str, list[str], str], dict], days: list, symbols: int) -> dict:
    """Full and summary lineage bytes per symbol-bar over ``days`` (≥ 2 sessions for the marginal).

    ``replay_into(name, bars, mode)`` replays ``bars`` with ``--lineage-mode`` ``mode`` into a fresh home
    called ``name`` and returns :func:`file_figures` of its lineage file.
    """
    from dagster_project.commands.replay import bars_between

    out: dict = {"sessions": len(days)}
    for mode in ("full", "summary"):
        got = {}
        for n in sorted({1, len(days)}):
            bars = bars_between(days[0].isoformat(), days[n - 1].isoformat())
            got[n] = (len(bars), replay_into(f"bytes_{mode}_{n}", bars, mode))
        (b1, one), (bn, whole) = got[1], got[len(days)]
        out[mode] = {"bars": bn, "file_bytes": whole["file_bytes"],
                     "bytes_per_symbol_bar": whole["file_bytes"] / (bn * symbols),
                     "one_session_bytes_per_symbol_bar": one["file_bytes"] / (b1 * symbols),
                     "marginal_bytes_per_symbol_bar": ((whole["file_bytes"] - one["file_bytes"]) / ((bn - b1) * symbols)
                                                       if bn > b1 else None),
                     "table_bytes_per_symbol_bar": {t: round(b / (bn * symbols), 1)
                                                    for t, b in whole["table_bytes"].items()}}
    return out
