"""``make demo``: the one command a newcomer runs on the embedded market.

Materializes the graph for every bar of one session of the simulated market through Dagster itself
(in-process), then prints where the lineage DuckDB file is and a short summary per asset.
"""

from __future__ import annotations

import argparse
import time

import dagster as dg

from CONFIG.config_loader import get_cfg, resolve_path
from dagster_project.definitions import defs, trading_job
from resources.lineage.store import LineageStore
from resources.market.calendar import bar_key, get_calendar


def run_session(session: str, instance: dg.DagsterInstance) -> list[str]:
    job = defs.resolve_job_def(trading_job.name)
    keys = [bar_key(t) for t in get_calendar().session_bars(session)]
    for key in keys:
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=True)
        assert result.success
    return keys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--session", default=get_cfg("replay.start"), help="session date (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        keys = run_session(args.session, instance)
    store = LineageStore()
    counts = store.read_sql("SELECT asset, count(DISTINCT bar) AS bars, sum(row_count) AS rows "
                            "FROM materializations GROUP BY asset ORDER BY asset")
    print(f"\nmaterialized {len(keys)} bars of {args.session} ({keys[0]} … {keys[-1]}) "
          f"in {time.perf_counter() - t0:.1f}s")
    print(counts.to_string(index=False))
    print(f"\nlineage DuckDB: {resolve_path('paths.lineage_db')}")
    print("UI: make ui  →  http://127.0.0.1:3000")


if __name__ == "__main__":
    main()
