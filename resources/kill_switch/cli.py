"""Kill switch CLI: ``status``, ``trip --reason``, ``reset --reason``; prints the persisted state.

    python -m resources.kill_switch.cli status
    python -m resources.kill_switch.cli trip --reason "bad fills on XYZ" [--state REDUCING]
    python -m resources.kill_switch.cli reset --reason "checked the book" [--equity 1000000]

Operator actions carry the wall-clock time (UTC): they are real events, not bar data. No Dagster import,
so it answers in well under a second even while the engine runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from CONFIG.config_loader import load_config
from resources.kill_switch.logic import CheckResult, KillSwitch, TradingState, state_to_dict
from TRAINING.common.utils.file_utils import canonical_json


def _print(switch: KillSwitch, result: CheckResult) -> None:
    state = result.state
    print(f"kill switch: {state.state}  ({switch.path})")
    for trip in state.trips.values():
        print(f"  trip {trip.reason} → {trip.state} at {trip.ts.isoformat()}: {trip.detail}")
    for event in result.events:
        if event.verdict == "TRIP" or event.transition:
            print(f"  event {event.check}: {event.transition or event.verdict} {event.reason}")
    sys.stdout.write(canonical_json(state_to_dict(state)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kill_switch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="user config file (else $TRADEGRAPH_CONFIG)")
    parser.add_argument("--state-file", help="state file (else paths.kill_switch_state)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="print the state")
    p_trip = sub.add_parser("trip", help="trip manually")
    p_trip.add_argument("--reason", required=True)
    p_trip.add_argument("--state", default=TradingState.HALTED.value,
                        choices=[TradingState.REDUCING.value, TradingState.HALTED.value])
    p_reset = sub.add_parser("reset", help="clear every trip")
    p_reset.add_argument("--reason", required=True)
    p_reset.add_argument("--equity", type=float, help="re-base the high-water mark to this equity")
    args = parser.parse_args(argv)

    if args.config:
        load_config(args.config)
    switch = KillSwitch(args.state_file)
    now = dt.datetime.now(dt.UTC)
    if args.command == "trip":
        result = switch.trip(args.reason, now, TradingState(args.state))
    elif args.command == "reset":
        result = switch.reset(args.reason, now, args.equity)
    else:
        result = switch.status(now)
    _print(switch, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
