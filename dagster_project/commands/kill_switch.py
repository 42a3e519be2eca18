"""``tradegraph kill-switch``: status, trip and reset of the persisted kill switch.

Operator actions carry the wall-clock time (UTC): they are real events, not bar data. No Dagster import,
so it answers in well under a second even while the engine runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence

import click

from resources.kill_switch.logic import CheckResult, KillSwitch, TradingState, state_to_dict
from TRAINING.common.utils.cli import run_command
from TRAINING.common.utils.file_utils import canonical_json


def _print(switch: KillSwitch, result: CheckResult) -> None:
    state = result.state
    click.echo(f"kill switch: {state.state}  ({switch.path})")
    for trip in state.trips.values():
        click.echo(f"  trip {trip.reason} → {trip.state} at {trip.ts.isoformat()}: {trip.detail}")
    for event in result.events:
        if event.verdict == "TRIP" or event.transition:
            click.echo(f"  event {event.check}: {event.transition or event.verdict} {event.reason}")
    sys.stdout.write(canonical_json(state_to_dict(state)))


@click.group("kill-switch", short_help="Status, trip or reset of the kill switch.", help="Read, trip or reset the kill switch (its state file is paths.kill_switch_state).")
@click.option("--state-file", type=click.Path(dir_okay=False), default=None,
              help="Use this state file instead of paths.kill_switch_state.")
@click.pass_context
def kill_switch(ctx: click.Context, state_file: str | None) -> None:
    ctx.obj = KillSwitch(state_file)


@kill_switch.command(help="Print the state, its trips and the state file (read only).")
@click.pass_obj
def status(switch: KillSwitch) -> None:
    _print(switch, switch.status(dt.datetime.now(dt.UTC)))


@kill_switch.command(help="Trip the switch by hand: HALTED (default) or REDUCING until a reset.")
@click.option("--reason", required=True, help="Why (recorded with the trip).")
@click.option("--state", "target", default=TradingState.HALTED.value, show_default=True,
              type=click.Choice([TradingState.REDUCING.value, TradingState.HALTED.value]),
              help="State to trip to.")
@click.pass_obj
def trip(switch: KillSwitch, reason: str, target: str) -> None:
    _print(switch, switch.trip(reason, dt.datetime.now(dt.UTC), TradingState(target)))


@kill_switch.command(help="Clear every trip (a person decided), optionally re-basing the high-water mark.")
@click.option("--reason", required=True, help="Why the switch may trade again (recorded).")
@click.option("--equity", type=float, default=None, help="Re-base the high-water mark to this equity.")
@click.pass_obj
def reset(switch: KillSwitch, reason: str, equity: float | None) -> None:
    _print(switch, switch.reset(reason, dt.datetime.now(dt.UTC), equity))


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(kill_switch, argv, "tradegraph kill-switch", (ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
