"""``make demo``: the one command a newcomer runs on the embedded market.

1. trains the models once (when the registry is empty);
2. replays ``replay.sessions`` out-of-sample sessions from ``replay.start`` through the pure stage functions
   with the demo's own replay paper account (a fresh demo book each time: the demo's own lineage file
   ``paths.demo_lineage_db``, replay account ``paths.demo_replay_broker_db`` and kill switches
   ``paths.demo_kill_switch_state`` are reset first; the registry, the live files and the replay account a
   user's ``tradegraph replay`` continues are never touched);
3. runs the period's last ``replay.dagster_bars`` bars through the Dagster graph itself (replay mode, the
   same account), so they show in the UI;
4. writes a report (PNG plots and a summary table) and prints where the report, the DuckDB file and the UI are.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import dagster as dg

from CONFIG.config_loader import ConfigError, get_cfg, load_config, resolve_path
from dagster_project.commands.audit import QUIET
from dagster_project.commands.replay import ReplayEngine, bars_between
from dagster_project.commands.report import format_value, summary, write_report
from resources.kill_switch.resource import state_path_for, switch_for
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.store import LineageStore, forget_file
from resources.market.calendar import get_calendar


def use_demo_lineage() -> None:
    """The demo records into its own lineage file (``paths.demo_lineage_db``) and trades its own replay paper
    account and kill switch (``paths.demo_replay_broker_db``, ``paths.demo_kill_switch_state``), so it never
    touches the live ones nor the replay account a user's ``tradegraph replay`` continues."""
    for key, demo in (("LINEAGE_DB", "paths.demo_lineage_db"), ("REPLAY_BROKER_DB", "paths.demo_replay_broker_db"),
                      ("KILL_SWITCH_STATE", "paths.demo_kill_switch_state")):
        os.environ[f"TRADEGRAPH__PATHS__{key}"] = str(resolve_path(demo))
    load_config()


def fresh_demo_book() -> None:
    """Delete the demo's lineage file, the replay paper account and its kill switch, then arm the switch
    again (``init``: a never-armed switch denies every order)."""
    for path in (resolve_path("paths.lineage_db"), resolve_path("paths.replay_broker_db"), state_path_for("replay")):
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)
    forget_file(resolve_path("paths.lineage_db"))
    switch_for("replay").init(dt.datetime.now(dt.UTC), "make demo: a fresh demo book")


def period() -> list[str]:
    """The demo's out-of-sample bars: ``replay.sessions`` sessions from ``replay.start``, which must lie inside
    the partitions and not before ``training.train_end`` (else the demo would replay what it trained on)."""
    start, end = get_cfg("replay.start"), get_cfg("market.partitions_end")
    if not get_cfg("market.partitions_start") <= start <= end:
        raise ConfigError(f"config key 'replay.start': {start} is outside market.partitions_start.."
                          f"market.partitions_end={get_cfg('market.partitions_start')}..{end}")
    if get_cfg("training.train_end") > start:
        raise ConfigError(f"config key 'training.train_end': {get_cfg('training.train_end')} is after "
                          f"replay.start={start} (the demo would replay sessions it trained on)")
    sessions = get_calendar().sessions(start, end)
    chosen = sessions[: get_cfg("replay.sessions")]
    return bars_between(chosen[0].isoformat(), chosen[-1].isoformat())


def run_dagster_bars(keys: list[str]) -> float:
    from dagster_project.definitions import defs

    job = defs.resolve_job_def("trading_job")
    t = time.perf_counter()
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    with instance:
        for key in keys:
            job.execute_in_process(partition_key=key, instance=instance, tags={MODE_TAG: "replay"},
                                   run_config=QUIET, raise_on_error=True)
    return time.perf_counter() - t


def main() -> None:
    t0 = time.perf_counter()
    from TRAINING.train import registry_is_empty, train_all

    if registry_is_empty():
        print("registry is empty: training every model family once …")
        print(train_all().table())
    use_demo_lineage()
    fresh_demo_book()
    bars = period()
    k = get_cfg("replay.dagster_bars")
    print(f"replaying {len(bars) - k} bars ({bars[0]} … {bars[-k - 1]}) through the pure stage functions …")
    result = ReplayEngine().run(bars[:-k] if k else bars, progress=True)
    print(f"  {result.seconds:.1f}s, {result.seconds / max(1, len(result.bars)) * 1e3:.0f} ms/bar, "
          f"{result.orders} orders, {result.fills} fills")
    if k:
        print(f"running the last {k} bars through the Dagster graph ({bars[-k]} … {bars[-1]}) …")
        print(f"  {run_dagster_bars(bars[-k:]):.1f}s")
    store = LineageStore()
    report = write_report(store, "replay", resolve_path("paths.reports") / "demo")
    stats = summary(store, "replay")
    width = max(len(s) for s in stats)
    print("\nsummary")
    if stats["sample_warning"]:
        print(f"  {stats['sample_warning']}")
    for key, value in stats.items():
        if key != "sample_warning":
            print(f"  {key:<{width}}  {format_value(value)}")
    print(f"\nreport:  {report}")
    print(f"lineage: {store.path}")
    print(f"explain: .venv/bin/tradegraph --lineage {store.path} explain --bar {bars[-1]} --symbol S001")
    print(f"audit:   .venv/bin/tradegraph --lineage {store.path} audit --bar {bars[-1]}")
    print(f"UI:      make ui  →  http://127.0.0.1:{get_cfg('orchestration.ui_port')}")
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
