"""``make ui``: the Dagster UI on 127.0.0.1 with the embedded market on an accelerated clock.

Writes the instance config, starts the market clock at the open of the latest session (so the sensor has
a bar to trade every ``5 min / clock.speed``), trains the models once if the registry is empty, then
execs ``dagster dev``. The default SIGINT handler is restored first: a background ``dagster dev`` otherwise
ignores SIGINT and SIGTERM (``docs/dagster_notes.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
from pathlib import Path

import pandas as pd

from CONFIG.config_loader import PROJECT_ROOT, get_cfg, load_config
from dagster_project.instance import dagster_home, write_instance_yaml
from resources.market.calendar import get_calendar
from resources.market.clock import start_accelerated_clock


def clock_start(now: dt.datetime | None = None) -> pd.Timestamp:
    """Just before the first bar close of the latest session on or before today (within the calendar span)."""
    cal = get_calendar()
    today = (now or dt.datetime.now(dt.UTC)).date()
    sessions = cal.sessions(None, min(today, pd.Timestamp(cal.end).date()))
    first_bar = cal.session_bars(sessions[-1])[0]
    return first_bar - pd.Timedelta(seconds=2 * get_cfg("clock.speed"))


def arm_live_switch() -> None:
    """Arm the live kill switch on a first start (a never-armed switch denies every order); an armed one is
    left as it is, and a missing state file with a witness stays HALTED until a person resets it."""
    from resources.kill_switch.logic import KillSwitchError
    from resources.kill_switch.resource import switch_for
    from resources.lineage.records import record_switch_events
    from resources.lineage.store import LineageStore

    try:
        result = switch_for("live").init(dt.datetime.now(dt.UTC), "make ui: first start")
    except KillSwitchError as exc:
        print(f"kill switch: {exc}")
        return
    if any(e.transition for e in result.events):
        record_switch_events(LineageStore(), "make-ui", "make ui", "live", result)
    print(f"kill switch (live): {result.trading_state}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=get_cfg("orchestration.ui_port"))
    parser.add_argument("--wall-clock", action="store_true", help="trade on real time instead")
    args = parser.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))
    write_instance_yaml(Path(os.environ["DAGSTER_HOME"]))
    if not args.wall_clock:
        os.environ["TRADEGRAPH__CLOCK__MODE"] = "accelerated"
        os.environ["TRADEGRAPH__ORCHESTRATION__SENSOR_AUTOSTART"] = "true"
        load_config()
        state = start_accelerated_clock(clock_start())
        print(f"market clock: {state['market_start']} at ×{state['speed']:.0f}")
    from TRAINING.train import registry_is_empty, train_all

    if registry_is_empty():
        print("registry is empty: training the models once (python -m TRAINING.train)")
        train_all()
    arm_live_switch()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    dagster = str(Path(sys.executable).parent / "dagster")
    print(f"Dagster UI: http://127.0.0.1:{args.port}")
    os.chdir(PROJECT_ROOT)
    os.execv(dagster, [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    main()
