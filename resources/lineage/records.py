"""Reads and appends of lineage records that several layers share (assets, schedules, commands).

Why here, below the assets: an audit run installs the configuration recorded with its bar before computing
anything, so the asset layer needs :func:`recorded_run`; the schedules and the CLI record kill-switch
operations that happen between bars. Neither may import the Dagster wiring (that closed an import circle).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd

from CONFIG.config_loader import effective_config
from resources.kill_switch.logic import CheckResult
from resources.lineage.store import LineageStore

LOG_TABLE = "kill_switch_log"
_LOG_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    run_id VARCHAR, job VARCHAR, account VARCHAR, ts TIMESTAMPTZ, "check" VARCHAR, value DOUBLE,
    "limit" DOUBLE, verdict VARCHAR, reason VARCHAR, transition VARCHAR, subject VARCHAR)"""


def recorded_run(store: LineageStore, bar: str) -> tuple[dict, str, str]:
    """The configuration, its hash and the model versions of the run that recorded ``bar``'s decisions: the
    last non-audit run with a recorded ``sized_orders`` of the bar (a refused rerun records none, so its
    configuration never becomes the audit's); a bar with none falls back to its last non-audit run."""
    runs = store.read_sql(
        "SELECT config_hash, model_versions FROM runs r WHERE bar = ? AND mode <> 'audit' ORDER BY "
        "EXISTS (SELECT 1 FROM materializations m WHERE m.run_id = r.run_id AND m.bar = r.bar "
        "AND m.asset = 'sized_orders') DESC, started_at DESC LIMIT 1", [bar])
    if runs.empty:
        raise LookupError(f"bar {bar} has no recorded run in {store.path}: nothing to audit")
    h = runs["config_hash"].iloc[0]
    cfg = store.read_sql("SELECT config_json FROM configs WHERE config_hash = ?", [h])
    if cfg.empty:
        raise LookupError(f"configuration {h} recorded for bar {bar} is missing from the configs table")
    return json.loads(cfg["config_json"].iloc[0]), h, str(runs["model_versions"].iloc[0])


def located(recorded: dict, lineage_db: str | Path) -> dict:
    """A recorded configuration with this process's ``paths`` and ``lineage_db`` as the lineage file: what an
    audit runs under.

    Why: ``paths`` say where files are on this machine, not how a bar was decided (no stage reads a path for a
    number). Run with the recorded ones, an audit of a copied or moved lineage file (``--lineage copy.duckdb``,
    another ``TRADEGRAPH_HOME``, a file from another machine) read its record from one file and wrote its
    ``audit__`` tables into another — the original — and compared against nothing."""
    here = copy.deepcopy(dict(recorded))
    here["paths"] = {**recorded.get("paths", {}), **effective_config()["paths"],
                     "lineage_db": str(Path(lineage_db).resolve())}
    return here


def record_switch_events(store: LineageStore, run_id: str, job: str, account: str, result: CheckResult) -> int:
    """Append a kill-switch operation's events to ``kill_switch_log``; returns how many."""
    events = result.events_frame()
    if events.empty:
        return 0
    rows = pd.DataFrame({"run_id": run_id, "job": job, "account": account,
                         "ts": pd.to_datetime(events["ts"], utc=True), "check": events["check"].astype(str),
                         "value": pd.to_numeric(events["value"], errors="coerce").astype(float),
                         "limit": pd.to_numeric(events["limit"], errors="coerce").astype(float),
                         "verdict": events["verdict"].astype(str), "reason": events["reason"].astype(str),
                         "transition": events["transition"].fillna("").astype(str),
                         "subject": events["subject"].fillna("").astype(str)})
    with store.connect() as con:
        con.execute(_LOG_SCHEMA)
        con.register("_ks_events", rows)
        try:
            con.execute(f"INSERT INTO {LOG_TABLE} BY NAME SELECT * FROM _ks_events")
        finally:
            con.unregister("_ks_events")
    return len(rows)
